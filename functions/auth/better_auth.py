"""Better Auth-compatible routes of the auth function (`/api/auth/*` core and bearer plugin).

Bodies and responses follow Better Auth's HTTP API closely enough that its stock client
works unchanged (docs/better-auth-compat.md). Paths, status codes and permissions only: the
rules live in functions/auth/accounts.py.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from functions.auth import accounts
from functions.auth.schemas import (
    ChangePassword,
    RevokeSession,
    SignInEmail,
    SignOut,
    SignUpEmail,
    UpdateUser,
)
from shared.auth import Principal, presented_token, public_guard, signed_in_guard
from shared.better_auth import iso, user_json
from shared.cookies import clear_session_cookie, set_session_cookie
from shared.db import SessionDep
from shared.errors import AppError, Forbidden, error_response
from shared.models import Session as UserSession
from shared.web import is_trusted_origin, request_origin

router = APIRouter(prefix="/api/auth", tags=["auth"])
Public = Depends(public_guard)
SignedIn = Annotated[Principal, Depends(signed_in_guard)]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def client_of(request: Request) -> accounts.Client:
    return accounts.Client(
        address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def session_json(row: UserSession) -> dict[str, Any]:
    """Better Auth's session object. `token` carries the session id: tokens are stored only
    as digests, and revoke-session accepts the id in its place."""
    return {
        "id": row.id,
        "token": row.id,
        "userId": row.user_id,
        "expiresAt": iso(row.expires_at),
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "ipAddress": row.ip_address or "",
        "userAgent": row.user_agent or "",
        "activeOrganizationId": row.active_organization_id,
    }


def require_browser_origin(request: Request) -> None:
    """Login CSRF defence (as Better Auth): a browser sign-in or sign-up (Sec-Fetch-*
    headers present) must name a trusted Origin."""
    headers = {k.lower().encode(): v.encode("latin-1") for k, v in request.headers.items()}
    if not any(name.startswith(b"sec-fetch-") for name in headers):
        return
    if (
        headers.get(b"sec-fetch-site") == b"cross-site"
        and headers.get(b"sec-fetch-mode") == b"navigate"
    ):
        raise AppError(
            "Cross-site navigation login blocked", code="cross_site_navigation_login_blocked"
        )
    origin = request_origin(headers)
    if origin is None:
        raise Forbidden("Missing or null Origin", code="missing_or_null_origin")
    if not is_trusted_origin(origin, request.scope, headers):
        raise Forbidden("Invalid origin", code="invalid_origin")


def signed_in_response(
    body: dict[str, Any], signed_in: accounts.SignedIn, *, remember: bool = True
) -> JSONResponse:
    response = JSONResponse(body)
    set_session_cookie(response, signed_in.token, remember=remember)
    return response


@router.get("/ok", dependencies=[Public])
def ok() -> dict[str, bool]:
    """Liveness, as Better Auth answers it."""
    return {"ok": True}


@router.post("/sign-up/email", dependencies=[Public])
def sign_up(body: SignUpEmail, request: Request, session: SessionDep) -> JSONResponse:
    """Create an account with email and password, and sign it in."""
    require_browser_origin(request)
    signed_in = accounts.sign_up(
        session,
        name=body.name,
        email=str(body.email),
        password=body.password,
        image=body.image,
        remember=body.remember_me,
        client=client_of(request),
    )
    return signed_in_response(
        {"token": signed_in.token, "user": user_json(signed_in.user)},
        signed_in,
        remember=body.remember_me,
    )


@router.post("/sign-in/email", dependencies=[Public])
def sign_in(body: SignInEmail, request: Request, session: SessionDep) -> JSONResponse:
    """Sign in with email and password (failures are throttled per email and address)."""
    require_browser_origin(request)
    outcome = accounts.sign_in(
        session,
        email=body.email,
        password=body.password,
        remember=body.remember_me,
        client=client_of(request),
    )
    if isinstance(outcome, AppError):
        return error_response(request, outcome)
    return signed_in_response(
        {"redirect": False, "token": outcome.token, "user": user_json(outcome.user)},
        outcome,
        remember=body.remember_me,
    )


@router.post("/sign-out", dependencies=[Public])
def sign_out(request: Request, session: SessionDep, body: SignOut | None = None) -> JSONResponse:
    """End the current session; its token stops working at once."""
    accounts.sign_out(session, presented_token(request))
    response = JSONResponse({"success": True})
    clear_session_cookie(response)
    return response


@router.get("/get-session", dependencies=[Public])
def get_session(
    request: Request,
    session: SessionDep,
    disable_refresh: Annotated[str | None, Query(alias="disableRefresh")] = None,
    disable_cookie_cache: Annotated[str | None, Query(alias="disableCookieCache")] = None,
) -> JSONResponse:
    """The current session and user, or null."""
    token = presented_token(request)
    found = (
        accounts.current_session(session, token, allow_refresh=not disable_refresh)
        if token
        else None
    )
    if found is None:
        response = JSONResponse(None, headers=NO_STORE)
        if token is not None:
            clear_session_cookie(response)
        return response
    row, user, refreshed = found
    response = JSONResponse(
        {"session": session_json(row), "user": user_json(user)}, headers=NO_STORE
    )
    if refreshed and token is not None:
        set_session_cookie(response, token)
    return response


@router.get("/list-sessions")
def list_sessions(principal: SignedIn, session: SessionDep) -> list[dict[str, Any]]:
    """The caller's live sessions (needs a session started within the last day)."""
    return [session_json(row) for row in accounts.list_sessions(session, principal)]


@router.post("/revoke-session")
def revoke_session(body: RevokeSession, principal: SignedIn, session: SessionDep) -> JSONResponse:
    """Revoke one of the caller's sessions, by token or by the id list-sessions returns."""
    was_current = accounts.revoke_session(session, principal, body.token)
    response = JSONResponse({"status": True})
    if was_current:
        clear_session_cookie(response)
    return response


@router.post("/revoke-sessions")
def revoke_sessions(principal: SignedIn, session: SessionDep) -> JSONResponse:
    """Revoke every session of the caller, this one included."""
    accounts.revoke_sessions(session, principal, keep_current=False)
    response = JSONResponse({"status": True})
    clear_session_cookie(response)
    return response


@router.post("/revoke-other-sessions")
def revoke_other_sessions(principal: SignedIn, session: SessionDep) -> dict[str, bool]:
    """Revoke every session of the caller except this one."""
    accounts.revoke_sessions(session, principal, keep_current=True)
    return {"status": True}


@router.post("/change-password")
def change_password(
    body: ChangePassword, request: Request, principal: SignedIn, session: SessionDep
) -> JSONResponse:
    """Change the password, optionally ending every other session."""
    outcome = accounts.change_password(
        session,
        principal,
        current=body.current_password,
        new=body.new_password,
        revoke_other_sessions=body.revoke_other_sessions,
        client=client_of(request),
    )
    if isinstance(outcome, AppError):
        return error_response(request, outcome)
    user, replacement = outcome
    response = JSONResponse(
        {"token": replacement.token if replacement else None, "user": user_json(user)}
    )
    if replacement is not None:
        set_session_cookie(response, replacement.token)
    return response


@router.post("/update-user")
def update_user(
    body: UpdateUser, request: Request, principal: SignedIn, session: SessionDep
) -> JSONResponse:
    """Update the caller's name or image."""
    accounts.update_user(
        session, principal, changes=body.model_dump(exclude_unset=True, by_alias=False)
    )
    response = JSONResponse({"status": True})
    token = presented_token(request)
    if token is not None:
        set_session_cookie(response, token)
    return response
