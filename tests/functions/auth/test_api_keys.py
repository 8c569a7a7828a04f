"""API keys (API.md §3): shown once, stored as digests, role-capped, revocable at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from functions.auth.main import app as auth_app
from functions.policies.main import app as policies_app
from shared.models import ApiKey, AuditEvent
from shared.models.base import utcnow
from shared.permissions import Role
from shared.security import token_digest
from tests.factories import Actor, make_actor, make_api_key

ClientFor = Callable[[FastAPI], TestClient]


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for(auth_app)


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def create(client: TestClient, actor: Actor, **body: object) -> dict[str, object]:
    response = client.post("/api/v1/api-keys", json={"name": "ci", **body}, headers=actor.headers)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    return data


def test_create_shows_the_key_once_and_stores_only_a_digest(
    client: TestClient, owner: Actor, db: Session
) -> None:
    data = create(client, owner)
    key = str(data["key"])
    assert key.startswith("ig_")
    assert len(key) - 3 >= 27  # ≥ 160 bits in URL-safe base64
    assert data["start"] == key[:8]
    assert data["role"] == "owner"  # defaults to the creator's role
    row = db.get(ApiKey, data["id"])
    assert row is not None
    assert row.key_hash == token_digest(key)
    assert key not in str(row.model_dump())
    listed = client.get("/api/v1/api-keys", headers=owner.headers).json()["data"]
    assert [item["id"] for item in listed] == [data["id"]]
    assert "key" not in listed[0]
    assert listed[0]["createdBy"] == owner.user.id


def test_key_authenticates_until_revoked(
    client: TestClient, client_for: ClientFor, owner: Actor
) -> None:
    key = create(client, owner, role="developer")["key"]
    health = client_for(policies_app)
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/api-keys", headers=bearer).status_code == 200
    key_id = client.get("/api/v1/api-keys", headers=owner.headers).json()["data"][0]["id"]
    assert client.delete(f"/api/v1/api-keys/{key_id}", headers=owner.headers).status_code == 204
    refused = client.get("/api/v1/api-keys", headers=bearer)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "unauthorized"
    assert health.get("/api/v1/policies/_health").status_code == 200


def test_role_cannot_exceed_the_creators(client: TestClient, db: Session) -> None:
    developer = make_actor(db, Role.DEVELOPER)
    response = client.post(
        "/api/v1/api-keys", json={"name": "x", "role": "admin"}, headers=developer.headers
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "role_exceeds_creator"
    assert create(client, developer)["role"] == "developer"


def test_expired_key_stops_working(client: TestClient, owner: Actor, db: Session) -> None:
    row, key = make_api_key(db, owner.org, owner.user, Role.ADMIN)
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/api-keys", headers=bearer).status_code == 200
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.add(row)
    db.flush()
    assert client.get("/api/v1/api-keys", headers=bearer).status_code == 401


def test_expiry_must_be_in_the_future(client: TestClient, owner: Actor) -> None:
    past = (utcnow() - timedelta(days=1)).isoformat()
    response = client.post(
        "/api/v1/api-keys", json={"name": "x", "expiresAt": past}, headers=owner.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "expiresAt", "message": "Must be in the future."}
    ]


def test_key_stops_working_when_its_creator_leaves(
    client: TestClient, owner: Actor, db: Session
) -> None:
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    _, key = make_api_key(db, owner.org, admin.user, Role.ADMIN)
    bearer = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/api-keys", headers=bearer).status_code == 200
    db.delete(admin.member)
    db.flush()
    assert client.get("/api/v1/api-keys", headers=bearer).status_code == 401


@pytest.mark.parametrize(
    "value", ["ig_short", "ig_" + "!" * 32, "ig_" + "a" * 33, "ig_" + "a" * 32 + "\n"]
)
def test_malformed_keys_are_refused(client: TestClient, value: str) -> None:
    response = client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {value}"})
    assert response.status_code == 401


def test_last_used_is_coarse(client: TestClient, owner: Actor, db: Session) -> None:
    row, key = make_api_key(db, owner.org, owner.user, Role.ADMIN)
    bearer = {"Authorization": f"Bearer {key}"}
    client.get("/api/v1/api-keys", headers=bearer)
    db.refresh(row)
    first = row.last_used_at
    assert first is not None
    client.get("/api/v1/api-keys", headers=bearer)
    db.refresh(row)
    assert row.last_used_at == first  # no write within the minute


def test_developers_see_and_revoke_only_their_own(
    client: TestClient, owner: Actor, db: Session
) -> None:
    developer = make_actor(db, Role.DEVELOPER, org=owner.org)
    theirs = create(client, owner)
    mine = create(client, developer)
    listed = client.get("/api/v1/api-keys", headers=developer.headers).json()["data"]
    assert [item["id"] for item in listed] == [mine["id"]]
    response = client.delete(f"/api/v1/api-keys/{theirs['id']}", headers=developer.headers)
    assert response.status_code == 404
    all_keys = client.get("/api/v1/api-keys", headers=owner.headers).json()["data"]
    assert {item["id"] for item in all_keys} == {mine["id"], theirs["id"]}
    assert client.delete(f"/api/v1/api-keys/{mine['id']}", headers=owner.headers).status_code == 204


def test_api_keys_cannot_manage_api_keys(client: TestClient, owner: Actor, db: Session) -> None:
    _, key = make_api_key(db, owner.org, owner.user, Role.ADMIN)
    response = client.post(
        "/api/v1/api-keys", json={"name": "x"}, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "session_required"


def test_creation_and_revocation_are_audited(client: TestClient, owner: Actor, db: Session) -> None:
    data = create(client, owner)
    client.delete(f"/api/v1/api-keys/{data['id']}", headers=owner.headers)
    events = db.scalars(
        select(AuditEvent).where(AuditEvent.chain_id == owner.org.id).order_by(AuditEvent.seq)  # type: ignore[arg-type]
    ).all()
    assert [event.operation for event in events] == ["api_key.created", "api_key.revoked"]
    assert all(event.actor_id == owner.user.id for event in events)
    assert str(data["key"]) not in str([event.metadata_ for event in events])


def test_pagination_is_keyset_and_stable(client: TestClient, owner: Actor, db: Session) -> None:
    ids = [make_api_key(db, owner.org, owner.user)[0].id for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/api-keys", params=params, headers=owner.headers).json()
        seen += [item["id"] for item in body["data"]]
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            break
        make_api_key(db, owner.org, owner.user)  # a concurrent insert must not shift pages
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("params", [{"limit": 201}, {"limit": 0}, {"cursor": "nope"}])
def test_bad_paging_is_422(client: TestClient, owner: Actor, params: dict[str, str | int]) -> None:
    response = client.get("/api/v1/api-keys", params=params, headers=owner.headers)
    assert response.status_code == 422


def test_no_active_organization_is_403(client: TestClient, db: Session) -> None:
    from tests.factories import make_session, make_user

    user = make_user(db)
    _, token = make_session(db, user)
    response = client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_active_organization"


def test_missing_credentials_is_401(client: TestClient) -> None:
    response = client.get("/api/v1/api-keys")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/auth/list-sessions"),
        ("POST", "/api/auth/update-user"),
        ("POST", "/api/auth/revoke-sessions"),
        ("POST", "/api/auth/change-password"),
    ],
)
def test_api_keys_cannot_act_as_a_signed_in_user(
    client: TestClient, owner: Actor, db: Session, method: str, path: str
) -> None:
    _, key = make_api_key(db, owner.org, owner.user, Role.ADMIN)
    body = {"name": "x"} if path.endswith("update-user") else {}
    response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
    assert response.json()["code"] == "SESSION_REQUIRED"
    assert "set-cookie" not in response.headers


def test_nul_characters_are_bad_input(client: TestClient, owner: Actor) -> None:
    response = client.post("/api/v1/api-keys", json={"name": "a\u0000b"}, headers=owner.headers)
    assert response.status_code == 422
