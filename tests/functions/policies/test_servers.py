"""The MCP server registry (API.md §4.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, col

from functions.policies.main import app
from shared.config import get_settings
from shared.crypto import unseal
from shared.models import AuditEvent, McpServer, Policy
from shared.permissions import Role
from shared.upstream import credential_binding
from tests.factories import Actor, make_actor, make_server, unique

ClientFor = Callable[[FastAPI], TestClient]
SECRET = "upstream-token-do-not-leak"


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for(app)


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def body(**overrides: Any) -> dict[str, Any]:
    slug = unique("s-")
    return {"name": "Docs", "slug": slug, "url": "http://127.0.0.1:8765/mcp", **overrides}


def create(client: TestClient, actor: Actor, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/v1/servers", json=body(**overrides), headers=actor.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def events(db: Session, org_id: str) -> list[AuditEvent]:
    query = (
        select(AuditEvent).where(col(AuditEvent.chain_id) == org_id).order_by(col(AuditEvent.seq))
    )
    return list(db.scalars(query))


def test_credential_is_write_only_and_encrypted(
    client: TestClient, owner: Actor, db: Session
) -> None:
    data = create(client, owner, authType="bearer", credential=SECRET, dataClasses=["phi", "pii"])
    assert data["hasCredential"] is True
    assert "credential" not in data
    assert data["dataClasses"] == ["phi", "pii"]
    assert data["anomalyMultiplier"] == 3
    assert data["createdBy"] == owner.user.id
    row = db.get(McpServer, data["id"])
    assert row is not None
    assert row.credential_ciphertext is not None
    assert SECRET.encode() not in row.credential_ciphertext
    assert row.credential_key_id == "test"
    assert (
        unseal(row.credential_ciphertext, row.credential_key_id, bound_to=credential_binding(row))
        == SECRET
    )
    for response in (
        client.get(f"/api/v1/servers/{data['id']}", headers=owner.headers),
        client.get("/api/v1/servers", headers=owner.headers),
    ):
        assert SECRET not in response.text
    assert all(SECRET not in str(event.metadata_) for event in events(db, owner.org.id))
    assert [event.operation for event in events(db, owner.org.id)] == ["server.created"]


def test_credential_can_be_replaced_and_removed(client: TestClient, owner: Actor) -> None:
    data = create(client, owner, authType="header", authHeaderName="X-Api-Key", credential=SECRET)
    path = f"/api/v1/servers/{data['id']}"
    assert client.patch(path, json={"credential": "new-one"}, headers=owner.headers).json()["data"][
        "hasCredential"
    ]
    refused = client.patch(path, json={"credential": None}, headers=owner.headers)
    assert refused.status_code == 422  # a header server needs its credential
    cleared = client.patch(
        path,
        json={"credential": None, "authType": "none", "authHeaderName": None},
        headers=owner.headers,
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["data"]["hasCredential"] is False


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"slug": "ab"}, "slug"),
        ({"slug": "-bad"}, "slug"),
        ({"slug": "Upper"}, "slug"),
        ({"url": "ftp://example.com"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"authType": "header", "credential": "x"}, "authHeaderName"),
        ({"authType": "bearer"}, "credential"),
        ({"authType": "header", "authHeaderName": "Cookie", "credential": "x"}, "authHeaderName"),
        ({"authType": "magic"}, "authType"),
        ({"dataClasses": ["PHI!"]}, "dataClasses"),
        ({"anomalyMultiplier": 0}, "anomalyMultiplier"),
        ({"owner": "me"}, "owner"),
    ],
)
def test_bad_input_names_the_field_and_stores_nothing(
    client: TestClient, owner: Actor, db: Session, overrides: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/servers", json=body(**overrides), headers=owner.headers)
    assert response.status_code == 422, response.text
    assert field in {detail["field"] for detail in response.json()["error"]["details"]}
    assert "x" * 0 + SECRET not in response.text
    query = select(McpServer).where(col(McpServer.organization_id) == owner.org.id)
    assert db.scalars(query).first() is None


def test_private_upstreams_are_refused_unless_allowed(
    client: TestClient, owner: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGRIS_ALLOW_PRIVATE_UPSTREAMS", "0")
    get_settings.cache_clear()
    try:
        for url in ("http://127.0.0.1:8000/mcp", "http://169.254.169.254/", "http://localhost/"):
            response = client.post("/api/v1/servers", json=body(url=url), headers=owner.headers)
            assert response.status_code == 422
            assert response.json()["error"]["details"][0]["field"] == "url"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert (
        client.post(
            "/api/v1/servers", json=body(url="http://127.0.0.1:8000/mcp"), headers=owner.headers
        ).status_code
        == 201
    )


def test_slug_is_unique_per_organization(client: TestClient, owner: Actor, db: Session) -> None:
    data = create(client, owner)
    clash = client.post("/api/v1/servers", json=body(slug=data["slug"]), headers=owner.headers)
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "slug_taken"
    other = make_actor(db, Role.OWNER)
    assert (
        client.post(
            "/api/v1/servers", json=body(slug=data["slug"]), headers=other.headers
        ).status_code
        == 201
    )
    second = create(client, owner)
    moved = client.patch(
        f"/api/v1/servers/{second['id']}", json={"slug": data["slug"]}, headers=owner.headers
    )
    assert moved.status_code == 409


def test_developers_manage_only_their_own_servers(
    client: TestClient, owner: Actor, db: Session
) -> None:
    developer = make_actor(db, Role.DEVELOPER, org=owner.org)
    theirs = create(client, owner)
    mine = create(client, developer)
    assert (
        client.get(f"/api/v1/servers/{theirs['id']}", headers=developer.headers).status_code == 200
    )
    assert (
        client.patch(
            f"/api/v1/servers/{theirs['id']}", json={"name": "x"}, headers=developer.headers
        ).status_code
        == 403
    )
    assert (
        client.delete(f"/api/v1/servers/{theirs['id']}", headers=developer.headers).status_code
        == 403
    )
    assert (
        client.patch(
            f"/api/v1/servers/{mine['id']}", json={"enabled": False}, headers=developer.headers
        ).json()["data"]["enabled"]
        is False
    )
    assert (
        client.delete(f"/api/v1/servers/{mine['id']}", headers=developer.headers).status_code == 204
    )


@pytest.mark.parametrize("role", [Role.CISO, Role.AUDITOR])
def test_view_only_roles_cannot_create(client: TestClient, db: Session, role: Role) -> None:
    actor = make_actor(db, role)
    assert client.get("/api/v1/servers", headers=actor.headers).status_code == 200
    assert client.post("/api/v1/servers", json=body(), headers=actor.headers).status_code == 403


def test_delete_is_refused_while_policies_point_at_it_unless_forced(
    client: TestClient, owner: Actor, db: Session
) -> None:
    server = make_server(db, owner.org, owner.user)
    policy = Policy(
        organization_id=owner.org.id,
        server_id=server.id,
        name=unique("p-"),
        rules=[{"tool": "*", "action": "allow"}],
    )
    db.add(policy)
    db.flush()
    refused = client.delete(f"/api/v1/servers/{server.id}", headers=owner.headers)
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == [{"field": "policies", "message": policy.id}]
    assert db.get(McpServer, server.id) is not None
    forced = client.delete(f"/api/v1/servers/{server.id}?force=true", headers=owner.headers)
    assert forced.status_code == 204
    db.expire_all()
    assert db.get(McpServer, server.id) is None
    assert db.get(Policy, policy.id) is None
    operations = [event.operation for event in events(db, owner.org.id)]
    assert operations == ["policy.deleted", "server.deleted"]


def test_update_and_list(client: TestClient, owner: Actor) -> None:
    data = create(client, owner)
    updated = client.patch(
        f"/api/v1/servers/{data['id']}",
        json={"name": "Renamed", "anomalyMultiplier": 5, "logArguments": True},
        headers=owner.headers,
    ).json()["data"]
    assert (updated["name"], updated["anomalyMultiplier"], updated["logArguments"]) == (
        "Renamed",
        5,
        True,
    )
    assert updated["updatedAt"] >= data["updatedAt"]
    null_name = client.patch(
        f"/api/v1/servers/{data['id']}", json={"name": None}, headers=owner.headers
    )
    assert null_name.status_code == 422
    listed = client.get("/api/v1/servers", headers=owner.headers).json()
    assert [item["id"] for item in listed["data"]] == [data["id"]]
    assert listed["meta"] == {"nextCursor": None}
