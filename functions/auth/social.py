"""Social sign-in with GitHub and Google: Better Auth's `POST /sign-in/social` and
`GET /callback/:provider` (docs/better-auth-compat.md §2, §7), router and service.

- Authorization code flow with PKCE (S256) for both providers. The `state` carries 256
  random bits, is single use, expires after 10 minutes and is bound to the browser that
  started the flow by the signed `igris.state` cookie (a callback without that cookie is
  refused, which stops login CSRF). Its server-side half (PKCE verifier, redirect_uri,
  callback URLs) is a `verification` row keyed by the state's SHA-256 digest, so reading
  the table yields no usable state.
- Linking follows Better Auth 1.7.25 with its defaults: a known (provider, account id)
  signs in its user; otherwise a user with the same email is linked only when the provider
  has verified the address *and* so has Igris (`requireLocalEmailVerified`), else
  `account_not_linked`: linking on an unproven address would hand the account to whoever
  registered that address first. Otherwise a user is created, but only for an address the
  provider has verified (`email_not_verified`, as Better Auth with `requireEmailVerification`),
  because invitations are accepted by email.
- Provider access and refresh tokens are used once, to read the profile, and never stored:
  Igris needs the identity, not API access to the user's GitHub or Google account.
- Every callback failure is a 302 to the flow's error URL with `?error=<code>` (Better
  Auth's codes) and creates no session. Failures of a flow that was really started are
  audited as `auth.sign_in_failed`; a callback naming no known state is only logged (it is
  not a sign-in attempt on anything, and unauthenticated requests must not be able to
  write into the audit chain at will).
"""

from __future__ import annotations

import html
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from functions.auth import accounts, oauth, repository
from functions.auth.better_auth import NO_STORE, Public, client_of
from shared.config import get_settings
from shared.cookies import set_session_cookie, sign, unsign
from shared.db import SessionDep
from shared.errors import Forbidden, NotFound
from shared.logs import logger
from shared.models import Account, User, Verification
from shared.models.base import utcnow
from shared.schemas import ApiModel
from shared.security import constant_time_equal, token_digest
from shared.web import is_trusted_origin, origin_of, own_origin

router = APIRouter(prefix="/api/auth", tags=["auth"])

STATE_COOKIE: Final = "igris.state"
STATE_COOKIE_MAX_AGE: Final = 300
STATE_TTL: Final = timedelta(minutes=10)
STATE_PREFIX: Final = "oauth-state:"
STATE_BYTES: Final = 32  # 256 bits
CODE_VERIFIER_BYTES: Final = 64  # 86 characters (RFC 7636 allows 43 to 128)
MAX_STATE_LENGTH: Final = 128
SWEEP_LIMIT: Final = 100
DEFAULT_CALLBACK_URL: Final = "/"
MAX_DESCRIPTION: Final = 200
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ENCODED_SEPARATOR = re.compile(r"%2f|%5c", re.IGNORECASE)
# Characters left as they are when a redirect target goes into a Location header (as
# Starlette's RedirectResponse does); anything else, non-ASCII included, is %-encoded.
_LOCATION_SAFE = ":/%#?=@[]!$&'()*+,;~"


class ProviderNotFound(NotFound):
    code = "provider_not_found"
    default_message = "Provider not found"


class SignInSocial(ApiModel):
    """Better Auth's `signIn.social` body (the `idToken` variant is not supported)."""

    provider: str = Field(min_length=1, max_length=64)
    callback_url: str | None = Field(default=None, alias="callbackURL", max_length=2048)
    new_user_callback_url: str | None = Field(
        default=None, alias="newUserCallbackURL", max_length=2048
    )
    error_callback_url: str | None = Field(default=None, alias="errorCallbackURL", max_length=2048)
    disable_redirect: bool | None = None
    login_hint: str | None = Field(default=None, max_length=320)
    # Accepted for compatibility; signing up through a provider is always allowed.
    request_sign_up: bool | None = None


@dataclass(frozen=True)
class Flow:
    """The server-side half of a sign-in in progress (stored in `verification.value`)."""

    provider: str
    code_verifier: str
    redirect_uri: str
    callback_url: str
    error_url: str | None
    new_user_url: str | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "provider": self.provider,
                "codeVerifier": self.code_verifier,
                "redirectURI": self.redirect_uri,
                "callbackURL": self.callback_url,
                "errorURL": self.error_url,
                "newUserURL": self.new_user_url,
            }
        )

    @classmethod
    def from_json(cls, value: str) -> Flow | None:
        try:
            data = json.loads(value)
            flow = cls(
                provider=data["provider"],
                code_verifier=data["codeVerifier"],
                redirect_uri=data["redirectURI"],
                callback_url=data["callbackURL"],
                error_url=data.get("errorURL"),
                new_user_url=data.get("newUserURL"),
            )
        except (ValueError, KeyError, TypeError):
            return None
        required = (flow.provider, flow.code_verifier, flow.redirect_uri, flow.callback_url)
        optional = (flow.error_url, flow.new_user_url)
        if not all(isinstance(v, str) for v in required) or not all(
            v is None or isinstance(v, str) for v in optional
        ):
            return None
        return flow


@dataclass(frozen=True)
class Failure:
    """A failed callback: where the browser goes, with which Better Auth error code."""

    code: str
    error_url: str
    description: str | None = None
    user_id: str | None = None
    audited: bool = True

    def location(self) -> str:
        params = {"error": self.code}
        if self.description:
            params["error_description"] = self.description
        return oauth.with_query(self.error_url, params)


# --- redirect targets ---------------------------------------------------------------------


def _headers(request: Request) -> dict[bytes, bytes]:
    return dict(request.scope.get("headers") or [])


def base_url(request: Request) -> str:
    """The API's public origin: IGRIS_BASE_URL, else the origin this request reached."""
    configured = get_settings().base_url
    if configured and configured.strip():
        return configured.strip().rstrip("/")
    return own_origin(request.scope, _headers(request))


def is_safe_relative_url(url: str) -> bool:
    """A path on this origin that no browser or router reads as another origin (as Better
    Auth's `isSafeRelativeURL`): no `//`, no backslash, no control or encoded separators."""
    if not url.startswith("/") or url.startswith("//") or "\\" in url or _CONTROL.search(url):
        return False
    path = re.split(r"[?#]", url, maxsplit=1)[0]
    return _ENCODED_SEPARATOR.search(path) is None


def is_allowed_redirect(url: str, request: Request) -> bool:
    """A relative path, or an http(s) URL on a trusted origin (the API's own, IGRIS_BASE_URL's
    or one of IGRIS_TRUSTED_ORIGINS)."""
    if url.startswith("/"):
        return is_safe_relative_url(url)
    if _CONTROL.search(url) or "\\" in url:
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return False
    if parts.username is not None or parts.password is not None:
        return False
    origin = origin_of(url)
    return is_trusted_origin(origin, request.scope, _headers(request)) or origin == origin_of(
        base_url(request)
    )


def _check_redirect(url: str | None, label: str, code: str, request: Request) -> None:
    if url and not is_allowed_redirect(url, request):
        raise Forbidden(f"Invalid {label}", code=code)


def _location(url: str) -> str:
    return quote(url, safe=_LOCATION_SAFE)


# --- the state cookie ---------------------------------------------------------------------


def set_state_cookie(response: Response, state: str) -> None:
    response.set_cookie(
        STATE_COOKIE,
        quote(sign(state), safe=""),
        max_age=STATE_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=not get_settings().is_local,
    )


def clear_state_cookie(response: Response) -> None:
    response.set_cookie(
        STATE_COOKIE,
        "",
        max_age=0,
        path="/",
        httponly=True,
        samesite="lax",
        secure=not get_settings().is_local,
    )


def _identifier(state: str) -> str:
    return STATE_PREFIX + token_digest(state)


# --- service ------------------------------------------------------------------------------


def start(
    session: Session,
    provider: oauth.Provider,
    *,
    redirect_uri: str,
    callback_url: str,
    error_url: str | None,
    new_user_url: str | None,
    login_hint: str | None,
) -> tuple[str, str]:
    """Record a new flow; returns its state and the provider URL to send the browser to."""
    repository.delete_expired_verifications(session, STATE_PREFIX, limit=SWEEP_LIMIT)
    state = secrets.token_urlsafe(STATE_BYTES)
    flow = Flow(
        provider=provider.id,
        code_verifier=secrets.token_urlsafe(CODE_VERIFIER_BYTES),
        redirect_uri=redirect_uri,
        callback_url=callback_url,
        error_url=error_url,
        new_user_url=new_user_url,
    )
    repository.add(
        session,
        Verification(
            identifier=_identifier(state), value=flow.to_json(), expires_at=utcnow() + STATE_TTL
        ),
    )
    url = oauth.authorization_url(
        provider,
        state=state,
        code_verifier=flow.code_verifier,
        redirect_uri=redirect_uri,
        login_hint=login_hint,
    )
    return state, url


def take_state(
    session: Session,
    provider_id: str,
    *,
    state: str | None,
    cookie: str | None,
    default_error_url: str,
) -> Flow | Failure:
    """The flow `state` names, used up; or why the callback cannot continue. The state must
    be known, match the browser's signed cookie, be unexpired and belong to this provider.
    A cookie mismatch leaves the state in place, so a forged callback cannot cancel the
    browser's real sign-in."""
    if not state:
        return Failure("state_not_found", default_error_url, audited=False)
    found = (
        repository.find_verification(session, _identifier(state))
        if len(state) <= MAX_STATE_LENGTH
        else None
    )
    flow = Flow.from_json(found.value) if found is not None else None
    if found is None or flow is None:
        return Failure("state_mismatch", default_error_url, audited=False)
    error_url = flow.error_url or default_error_url
    presented = unsign(cookie) if cookie else None
    if presented is None or not constant_time_equal(presented, state):
        return Failure("state_mismatch", error_url)
    if not repository.delete_verification(session, found.id):
        return Failure("state_mismatch", error_url)  # a concurrent callback used it first
    if found.expires_at <= utcnow() or flow.provider != provider_id:
        return Failure("state_mismatch", error_url)
    return flow


def _provider_error(code: str, description: str | None) -> tuple[str, str | None]:
    """The provider's `error` and `error_description`, passed on only when well-formed."""
    safe_code = code if _ERROR_CODE.fullmatch(code) else "invalid_callback_request"
    text = _CONTROL.sub("", description or "")[:MAX_DESCRIPTION]
    return safe_code, text or None


def finish(
    session: Session,
    flow: Flow,
    *,
    code: str | None,
    error: str | None,
    error_description: str | None,
    error_url: str,
    client: accounts.Client,
) -> tuple[accounts.SignedIn, bool] | Failure:
    """Exchange the code, read the profile and sign its user in; True when the user is new.
    The provider calls come first, before this transaction touches the database."""
    if error:
        safe_code, description = _provider_error(error, error_description)
        return Failure(safe_code, error_url, description=description)
    if not code:
        return Failure("no_code", error_url)
    provider = oauth.configured_provider(flow.provider)
    if provider is None:
        return Failure("oauth_provider_not_found", error_url)
    try:
        grant = oauth.sign_in_grant(
            provider, code=code, code_verifier=flow.code_verifier, redirect_uri=flow.redirect_uri
        )
    except oauth.OAuthError as exc:
        return Failure(exc.code, error_url)
    if grant.profile.email is None:
        return Failure("email_not_found", error_url)
    return link_or_create(session, provider.id, grant, client=client, error_url=error_url)


def link_or_create(
    session: Session,
    provider_id: str,
    grant: oauth.Grant,
    *,
    client: accounts.Client,
    error_url: str,
) -> tuple[accounts.SignedIn, bool] | Failure:
    """Sign in the user the provider identity belongs to, linking or creating it (rules in
    the module docstring). All or nothing: a failure leaves no user, account or session."""
    profile = grant.profile
    email = profile.email
    assert email is not None
    now = utcnow()
    is_new = linked = False
    failure_code = "unable_to_link_account"
    try:
        with session.begin_nested():
            found = repository.account_with_user(session, provider_id, profile.account_id)
            if found is not None:
                # As Better Auth, the scope of a linked account is not rewritten on sign-in
                # (and no tokens are kept, so there is nothing else to refresh).
                _, user = found
            else:
                existing = repository.find_user_by_email(session, email)
                if existing is not None:
                    if not (profile.email_verified and existing.email_verified):
                        return Failure("account_not_linked", error_url, user_id=existing.id)
                    user, linked = existing, True
                else:
                    if not profile.email_verified:
                        return Failure("email_not_verified", error_url)
                    failure_code = "unable_to_create_user"
                    user = User(
                        name=profile.name,
                        email=email,
                        email_verified=True,
                        image=profile.image,
                    )
                    repository.add(session, user)
                    is_new = True
                repository.add(
                    session,
                    Account(
                        user_id=user.id,
                        provider_id=provider_id,
                        account_id=profile.account_id,
                        scope=grant.scope,
                    ),
                )
            if profile.email_verified and not user.email_verified and user.email.lower() == email:
                user.email_verified = True
                user.updated_at = now
                repository.add(session, user)
            signed_in = accounts.create_session(session, user, remember=True, client=client)
    except IntegrityError:
        # A concurrent sign-in created the same user or linked the same account first.
        return Failure(failure_code, error_url)
    if is_new:
        accounts.auth_event(
            session,
            user_id=user.id,
            operation="auth.signed_up",
            action="allow",
            client=client,
            provider=provider_id,
        )
    if linked:
        accounts.auth_event(
            session,
            user_id=user.id,
            operation="auth.account_linked",
            client=client,
            provider=provider_id,
        )
    accounts.auth_event(
        session,
        user_id=user.id,
        operation="auth.signed_in",
        action="allow",
        client=client,
        provider=provider_id,
        newUser=is_new,
    )
    return signed_in, is_new


def record_failure(
    session: Session, failure: Failure, *, provider_id: str, client: accounts.Client
) -> None:
    # The path segment is the caller's to choose: only a known provider name is recorded.
    provider_id = provider_id if provider_id in oauth.PROVIDERS else "unknown"
    if not failure.audited:
        logger.warning(
            "social callback without a known state",
            extra={"provider": provider_id, "error": failure.code},
        )
        return
    accounts.auth_event(
        session,
        user_id=failure.user_id,
        operation="auth.sign_in_failed",
        action="deny",
        client=client,
        provider=provider_id,
        error=failure.code,
    )


# --- routes -------------------------------------------------------------------------------


def _redirect(url: str) -> Response:
    """302 with an empty body, as Better Auth answers a callback; the state cookie goes."""
    response = Response(status_code=302, headers={"Location": _location(url), **NO_STORE})
    clear_state_cookie(response)
    return response


@router.post("/sign-in/social", dependencies=[Public])
def sign_in_social(body: SignInSocial, request: Request, session: SessionDep) -> JSONResponse:
    """Start a GitHub or Google sign-in: the provider URL to send the browser to."""
    _check_redirect(body.callback_url, "callbackURL", "invalid_callback_url", request)
    _check_redirect(
        body.error_callback_url, "errorCallbackURL", "invalid_error_callback_url", request
    )
    _check_redirect(
        body.new_user_callback_url, "newUserCallbackURL", "invalid_new_user_callback_url", request
    )
    provider = oauth.configured_provider(body.provider)
    if provider is None:
        raise ProviderNotFound()
    state, url = start(
        session,
        provider,
        redirect_uri=f"{base_url(request)}/api/auth/callback/{provider.id}",
        callback_url=body.callback_url or DEFAULT_CALLBACK_URL,
        error_url=body.error_callback_url or None,
        new_user_url=body.new_user_callback_url or None,
        login_hint=body.login_hint,
    )
    redirect = not body.disable_redirect
    response = JSONResponse({"url": url, "redirect": redirect}, headers=NO_STORE)
    if redirect:
        response.headers["Location"] = _location(url)
    set_state_cookie(response, state)
    return response


@router.get("/callback/{provider}", dependencies=[Public], status_code=302)
def callback(
    provider: str,
    request: Request,
    session: SessionDep,
    *,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    """Finish a social sign-in: check the state, exchange the code, sign the user in."""
    client = client_of(request)
    default_error_url = f"{base_url(request)}/api/auth/error"
    flow = take_state(
        session,
        provider,
        state=state,
        cookie=request.cookies.get(STATE_COOKIE),
        default_error_url=default_error_url,
    )
    if isinstance(flow, Failure):
        record_failure(session, flow, provider_id=provider, client=client)
        return _redirect(flow.location())
    # The state is now used up whatever happens next, and no transaction (no pooled server
    # connection) stays open while the provider takes its time answering.
    session.commit()
    outcome = finish(
        session,
        flow,
        code=code,
        error=error,
        error_description=error_description,
        error_url=flow.error_url or default_error_url,
        client=client,
    )
    if isinstance(outcome, Failure):
        record_failure(session, outcome, provider_id=provider, client=client)
        return _redirect(outcome.location())
    signed_in, is_new = outcome
    response = _redirect((flow.new_user_url or flow.callback_url) if is_new else flow.callback_url)
    set_session_cookie(response, signed_in.token)
    return response


def _error_page(code: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>Sign-in failed</title></head><body><h1>Sign-in failed</h1>"
        f"<p>Error: <code>{html.escape(code)}</code></p>"
        "<p>Go back to the application and try again.</p></body></html>"
    )


@router.get("/error", dependencies=[Public], response_class=HTMLResponse)
def error_page(error: str | None = None) -> HTMLResponse:
    """The default landing page of a failed social sign-in (HTML, as Better Auth's)."""
    code = error if error and _ERROR_CODE.fullmatch(error) else "unknown_error"
    return HTMLResponse(
        _error_page(code),
        headers={"Content-Security-Policy": "default-src 'none'", **NO_STORE},
    )
