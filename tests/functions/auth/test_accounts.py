"""Accounts and sessions (API.md §2): Better Auth-shaped, credentials safe at rest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session, col

from functions.auth.main import app as auth_app
from shared.config import get_settings
from shared.models import Account, AuditEvent, User
from shared.models import Session as UserSession
from shared.models.base import utcnow
from shared.security import token_digest
from tests.factories import make_member, make_org, make_user, unique

ClientFor = Callable[[FastAPI], TestClient]
PASSWORD = "correct-horse-battery"
ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for(auth_app)


def sign_up(client: TestClient, email: str | None = None, **body: object) -> dict[str, Any]:
    payload = {
        "name": "Ada",
        "email": email or f"{unique('ada-')}@example.com",
        "password": PASSWORD,
        **body,
    }
    response = client.post("/api/auth/sign-up/email", json=payload)
    assert response.status_code == 200, response.text
    client.cookies.clear()
    data: dict[str, Any] = response.json()
    return data


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """A new session's token (the cookie jar is left empty: calls use the bearer token)."""
    response = client.post("/api/auth/sign-in/email", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return str(response.json()["token"])


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def users_named(db: Session, email: str) -> int:
    return int(
        db.scalar(
            select(func.count())
            .select_from(User)
            .where(func.lower(col(User.email)) == email.lower())
        )
        or 0
    )


def test_sign_up_returns_token_and_user_and_sets_the_cookie(
    client: TestClient, db: Session
) -> None:
    email = f"{unique('Ada-')}@Example.com"
    response = client.post(
        "/api/auth/sign-up/email", json={"name": "Ada", "email": email, "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "user"}
    assert body["user"]["email"] == email.lower()
    assert body["user"]["createdAt"].endswith("Z")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("igris.session_token=")
    for attribute in ("HttpOnly", "Max-Age=604800", "Path=/", "SameSite=lax"):
        assert attribute in cookie
    assert "Secure" not in cookie  # local/test; production is covered below
    assert response.headers["set-auth-token"].startswith(body["token"] + ".")
    assert response.headers["access-control-expose-headers"] == "set-auth-token"
    stored = db.scalars(
        select(UserSession).where(col(UserSession.user_id) == body["user"]["id"])
    ).one()
    assert stored.token_hash == token_digest(body["token"])
    account = db.scalars(select(Account).where(col(Account.user_id) == body["user"]["id"])).one()
    assert account.password_hash is not None
    assert account.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in account.password_hash


def test_cookie_is_secure_outside_local(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IGRIS_ENV", "production")
    get_settings.cache_clear()
    try:
        response = client.post(
            "/api/auth/sign-up/email",
            json={"name": "A", "email": f"{unique('s-')}@example.com", "password": PASSWORD},
        )
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert "Secure" in response.headers["set-cookie"]


def test_duplicate_email_is_refused_case_insensitively(client: TestClient, db: Session) -> None:
    email = f"{unique('dup-')}@example.com"
    sign_up(client, email)
    response = client.post(
        "/api/auth/sign-up/email",
        json={"name": "B", "email": email.upper(), "password": PASSWORD},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "USER_ALREADY_EXISTS"
    assert users_named(db, email) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"password": "short"}, 400, "PASSWORD_TOO_SHORT"),
        ({"password": "x" * 129}, 400, "PASSWORD_TOO_LONG"),
        ({"email": "not-an-email"}, 400, "VALIDATION_ERROR"),
        ({"name": ""}, 400, "VALIDATION_ERROR"),
        ({"isAdmin": True}, 400, "VALIDATION_ERROR"),
    ],
)
def test_bad_sign_ups_create_nothing_and_echo_nothing(
    client: TestClient, db: Session, body: dict[str, object], status: int, code: str
) -> None:
    email = f"{unique('bad-')}@example.com"
    payload = {"name": "A", "email": email, "password": "secret-password-123", **body}
    response = client.post("/api/auth/sign-up/email", json=payload)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert "secret-password-123" not in response.text
    assert users_named(db, email) == 0


def test_wrong_password_and_unknown_email_look_the_same(client: TestClient) -> None:
    email = f"{unique('known-')}@example.com"
    sign_up(client, email)
    wrong = client.post("/api/auth/sign-in/email", json={"email": email, "password": "nope-nope"})
    unknown = client.post(
        "/api/auth/sign-in/email",
        json={"email": f"{unique('ghost-')}@example.com", "password": "nope-nope"},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "code": "INVALID_EMAIL_OR_PASSWORD",
            "message": "Invalid email or password",
        }
    )


def test_sign_in_works_and_failures_are_audited(client: TestClient, db: Session) -> None:
    email = f"{unique('aud-')}@example.com"
    user_id = sign_up(client, email)["user"]["id"]
    org = make_org(db)
    user = db.get(User, user_id)
    assert user is not None
    make_member(db, org, user)
    assert (
        client.post(
            "/api/auth/sign-in/email", json={"email": email, "password": "wrong-one"}
        ).status_code
        == 401
    )
    ok = client.post("/api/auth/sign-in/email", json={"email": email, "password": PASSWORD})
    assert ok.status_code == 200
    assert ok.json()["redirect"] is False
    operations = db.scalars(
        select(col(AuditEvent.operation))
        .where(col(AuditEvent.chain_id) == org.id)
        .order_by(col(AuditEvent.seq))
    ).all()
    assert operations == ["auth.sign_in_failed", "auth.signed_in"]


def test_repeated_failures_for_one_email_are_throttled(client: TestClient) -> None:
    email = f"{unique('slow-')}@example.com"
    sign_up(client, email)
    statuses = [
        client.post(
            "/api/auth/sign-in/email", json={"email": email, "password": "bad-pass"}
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    blocked = client.post("/api/auth/sign-in/email", json={"email": email, "password": PASSWORD})
    assert blocked.status_code == 429  # even the right password waits out the window
    assert 1 <= int(blocked.headers["retry-after"]) <= 900
    assert blocked.headers["x-retry-after"] == blocked.headers["retry-after"]


def test_repeated_failures_from_one_address_are_throttled(client: TestClient) -> None:
    statuses = [
        client.post(
            "/api/auth/sign-in/email",
            json={"email": f"{unique('spray-')}@example.com", "password": "bad-pass"},
        ).status_code
        for _ in range(21)
    ]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


def test_sign_out_ends_the_session_at_once(client: TestClient) -> None:
    token = sign_up(client)["token"]
    assert client.get("/api/auth/get-session", headers=bearer(token)).json() is not None
    response = client.post("/api/auth/sign-out", headers=bearer(token), json={})
    assert response.json() == {"success": True}
    assert "igris.session_token=;" in response.headers["set-cookie"] or (
        'igris.session_token="";' in response.headers["set-cookie"]
    )
    assert client.get("/api/auth/get-session", headers=bearer(token)).json() is None
    assert client.get("/api/auth/list-sessions", headers=bearer(token)).status_code == 401


def test_get_session_shapes(client: TestClient) -> None:
    assert client.get("/api/auth/get-session").json() is None
    body = sign_up(client)
    response = client.get("/api/auth/get-session", headers=bearer(body["token"]))
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    assert data["user"] == body["user"]
    assert set(data["session"]) >= {
        "id",
        "token",
        "userId",
        "expiresAt",
        "activeOrganizationId",
        "createdAt",
        "updatedAt",
    }
    assert data["session"]["token"] == data["session"]["id"]  # never the secret itself


def test_unsigned_or_tampered_cookie_is_no_session(client: TestClient) -> None:
    token = str(sign_up(client)["token"])
    client.cookies.set("igris.session_token", token)
    assert client.get("/api/auth/get-session").json() is None
    client.cookies.set("igris.session_token", token + ".AAAA" + "A" * 39 + "=")
    assert client.get("/api/auth/get-session").json() is None
    # A forged signature with non-ASCII characters (percent-encoded in the cookie) is no
    # session either, not a 500.
    client.cookies.set("igris.session_token", token + "." + "%C3%A9" * 43 + "=")
    response = client.get("/api/auth/get-session")
    assert response.status_code == 200
    assert response.json() is None


def test_sliding_expiry_refreshes_after_a_day_within_the_cap(
    client: TestClient, db: Session
) -> None:
    body = sign_up(client)
    row = db.scalars(
        select(UserSession).where(col(UserSession.user_id) == body["user"]["id"])
    ).one()
    row.updated_at = utcnow() - timedelta(days=2)
    row.expires_at = utcnow() + timedelta(days=5)
    db.add(row)
    db.flush()
    response = client.get("/api/auth/get-session", headers=bearer(body["token"]))
    assert "set-auth-token" in response.headers
    db.refresh(row)
    assert row.expires_at > utcnow() + timedelta(days=6, hours=23)
    # Never past the absolute cap.
    row.updated_at = utcnow() - timedelta(days=2)
    row.absolute_expires_at = utcnow() + timedelta(hours=3)
    db.add(row)
    db.flush()
    client.get("/api/auth/get-session", headers=bearer(body["token"]))
    db.refresh(row)
    assert row.expires_at <= row.absolute_expires_at


def test_remember_me_false_is_a_browser_session_that_never_slides(
    client: TestClient, db: Session
) -> None:
    email = f"{unique('tmp-')}@example.com"
    sign_up(client, email)
    response = client.post(
        "/api/auth/sign-in/email", json={"email": email, "password": PASSWORD, "rememberMe": False}
    )
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("igris.session_token="))
    assert "Max-Age" not in session_cookie
    assert any(c.startswith("igris.dont_remember=") for c in cookies)
    row = db.scalars(
        select(UserSession).where(
            col(UserSession.token_hash) == token_digest(response.json()["token"])
        )
    ).one()
    assert not row.remember
    assert row.expires_at <= utcnow() + timedelta(days=1)
    row.updated_at = utcnow() - timedelta(days=2)
    db.add(row)
    db.flush()
    before = row.expires_at
    client.cookies.clear()
    client.get("/api/auth/get-session", headers=bearer(response.json()["token"]))
    db.refresh(row)
    assert row.expires_at == before


def test_session_management(client: TestClient, db: Session) -> None:
    email = f"{unique('multi-')}@example.com"
    first = sign_up(client, email)["token"]
    tokens = [sign_in(client, email) for _ in range(3)]
    listed = client.get("/api/auth/list-sessions", headers=bearer(tokens[0])).json()
    assert len(listed) == 4
    other = next(s for s in listed if s["id"] != listed[0]["id"])
    # Revoke one by the id list-sessions gives, one by its token.
    assert client.post(
        "/api/auth/revoke-session", json={"token": tokens[2]}, headers=bearer(tokens[0])
    ).json() == {"status": True}
    assert client.get("/api/auth/get-session", headers=bearer(tokens[2])).json() is None
    assert (
        client.post(
            "/api/auth/revoke-session", json={"token": other["token"]}, headers=bearer(tokens[0])
        ).status_code
        == 200
    )
    assert client.post(
        "/api/auth/revoke-other-sessions", headers=bearer(tokens[0]), json={}
    ).json() == {"status": True}
    assert client.get("/api/auth/get-session", headers=bearer(first)).json() is None
    assert client.get("/api/auth/get-session", headers=bearer(tokens[0])).json() is not None
    assert (
        client.post("/api/auth/revoke-sessions", headers=bearer(tokens[0]), json={}).status_code
        == 200
    )
    assert client.get("/api/auth/get-session", headers=bearer(tokens[0])).json() is None


def test_list_sessions_needs_a_fresh_session(client: TestClient, db: Session) -> None:
    body = sign_up(client)
    row = db.scalars(
        select(UserSession).where(col(UserSession.user_id) == body["user"]["id"])
    ).one()
    row.created_at = utcnow() - timedelta(days=2)
    db.add(row)
    db.flush()
    response = client.get("/api/auth/list-sessions", headers=bearer(body["token"]))
    assert response.status_code == 403
    assert response.json()["code"] == "SESSION_NOT_FRESH"


def test_a_user_cannot_revoke_someone_elses_session(client: TestClient) -> None:
    mine = sign_up(client)["token"]
    theirs = sign_up(client)["token"]
    client.post("/api/auth/revoke-session", json={"token": theirs}, headers=bearer(mine))
    assert client.get("/api/auth/get-session", headers=bearer(theirs)).json() is not None


def test_change_password(client: TestClient) -> None:
    email = f"{unique('pw-')}@example.com"
    token = sign_up(client, email)["token"]
    other = sign_in(client, email)
    wrong = client.post(
        "/api/auth/change-password",
        json={"currentPassword": "not-it-at-all", "newPassword": "new-password-1"},
        headers=bearer(token),
    )
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "INVALID_PASSWORD"
    short = client.post(
        "/api/auth/change-password",
        json={"currentPassword": PASSWORD, "newPassword": "short"},
        headers=bearer(token),
    )
    assert short.json()["code"] == "PASSWORD_TOO_SHORT"
    changed = client.post(
        "/api/auth/change-password",
        json={
            "currentPassword": PASSWORD,
            "newPassword": "new-password-1",
            "revokeOtherSessions": True,
        },
        headers=bearer(token),
    )
    assert changed.status_code == 200
    new_token = changed.json()["token"]
    assert new_token
    client.cookies.clear()
    for old in (token, other):
        assert client.get("/api/auth/get-session", headers=bearer(old)).json() is None
    assert client.get("/api/auth/get-session", headers=bearer(new_token)).json() is not None
    assert (
        client.post(
            "/api/auth/sign-in/email", json={"email": email, "password": PASSWORD}
        ).status_code
        == 401
    )
    assert (
        client.post(
            "/api/auth/sign-in/email", json={"email": email, "password": "new-password-1"}
        ).status_code
        == 200
    )


def test_update_user(client: TestClient) -> None:
    token = sign_up(client)["token"]
    ok = client.post("/api/auth/update-user", json={"name": "Grace"}, headers=bearer(token))
    assert ok.json() == {"status": True}
    client.cookies.clear()
    me = client.get("/api/auth/get-session", headers=bearer(token)).json()
    assert me["user"]["name"] == "Grace"
    email = client.post("/api/auth/update-user", json={"email": "x@y.z"}, headers=bearer(token))
    assert email.json()["code"] == "EMAIL_CAN_NOT_BE_UPDATED"
    empty = client.post("/api/auth/update-user", json={}, headers=bearer(token))
    assert empty.status_code == 400
    null_name = client.post("/api/auth/update-user", json={"name": None}, headers=bearer(token))
    assert (null_name.status_code, null_name.json()["code"]) == (400, "VALIDATION_ERROR")


def test_cookie_authenticated_posts_need_a_trusted_origin(client: TestClient) -> None:
    email = f"{unique('csrf-')}@example.com"
    client.post("/api/auth/sign-up/email", json={"name": "A", "email": email, "password": PASSWORD})
    assert client.cookies.get("igris.session_token")
    missing = client.post("/api/auth/update-user", json={"name": "B"})
    assert (missing.status_code, missing.json()["code"]) == (403, "MISSING_OR_NULL_ORIGIN")
    evil = client.post(
        "/api/auth/update-user", json={"name": "B"}, headers={"Origin": "https://evil.example"}
    )
    assert (evil.status_code, evil.json()["code"]) == (403, "INVALID_ORIGIN")
    assert (
        client.post("/api/auth/update-user", json={"name": "B"}, headers=ORIGIN).status_code == 200
    )
    assert (
        client.post(
            "/api/auth/update-user",
            json={"name": "C"},
            headers={"Referer": "http://testserver/settings"},
        ).status_code
        == 200
    )


def test_browser_sign_in_needs_an_origin(client: TestClient) -> None:
    email = f"{unique('br-')}@example.com"
    sign_up(client, email)
    body = {"email": email, "password": PASSWORD}
    fetch = {"Sec-Fetch-Mode": "cors"}
    refused = client.post("/api/auth/sign-in/email", json=body, headers=fetch)
    assert refused.json()["code"] == "MISSING_OR_NULL_ORIGIN"
    assert (
        client.post("/api/auth/sign-in/email", json=body, headers=fetch | ORIGIN).status_code == 200
    )


def test_ok_route(client: TestClient) -> None:
    assert client.get("/api/auth/ok").json() == {"ok": True}


def test_password_hash_is_not_exposed_anywhere(client: TestClient, db: Session) -> None:
    user = make_user(db, password=PASSWORD)
    response = client.post(
        "/api/auth/sign-in/email", json={"email": user.email, "password": PASSWORD}
    )
    assert "argon2" not in response.text
    assert "password" not in response.json()["user"]
