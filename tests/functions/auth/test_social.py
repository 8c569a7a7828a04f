"""Social sign-in end to end: Igris's auth app (TestClient, redirects not followed) and a
real fake OAuth provider on loopback (tests/fake_oauth.py), reached over HTTP with httpx for
the browser's hop to the provider."""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session, col

from functions.auth.main import app
from functions.auth.social import STATE_COOKIE, STATE_PREFIX
from shared.config import get_settings
from shared.cookies import SESSION_COOKIE
from shared.models import Account, AuditEvent, User, Verification
from shared.models import Session as UserSession
from shared.models.base import utcnow
from shared.security import token_digest
from tests.factories import make_user, unique
from tests.fake_oauth import FakeOAuthServer, FakeUser, s256

ORIGIN = "http://testserver"
SIGN_IN = "/api/auth/sign-in/social"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOAuthServer]:
    with FakeOAuthServer() as server:
        yield server


@pytest.fixture
def fake(
    fake_server: FakeOAuthServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeOAuthServer]:
    """The fake provider, reset, with Igris's settings pointing at it (restored after)."""
    fake_server.reset()
    for name, value in fake_server.env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield fake_server
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def client(client_for: Callable[..., TestClient]) -> TestClient:
    return client_for(app, follow_redirects=False)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def github_user(**overrides: Any) -> FakeUser:
    values: dict[str, Any] = {
        "account_id": str(secrets.randbelow(10**9) + 1),
        "email": f"{unique('gh-')}@example.com",
        "login": unique("octo-"),
        "name": "Octo Cat",
    }
    values.update(overrides)
    return FakeUser(**values)


def google_user(**overrides: Any) -> FakeUser:
    values: dict[str, Any] = {
        "account_id": unique("1049"),
        "email": f"{unique('g-')}@example.com",
        "name": "Gia Google",
    }
    values.update(overrides)
    return FakeUser(**values)


def start(client: TestClient, provider: str, **body: Any) -> httpx2.Response:
    """`POST /sign-in/social`, as the browser app would (with its Origin)."""
    return client.post(SIGN_IN, json={"provider": provider, **body}, headers={"Origin": ORIGIN})


def approve(authorize_url: str) -> str:
    """The browser at the provider: it approves and sends the browser back (Location)."""
    response = httpx.get(authorize_url, follow_redirects=False, trust_env=False, timeout=5)
    assert response.status_code == 302, response.text
    return response.headers["location"]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


def sign_in(
    client: TestClient, provider: str, *, callback_url: str = "/dashboard", **body: Any
) -> httpx2.Response:
    """The whole flow; returns Igris's answer to the provider's redirect."""
    started = start(client, provider, callbackURL=callback_url, **body)
    assert started.status_code == 200, started.text
    back = approve(started.json()["url"])
    assert back.startswith(f"{ORIGIN}/api/auth/callback/{provider}?"), back
    return client.get(path_of(back))


def session_user(client: TestClient) -> dict[str, Any] | None:
    response = client.get("/api/auth/get-session")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["user"] if body else None


def assert_failed(response: httpx2.Response, error: str, *, to: str | None = None) -> None:
    """A 302 to the error URL with `?error=<code>`, an empty body and no session cookie."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert query_of(location)["error"] == error, location
    if to is not None:
        assert location.startswith(to + "?"), location
    assert response.content == b""
    assert not any(
        c.startswith(f"{SESSION_COOKIE}=") for c in response.headers.get_list("set-cookie")
    )


def cookie_line(response: httpx2.Response, name: str) -> str:
    lines = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    assert len(lines) == 1, response.headers.get_list("set-cookie")
    return lines[0]


def users_with_email(db: Session, email: str) -> list[User]:
    return list(db.scalars(select(User).where(func.lower(col(User.email)) == email.lower())))


def accounts_of(db: Session, user_id: str) -> list[Account]:
    query = select(Account).where(col(Account.user_id) == user_id).order_by(col(Account.id))
    return list(db.scalars(query))


def session_count(db: Session) -> int:
    return int(db.scalar(select(func.count()).select_from(UserSession)) or 0)


def flow_row(db: Session, authorize_url: str) -> Verification:
    state = query_of(authorize_url)["state"]
    row = db.scalars(
        select(Verification).where(
            col(Verification.identifier) == STATE_PREFIX + token_digest(state)
        )
    ).one()
    return row


def events(db: Session, operation: str, actor_id: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(col(AuditEvent.operation) == operation)
    if actor_id is not None:
        query = query.where(col(AuditEvent.actor_id) == actor_id)
    return list(db.scalars(query.order_by(col(AuditEvent.occurred_at))))


# --- starting the flow --------------------------------------------------------------------


def test_sign_in_social_returns_the_provider_url_and_sets_the_state_cookie(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    response = start(client, "github", callbackURL="/dashboard")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"url": body["url"], "redirect": True}
    assert response.headers["location"] == body["url"]
    assert body["url"].startswith(fake.env()["IGRIS_GITHUB_AUTHORIZE_URL"] + "?")
    params = query_of(body["url"])
    assert params["response_type"] == "code"
    assert params["client_id"] == fake.github.client_id
    assert params["redirect_uri"] == f"{ORIGIN}/api/auth/callback/github"
    assert params["scope"] == "read:user user:email"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 43  # 256 random bits, URL-safe
    line = cookie_line(response, STATE_COOKIE).lower()
    assert "max-age=300" in line
    assert "httponly" in line
    assert "samesite=lax" in line
    assert "path=/" in line
    assert "secure" not in line  # local/test; production adds Secure
    row = flow_row(db, body["url"])
    stored = json.loads(row.value)
    assert stored["callbackURL"] == "/dashboard"
    assert params["state"] not in row.identifier  # only the digest is stored
    assert s256(stored["codeVerifier"]) == params["code_challenge"]
    assert timedelta(minutes=9) < row.expires_at - utcnow() <= timedelta(minutes=10)


def test_the_state_cookie_is_secure_outside_local(
    fake: FakeOAuthServer, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, IGRIS_ENV="production")

    response = start(client, "github", callbackURL="/dashboard")

    assert response.status_code == 200, response.text
    assert "secure" in cookie_line(response, STATE_COOKIE).lower()


def test_disable_redirect_answers_without_location(
    fake: FakeOAuthServer, client: TestClient
) -> None:
    response = start(client, "google", callbackURL="/x", disableRedirect=True)

    assert response.status_code == 200, response.text
    assert response.json()["redirect"] is False
    assert "location" not in response.headers
    params = query_of(response.json()["url"])
    assert params["scope"] == "openid email profile"
    assert params["code_challenge_method"] == "S256"


def test_the_base_url_setting_builds_the_redirect_uri(
    fake: FakeOAuthServer, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, IGRIS_BASE_URL="https://api.igris.test/")

    response = start(client, "github", callbackURL="https://api.igris.test/after")

    assert response.status_code == 200, response.text
    redirect_uri = query_of(response.json()["url"])["redirect_uri"]
    assert redirect_uri == "https://api.igris.test/api/auth/callback/github"


@pytest.mark.parametrize("provider", ["myspace", "GitHub", ""])
def test_unknown_provider_is_not_found(
    fake: FakeOAuthServer, client: TestClient, provider: str
) -> None:
    response = start(client, provider)

    if provider == "":
        assert response.status_code == 400
        assert response.json()["code"] == "VALIDATION_ERROR"
    else:
        assert response.status_code == 404
        assert response.json() == {"code": "PROVIDER_NOT_FOUND", "message": "Provider not found"}


def test_unconfigured_provider_is_not_found(
    fake: FakeOAuthServer, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IGRIS_GOOGLE_CLIENT_SECRET")
    get_settings.cache_clear()

    response = start(client, "google", callbackURL="/after")

    assert response.status_code == 404
    assert response.json()["code"] == "PROVIDER_NOT_FOUND"


@pytest.mark.parametrize(
    ("field", "url", "code"),
    [
        ("callbackURL", "https://evil.example/after", "INVALID_CALLBACK_URL"),
        ("callbackURL", "//evil.example/after", "INVALID_CALLBACK_URL"),
        ("callbackURL", "/\\evil.example", "INVALID_CALLBACK_URL"),
        ("callbackURL", "/%2F%2Fevil.example", "INVALID_CALLBACK_URL"),
        ("callbackURL", "javascript:alert(1)", "INVALID_CALLBACK_URL"),
        ("callbackURL", "https://trusted.example@evil.example/", "INVALID_CALLBACK_URL"),
        ("callbackURL", "http://testserver.evil.example/", "INVALID_CALLBACK_URL"),
        ("errorCallbackURL", "https://evil.example/error", "INVALID_ERROR_CALLBACK_URL"),
        ("newUserCallbackURL", "https://evil.example/new", "INVALID_NEW_USER_CALLBACK_URL"),
    ],
)
def test_untrusted_callback_urls_are_forbidden(
    fake: FakeOAuthServer, client: TestClient, db: Session, *, field: str, url: str, code: str
) -> None:
    before = db.scalar(select(func.count()).select_from(Verification))

    response = start(client, "github", **{field: url})

    assert response.status_code == 403, response.text
    assert response.json()["code"] == code
    assert STATE_COOKIE not in response.headers.get("set-cookie", "")
    assert db.scalar(select(func.count()).select_from(Verification)) == before


@pytest.mark.parametrize(
    "url",
    [
        "/dashboard?tab=1#top",
        f"{ORIGIN}/after",
        "https://app.igris.test/welcome",
        "http://localhost:3000/x",
    ],
)
def test_relative_and_trusted_callback_urls_are_accepted(
    fake: FakeOAuthServer, client: TestClient, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    set_env(monkeypatch, IGRIS_TRUSTED_ORIGINS="https://app.igris.test, http://localhost:3000")

    response = start(client, "github", callbackURL=url, errorCallbackURL=url)

    assert response.status_code == 200, response.text


# --- complete flows -----------------------------------------------------------------------


def test_github_sign_in_creates_the_user_and_account_and_the_session_works(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    fake.github.user = github_user(name=None, login="octo-login")
    email = fake.github.user.email
    assert email is not None

    response = sign_in(client, "github", newUserCallbackURL="/welcome")

    assert response.status_code == 302, response.text
    assert response.headers["location"] == "/welcome"  # new user
    assert response.content == b""
    session_line = cookie_line(response, SESSION_COOKIE).lower()
    assert "max-age=604800" in session_line
    assert "httponly" in session_line
    assert response.headers["set-auth-token"]
    assert "max-age=0" in cookie_line(response, STATE_COOKIE).lower()
    user = session_user(client)
    assert user is not None
    assert user["email"] == email
    assert user["emailVerified"] is True
    assert user["name"] == "octo-login"  # GitHub name missing: the login
    assert user["image"] == f"https://avatars.example.test/u/{fake.github.user.account_id}"
    [account] = accounts_of(db, user["id"])
    assert account.provider_id == "github"
    assert account.account_id == fake.github.user.account_id
    assert account.scope == "read:user,user:email"
    # Provider tokens are never stored.
    assert account.access_token_encrypted is None
    assert account.refresh_token_encrypted is None
    assert account.password_hash is None
    # The provider checked the PKCE verifier against the challenge and the client secret.
    [authorize] = fake.github.authorize_requests
    [token_request] = fake.github.token_requests
    assert s256(token_request["code_verifier"]) == authorize["code_challenge"]
    assert token_request["client_secret"] == fake.github.client_secret
    assert token_request["redirect_uri"] == f"{ORIGIN}/api/auth/callback/github"
    assert fake.github.token_refusals == []
    # The state is used up.
    assert (
        db.scalar(
            select(func.count())
            .select_from(Verification)
            .where(col(Verification.identifier).startswith(STATE_PREFIX))
            .where(col(Verification.expires_at) > func.now())
        )
        == 0
    )
    [signed_in] = events(db, "auth.signed_in", user["id"])
    assert signed_in.metadata_["provider"] == "github"
    assert signed_in.metadata_["newUser"] is True
    assert signed_in.action == "allow"
    assert events(db, "auth.signed_up", user["id"])


def test_google_second_sign_in_reuses_the_user(
    fake: FakeOAuthServer, client_for: Callable[..., TestClient], db: Session
) -> None:
    fake.google.user = google_user()
    email = fake.google.user.email
    assert email is not None
    first_client = client_for(app, follow_redirects=False)
    second_client = client_for(app, follow_redirects=False)

    first = sign_in(first_client, "google", newUserCallbackURL="/welcome")
    second = sign_in(second_client, "google", newUserCallbackURL="/welcome")

    assert first.headers["location"] == "/welcome"
    assert second.headers["location"] == "/dashboard"  # known user: callbackURL
    first_user, second_user = session_user(first_client), session_user(second_client)
    assert first_user is not None
    assert second_user is not None
    assert first_user["id"] == second_user["id"]
    assert [u.id for u in users_with_email(db, email)] == [first_user["id"]]
    [account] = accounts_of(db, first_user["id"])
    assert (account.provider_id, account.account_id) == ("google", fake.google.user.account_id)
    dumped = json.dumps(account.model_dump(mode="json"))
    assert fake.google.tokens
    assert not any(token in dumped for token in fake.google.tokens)
    assert len(events(db, "auth.signed_in", first_user["id"])) == 2


def test_existing_password_user_with_the_same_verified_email_gets_linked(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    existing = make_user(db, password=PASSWORD, email_verified=True)
    fake.google.user = google_user(email=existing.email.upper())

    response = sign_in(client, "google", newUserCallbackURL="/welcome")

    assert response.headers["location"] == "/dashboard", response.headers["location"]
    user = session_user(client)
    assert user is not None
    assert user["id"] == existing.id
    providers = sorted(a.provider_id for a in accounts_of(db, existing.id))
    assert providers == ["credential", "google"]
    [linked] = events(db, "auth.account_linked", existing.id)
    assert linked.metadata_["provider"] == "google"
    # The password still works.
    password_sign_in = client.post(
        "/api/auth/sign-in/email",
        json={"email": existing.email, "password": PASSWORD},
        headers={"Origin": ORIGIN},
    )
    assert password_sign_in.status_code == 200, password_sign_in.text


def test_linking_is_refused_while_igris_has_not_verified_the_existing_email(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    existing = make_user(db, password=PASSWORD)  # signed up with a password, never verified
    fake.github.user = github_user(email=existing.email)
    sessions = session_count(db)

    response = sign_in(client, "github")

    assert_failed(response, "account_not_linked", to=f"{ORIGIN}/api/auth/error")
    assert [a.provider_id for a in accounts_of(db, existing.id)] == ["credential"]
    assert session_count(db) == sessions
    assert session_user(client) is None
    [failed] = events(db, "auth.sign_in_failed", existing.id)
    assert failed.metadata_["error"] == "account_not_linked"
    assert failed.action == "deny"


def test_unverified_provider_email_is_refused(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    fake.github.user = github_user(email_verified=False)
    email = fake.github.user.email
    assert email is not None
    sessions = session_count(db)

    response = sign_in(client, "github", errorCallbackURL="/login-error")

    assert_failed(response, "email_not_verified", to="/login-error")
    assert users_with_email(db, email) == []  # not the verified noreply address either
    assert session_count(db) == sessions
    assert session_user(client) is None


def test_unverified_provider_email_never_links_to_an_existing_user(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    existing = make_user(db, password=PASSWORD, email_verified=True)
    fake.google.user = google_user(email=existing.email, email_verified=False)

    response = sign_in(client, "google", errorCallbackURL="/login-error")

    assert_failed(response, "account_not_linked", to="/login-error")
    assert [a.provider_id for a in accounts_of(db, existing.id)] == ["credential"]
    assert session_user(client) is None


def test_a_provider_without_an_email_is_refused(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    fake.google.user = google_user(email=None)
    sessions = session_count(db)

    response = sign_in(client, "google", errorCallbackURL="/login-error")

    assert_failed(response, "email_not_found", to="/login-error")
    assert session_count(db) == sessions


def test_a_linked_account_signs_in_even_after_the_email_changed(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    fake.github.user = github_user()
    assert sign_in(client, "github").status_code == 302
    user = session_user(client)
    assert user is not None
    fake.github.user.email = f"{unique('moved-')}@example.com"
    fake.github.user.email_verified = False
    client.cookies.clear()

    response = sign_in(client, "github", newUserCallbackURL="/welcome")

    assert response.headers["location"] == "/dashboard"
    again = session_user(client)
    assert again is not None
    assert again["id"] == user["id"]


def test_profile_text_is_cleaned(fake: FakeOAuthServer, client: TestClient) -> None:
    fake.google.user = google_user(name="Bad\x00Name\n")

    assert sign_in(client, "google").status_code == 302

    user = session_user(client)
    assert user is not None
    assert user["name"] == "BadName"


# --- the state ----------------------------------------------------------------------------


def started(client: TestClient, fake: FakeOAuthServer, provider: str = "github") -> str:
    """Start a flow and approve it at the provider; the callback URL the browser holds."""
    provider_state = fake.github if provider == "github" else fake.google
    provider_state.user = github_user() if provider == "github" else google_user()
    response = start(client, provider, callbackURL="/dashboard", errorCallbackURL="/login-error")
    assert response.status_code == 200, response.text
    return approve(response.json()["url"])


def test_missing_state_is_refused(fake: FakeOAuthServer, client: TestClient, db: Session) -> None:
    back = started(client, fake)
    sessions = session_count(db)

    response = client.get(f"/api/auth/callback/github?code={query_of(back)['code']}")

    assert_failed(response, "state_not_found", to=f"{ORIGIN}/api/auth/error")
    assert session_count(db) == sessions
    assert fake.github.token_requests == []  # the code was never exchanged


def test_tampered_state_is_refused(fake: FakeOAuthServer, client: TestClient, db: Session) -> None:
    back = started(client, fake)
    params = query_of(back)
    sessions = session_count(db)

    response = client.get(
        "/api/auth/callback/github", params={"code": params["code"], "state": params["state"] + "x"}
    )

    assert_failed(response, "state_mismatch", to=f"{ORIGIN}/api/auth/error")
    assert session_count(db) == sessions
    assert fake.github.token_requests == []


@pytest.mark.parametrize("cookie", ["missing", "unsigned", "forged", "other-flow"])
def test_state_not_bound_to_this_browser_is_refused(
    fake: FakeOAuthServer,
    client: TestClient,
    client_for: Callable[..., TestClient],
    db: Session,
    cookie: str,
) -> None:
    back = started(client, fake)
    state = query_of(back)["state"]
    attacker = client_for(app, follow_redirects=False)  # another browser
    if cookie == "unsigned":
        attacker.cookies.set(STATE_COOKIE, state)
    elif cookie == "forged":
        attacker.cookies.set(STATE_COOKIE, f"{state}.{'A' * 43}=")
    elif cookie == "other-flow":
        start(attacker, "github", callbackURL="/dashboard")  # its own, valid, state cookie
    sessions = session_count(db)

    response = attacker.get(path_of(back))

    assert_failed(response, "state_mismatch", to="/login-error")
    assert session_count(db) == sessions
    assert fake.github.token_requests == []
    # The forged callback did not cancel the real browser's sign-in.
    assert client.get(path_of(back)).headers["location"] == "/dashboard"


def test_replayed_state_is_refused(fake: FakeOAuthServer, client: TestClient, db: Session) -> None:
    back = started(client, fake)
    state_cookie = client.cookies.get(STATE_COOKIE)
    assert state_cookie
    first = client.get(path_of(back))
    assert first.status_code == 302
    assert first.headers["location"] == "/dashboard"
    sessions = session_count(db)
    client.cookies.clear()
    client.cookies.set(STATE_COOKIE, state_cookie)  # even with the state cookie back

    replay = client.get(path_of(back))

    assert_failed(replay, "state_mismatch", to=f"{ORIGIN}/api/auth/error")
    assert session_count(db) == sessions
    assert len(fake.github.token_requests) == 1


def test_expired_state_is_refused(fake: FakeOAuthServer, client: TestClient, db: Session) -> None:
    response = start(client, "google", callbackURL="/dashboard", errorCallbackURL="/login-error")
    fake.google.user = google_user()
    back = approve(response.json()["url"])
    row = flow_row(db, response.json()["url"])
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.add(row)
    db.flush()
    sessions = session_count(db)

    expired = client.get(path_of(back))

    assert_failed(expired, "state_mismatch", to="/login-error")
    assert session_count(db) == sessions
    assert fake.google.token_requests == []


@pytest.mark.parametrize("other", ["google", "my%00space"])
def test_a_state_only_works_for_its_own_provider(
    fake: FakeOAuthServer, client: TestClient, db: Session, other: str
) -> None:
    back = started(client, fake, "github")
    sessions = session_count(db)

    response = client.get(path_of(back).replace("/callback/github", f"/callback/{other}"))

    assert_failed(response, "state_mismatch", to="/login-error")
    assert session_count(db) == sessions
    [failed] = events(db, "auth.sign_in_failed")[-1:]
    assert failed.metadata_["provider"] == ("google" if other == "google" else "unknown")


def test_the_user_denying_access_at_the_provider(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    fake.github.deny = True
    response = start(client, "github", callbackURL="/dashboard", errorCallbackURL="/login-error")
    back = approve(response.json()["url"])

    denied = client.get(path_of(back))

    assert_failed(denied, "access_denied", to="/login-error")
    assert query_of(denied.headers["location"])["error_description"] == "The user denied access"
    assert "max-age=0" in cookie_line(denied, STATE_COOKIE).lower()
    [failed] = events(db, "auth.sign_in_failed")[-1:]
    assert failed.metadata_["error"] == "access_denied"


def test_a_callback_without_a_code(fake: FakeOAuthServer, client: TestClient) -> None:
    back = started(client, fake)

    response = client.get("/api/auth/callback/github", params={"state": query_of(back)["state"]})

    assert_failed(response, "no_code", to="/login-error")


# --- the provider misbehaving -------------------------------------------------------------


def test_a_wrong_pkce_verifier_is_refused_by_the_provider(
    fake: FakeOAuthServer, client: TestClient, db: Session
) -> None:
    response = start(client, "google", callbackURL="/dashboard", errorCallbackURL="/login-error")
    fake.google.user = google_user()
    back = approve(response.json()["url"])
    row = flow_row(db, response.json()["url"])
    stored = json.loads(row.value)
    stored["codeVerifier"] = "w" * 86
    row.value = json.dumps(stored)
    db.add(row)
    db.flush()
    sessions = session_count(db)

    refused = client.get(path_of(back))

    assert_failed(refused, "invalid_code", to="/login-error")
    assert fake.google.token_refusals == ["invalid_grant"]
    assert session_count(db) == sessions
    assert session_user(client) is None


def test_an_already_used_code_is_refused_by_the_provider(
    fake: FakeOAuthServer, client: TestClient
) -> None:
    back = started(client, fake)
    code = query_of(back)["code"]
    fake.github.codes.pop(code)  # as if the code had been redeemed already

    response = client.get(path_of(back))

    assert_failed(response, "invalid_code", to="/login-error")
    assert fake.github.token_refusals == ["bad_verification_code"]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("token endpoint down", "invalid_code"),
        ("token endpoint error", "invalid_code"),
        ("token endpoint slow", "invalid_code"),
        ("api down", "unable_to_get_user_info"),
        ("api error", "unable_to_get_user_info"),
    ],
)
def test_a_failing_provider_is_an_error_redirect(
    fake: FakeOAuthServer,
    client: TestClient,
    db: Session,
    *,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
    error: str,
) -> None:
    back = started(client, fake)
    dead = f"http://127.0.0.1:{closed_port()}"
    if failure == "token endpoint down":
        set_env(monkeypatch, IGRIS_GITHUB_TOKEN_URL=f"{dead}/login/oauth/access_token")
    elif failure == "token endpoint error":
        fake.github.token_status = 502
    elif failure == "token endpoint slow":
        fake.github.delay_seconds = 2.0
        set_env(monkeypatch, IGRIS_OAUTH_TIMEOUT_SECONDS="0.3")
    elif failure == "api down":
        set_env(monkeypatch, IGRIS_GITHUB_API_URL=dead)
    else:
        fake.github.profile_status = 500
    sessions = session_count(db)

    response = client.get(path_of(back))

    assert_failed(response, error, to="/login-error")
    assert session_count(db) == sessions
    assert session_user(client) is None
    [failed] = events(db, "auth.sign_in_failed")[-1:]
    assert failed.metadata_ == failed.metadata_ | {"provider": "github", "error": error}


# --- the error page -----------------------------------------------------------------------


def test_the_default_error_page(client: TestClient) -> None:
    response = client.get("/api/auth/error", params={"error": "state_mismatch"})
    hostile = client.get("/api/auth/error", params={"error": "<script>alert(1)</script>"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "state_mismatch" in response.text
    assert "<script>" not in hostile.text
    assert "unknown_error" in hostile.text
