"""OAuth 2.0 clients of the social sign-in providers (GitHub, Google): the authorization
URL, the code exchange and the profile. No database work here.

Endpoints and credentials come from settings, so tests point them at a fake provider on
loopback. Both providers get PKCE (S256): Google supports it, GitHub does since 2025, and a
provider that ignored `code_challenge` would simply not check it. Provider calls use httpx
with short timeouts inside one overall budget, never follow redirects (a redirected token or
API endpoint is a misconfiguration, and following it could leak the code elsewhere), and
every failure becomes an `OAuthError` carrying Better Auth's callback error code.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from shared.config import Settings, get_settings
from shared.logs import logger

PROVIDERS: Final = ("github", "google")
# The whole exchange (token + profile calls) must end well inside the 29 s Lambda timeout.
CALL_BUDGET_SECONDS: Final = 20.0
GITHUB_SCOPES: Final = ("read:user", "user:email")
GOOGLE_SCOPES: Final = ("openid", "email", "profile")
USER_AGENT: Final = "igris"
MAX_NAME: Final = 200
MAX_IMAGE: Final = 2048
MAX_EMAIL: Final = 320
MAX_SCOPE: Final = 1024
# PostgreSQL text cannot hold NUL, and no profile field has a use for control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class OAuthError(Exception):
    """A failed provider step; `code` is what the error redirect carries."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Provider:
    """A configured provider: its credentials and endpoints."""

    id: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    profile_url: str  # GitHub: the API base URL; Google: the userinfo endpoint
    scopes: tuple[str, ...]
    login_hint_param: str


@dataclass(frozen=True)
class Profile:
    """Who the provider says signed in."""

    account_id: str
    email: str | None
    email_verified: bool
    name: str
    image: str | None


@dataclass(frozen=True)
class Grant:
    """What the sign-in got: the profile and the scopes the user granted. The access token
    itself is used for the profile call and then dropped (never stored)."""

    profile: Profile
    scope: str | None


def configured_provider(provider_id: str, settings: Settings | None = None) -> Provider | None:
    """The provider named `provider_id` when Igris has credentials for it, else None."""
    settings = settings or get_settings()
    if provider_id == "github":
        client_id, secret = settings.github_client_id, settings.github_client_secret
        if not client_id or secret is None or not secret.get_secret_value():
            return None
        return Provider(
            id="github",
            client_id=client_id,
            client_secret=secret.get_secret_value(),
            authorize_url=settings.github_authorize_url,
            token_url=settings.github_token_url,
            profile_url=settings.github_api_url.rstrip("/"),
            scopes=GITHUB_SCOPES,
            login_hint_param="login",
        )
    if provider_id == "google":
        client_id, secret = settings.google_client_id, settings.google_client_secret
        if not client_id or secret is None or not secret.get_secret_value():
            return None
        return Provider(
            id="google",
            client_id=client_id,
            client_secret=secret.get_secret_value(),
            authorize_url=settings.google_authorize_url,
            token_url=settings.google_token_url,
            profile_url=settings.google_userinfo_url,
            scopes=GOOGLE_SCOPES,
            login_hint_param="login_hint",
        )
    return None


def code_challenge(code_verifier: str) -> str:
    """PKCE S256: base64url(SHA-256(verifier)) without padding (RFC 7636 §4.2)."""
    digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def with_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` added to (or replacing the same names in) its query string."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()])))


def authorization_url(
    provider: Provider,
    *,
    state: str,
    code_verifier: str,
    redirect_uri: str,
    login_hint: str | None = None,
) -> str:
    """Where the browser goes to approve the sign-in."""
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(provider.scopes),
        "state": state,
        "code_challenge": code_challenge(code_verifier),
        "code_challenge_method": "S256",
    }
    if login_hint:
        params[provider.login_hint_param] = login_hint
    return with_query(provider.authorize_url, params)


class _Budget:
    """Per-call timeouts that together never exceed the overall budget."""

    def __init__(self, per_call: float, total: float = CALL_BUDGET_SECONDS) -> None:
        self.per_call = per_call
        self.deadline = time.monotonic() + total

    def timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("the provider call budget is spent")
        return min(self.per_call, remaining)


@lru_cache(maxsize=1)
def _http() -> httpx.Client:
    # trust_env=False: no proxy or netrc settings read from the environment (settings are
    # the only configuration Igris reads).
    return httpx.Client(
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
    )


def _json(response: httpx.Response) -> Any:
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}")
    return response.json()


def sign_in_grant(provider: Provider, *, code: str, code_verifier: str, redirect_uri: str) -> Grant:
    """Exchange the authorization code (with the client secret and the PKCE verifier) and
    read the profile with the resulting access token."""
    budget = _Budget(get_settings().oauth_timeout_seconds)
    access_token, scope = _exchange_code(
        provider, code=code, code_verifier=code_verifier, redirect_uri=redirect_uri, budget=budget
    )
    try:
        if provider.id == "github":
            profile = _github_profile(provider, access_token, budget)
        else:
            profile = _google_profile(provider, access_token, budget)
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        logger.warning(
            "oauth profile fetch failed", extra={"provider": provider.id, "reason": str(exc)}
        )
        raise OAuthError("unable_to_get_user_info", str(exc)) from None
    return Grant(profile=profile, scope=scope[:MAX_SCOPE] if scope else None)


def _exchange_code(
    provider: Provider, *, code: str, code_verifier: str, redirect_uri: str, budget: _Budget
) -> tuple[str, str | None]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
    }
    try:
        response = _http().post(provider.token_url, data=form, timeout=budget.timeout())
        # GitHub reports a bad code with 200 and an `error` member; Google with a 400.
        body = response.json() if response.status_code in {200, 400, 401} else None
        if response.status_code != 200 or not isinstance(body, dict) or "error" in body:
            error = body.get("error") if isinstance(body, dict) else None
            raise ValueError(f"HTTP {response.status_code} {error or ''}".strip())
        access_token = body["access_token"]
        token_type = body.get("token_type", "bearer")
        if not isinstance(access_token, str) or not access_token:
            raise ValueError("no access_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ValueError(f"token_type {token_type!r}")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        logger.warning(
            "oauth code exchange failed", extra={"provider": provider.id, "reason": str(exc)}
        )
        raise OAuthError("invalid_code", str(exc)) from None
    scope = body.get("scope")
    return access_token, scope if isinstance(scope, str) else None


def _get(url: str, access_token: str, budget: _Budget, **headers: str) -> Any:
    response = _http().get(
        url,
        headers={"Authorization": f"Bearer {access_token}", **headers},
        timeout=budget.timeout(),
    )
    return _json(response)


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    return _CONTROL.sub("", value).strip()[:limit] or None


def _image(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_IMAGE or _CONTROL.search(value):
        return None
    return value if urlsplit(value).scheme in {"http", "https"} else None


def _email(value: Any) -> str | None:
    if not isinstance(value, str) or _CONTROL.search(value):
        return None
    email = value.strip().lower()
    local, at, domain = email.rpartition("@")
    return email if at and local and domain and len(email) <= MAX_EMAIL else None


def _account_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("account id missing")
    account_id = str(value)
    if not account_id or len(account_id) > 255 or _CONTROL.search(account_id):
        raise TypeError("account id malformed")
    return account_id


def _github_profile(provider: Provider, access_token: str, budget: _Budget) -> Profile:
    """`/user` for the identity, `/user/emails` for the primary address and whether GitHub
    has verified it (the public `email` of `/user` may be absent or unverified)."""
    api = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    user = _get(f"{provider.profile_url}/user", access_token, budget, **api)
    emails = _get(f"{provider.profile_url}/user/emails", access_token, budget, **api)
    if not isinstance(user, dict) or not isinstance(emails, list):
        raise TypeError("unexpected GitHub response shape")
    primary = next((e for e in emails if isinstance(e, dict) and e.get("primary") is True), None)
    email = _email(primary.get("email")) if primary else None
    login = _text(user.get("login"), MAX_NAME)
    verified = primary is not None and primary.get("verified") is True
    return Profile(
        account_id=_account_id(user["id"]),
        email=email,
        email_verified=email is not None and verified,
        name=_text(user.get("name"), MAX_NAME) or login or (email or "").partition("@")[0],
        image=_image(user.get("avatar_url")),
    )


def _google_profile(provider: Provider, access_token: str, budget: _Budget) -> Profile:
    """OpenID Connect userinfo: `sub` is the stable identity, `email_verified` Google's word
    on the address."""
    info = _get(provider.profile_url, access_token, budget)
    if not isinstance(info, dict):
        raise TypeError("unexpected userinfo response shape")
    email = _email(info.get("email"))
    verified = info.get("email_verified")
    return Profile(
        account_id=_account_id(info["sub"]),
        email=email,
        email_verified=email is not None and (verified is True or verified == "true"),
        name=_text(info.get("name"), MAX_NAME) or (email or "").partition("@")[0],
        image=_image(info.get("picture")),
    )
