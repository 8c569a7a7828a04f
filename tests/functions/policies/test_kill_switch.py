"""Agent sessions and the kill switch (API.md §4.3), and approvals (§4.4)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from functions.policies.main import app
from shared.models import AgentSession, AuditEvent
from shared.models.base import table_of, utcnow
from shared.permissions import Role
from tests.factories import (
    Actor,
    make_actor,
    make_agent_session,
    make_api_key,
    make_approval,
    make_server,
)

ClientFor = Callable[[FastAPI], TestClient]


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for(app)


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def operations(db: Session, org_id: str) -> list[tuple[str | None, str]]:
    query = (
        select(AuditEvent).where(col(AuditEvent.chain_id) == org_id).order_by(col(AuditEvent.seq))
    )
    return [(event.operation, event.type) for event in db.scalars(query)]


def test_suspend_and_resume_are_audited(client: TestClient, owner: Actor, db: Session) -> None:
    row = make_agent_session(db, make_server(db, owner.org, owner.user))
    path = f"/api/v1/sessions/{row.id}"
    suspended = client.post(
        f"{path}/suspend", json={"reason": "exfiltration"}, headers=owner.headers
    )
    assert suspended.status_code == 200, suspended.text
    data = suspended.json()["data"]
    assert (data["status"], data["suspendedReason"], data["suspendedBy"]) == (
        "suspended",
        "exfiltration",
        owner.user.id,
    )
    again = client.post(f"{path}/suspend", json={"reason": "x"}, headers=owner.headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "session_not_active")
    resumed = client.post(f"{path}/resume", headers=owner.headers)
    assert resumed.json()["data"]["status"] == "active"
    assert resumed.json()["data"]["suspendedReason"] is None
    assert client.post(f"{path}/resume", headers=owner.headers).status_code == 409
    assert operations(db, owner.org.id) == [
        ("session.suspended", "session_update"),
        ("session.resumed", "session_update"),
    ]


def test_suspend_needs_a_reason(client: TestClient, owner: Actor, db: Session) -> None:
    row = make_agent_session(db, make_server(db, owner.org, owner.user))
    response = client.post(f"/api/v1/sessions/{row.id}/suspend", json={}, headers=owner.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "reason"


def test_idle_sessions_read_as_completed(client: TestClient, owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    idle = make_agent_session(db, server, last_activity_at=utcnow() - timedelta(minutes=31))
    busy = make_agent_session(db, server)
    stopped = make_agent_session(
        db, server, status="suspended", last_activity_at=utcnow() - timedelta(days=3)
    )

    def ids(status: str) -> set[str]:
        response = client.get(f"/api/v1/sessions?status={status}", headers=owner.headers)
        return {item["id"] for item in response.json()["data"]}

    assert ids("active") == {busy.id}
    assert ids("completed") == {idle.id}
    assert ids("suspended") == {stopped.id}  # a suspended session never completes itself
    assert (
        client.get(f"/api/v1/sessions/{idle.id}", headers=owner.headers).json()["data"]["status"]
        == "completed"
    )
    refused = client.post(
        f"/api/v1/sessions/{idle.id}/suspend", json={"reason": "x"}, headers=owner.headers
    )
    assert refused.status_code == 409


def test_filter_by_server_and_bad_filters(client: TestClient, owner: Actor, db: Session) -> None:
    one, two = make_server(db, owner.org, owner.user), make_server(db, owner.org, owner.user)
    row = make_agent_session(db, one)
    make_agent_session(db, two)
    listed = client.get(f"/api/v1/sessions?serverId={one.id}", headers=owner.headers).json()
    assert [item["id"] for item in listed["data"]] == [row.id]
    assert client.get("/api/v1/sessions?status=paused", headers=owner.headers).status_code == 422
    assert client.get("/api/v1/sessions?serverId=nope", headers=owner.headers).status_code == 422


def test_one_open_session_per_principal_and_server(owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    first = make_agent_session(db, server, principal_id=owner.user.id, status="suspended")
    values = {
        "id": "ags_" + "x" * 21,
        "organization_id": owner.org.id,
        "server_id": server.id,
        "principal_type": "user",
        "principal_id": owner.user.id,
        "status": "active",
    }
    with pytest.raises(IntegrityError), db.begin_nested():
        db.execute(insert(table_of(AgentSession)).values(values))
    first.status = "completed"
    db.add(first)
    db.flush()
    db.execute(insert(table_of(AgentSession)).values(values))  # completed ones don't count


def test_developers_use_the_kill_switch_only_on_their_servers(
    client: TestClient, owner: Actor, db: Session
) -> None:
    developer = make_actor(db, Role.DEVELOPER, org=owner.org)
    theirs = make_agent_session(db, make_server(db, owner.org, owner.user))
    mine = make_agent_session(db, make_server(db, owner.org, developer.user))
    assert (
        client.post(
            f"/api/v1/sessions/{theirs.id}/suspend", json={"reason": "x"}, headers=developer.headers
        ).status_code
        == 403
    )
    assert (
        client.post(
            f"/api/v1/sessions/{mine.id}/suspend", json={"reason": "x"}, headers=developer.headers
        ).status_code
        == 200
    )
    ciso = make_actor(db, Role.CISO, org=owner.org)
    assert (
        client.post(f"/api/v1/sessions/{mine.id}/resume", headers=ciso.headers).status_code == 403
    )


def test_approvals_are_decided_once_by_someone_else(
    client: TestClient, owner: Actor, db: Session
) -> None:
    requester = make_actor(db, Role.DEVELOPER, org=owner.org)
    server = make_server(db, owner.org, owner.user)
    row = make_approval(db, server, requester.user)
    own = client.post(f"/api/v1/approvals/{row.id}/approve", headers=requester.headers)
    assert own.status_code == 403  # developers cannot approve at all
    ciso = make_actor(db, Role.CISO, org=owner.org)
    approved = client.post(
        f"/api/v1/approvals/{row.id}/approve", json={"reason": "ok"}, headers=ciso.headers
    )
    assert approved.status_code == 200, approved.text
    data = approved.json()["data"]
    assert (data["status"], data["decidedBy"], data["decisionReason"]) == (
        "approved",
        ciso.user.id,
        "ok",
    )
    twice = client.post(f"/api/v1/approvals/{row.id}/reject", headers=owner.headers)
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "approval_not_pending")
    assert operations(db, owner.org.id) == [("approval.approved", "admin")]


def test_an_approver_cannot_approve_their_own_request(
    client: TestClient, owner: Actor, db: Session
) -> None:
    server = make_server(db, owner.org, owner.user)
    mine = make_approval(db, server, owner.user)
    response = client.post(f"/api/v1/approvals/{mine.id}/approve", headers=owner.headers)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "own_request")
    # Nor through a key they created: the key's requests are theirs too.
    key, _ = make_api_key(db, owner.org, owner.user)
    by_key = make_approval(
        db,
        server,
        None,
        principal_type="api_key",
        principal_id=key.id,
        requester_user_id=owner.user.id,
    )
    assert (
        client.post(f"/api/v1/approvals/{by_key.id}/reject", headers=owner.headers).status_code
        == 403
    )


def test_expired_approvals_cannot_be_decided(client: TestClient, owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    stale = make_approval(db, server, expires_at=utcnow() - timedelta(minutes=1))
    fresh = make_approval(db, server)
    response = client.post(f"/api/v1/approvals/{stale.id}/approve", headers=owner.headers)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "approval_expired")
    pending = client.get("/api/v1/approvals?status=pending", headers=owner.headers).json()
    assert [item["id"] for item in pending["data"]] == [fresh.id]
    expired = client.get("/api/v1/approvals?status=expired", headers=owner.headers).json()
    assert [item["id"] for item in expired["data"]] == [stale.id]
    rejected = client.post(f"/api/v1/approvals/{fresh.id}/reject", headers=owner.headers)
    assert rejected.json()["data"]["status"] == "rejected"
