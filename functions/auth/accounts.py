"""Accounts and sessions (Better Auth's core routes): sign-up, sign-in with throttling,
sessions with sliding expiry, password changes. Raises or returns domain errors, writes
audit events, never commits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from functions.auth import repository
from shared import ratelimit
from shared.audit import record_event
from shared.auth import SESSION_ABSOLUTE_TTL, SESSION_REFRESH_AFTER, SESSION_TTL, Principal
from shared.errors import AppError, BadRequest, RateLimited, Unauthorized, Unprocessable
from shared.ids import is_valid_id
from shared.models import Account, User
from shared.models import Session as UserSession
from shared.models.base import utcnow
from shared.security import (
    hash_password,
    needs_rehash,
    new_session_token,
    token_digest,
    verify_password,
)

MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 128
ONE_DAY_SESSION: Final = SESSION_REFRESH_AFTER
# Failed sign-ins: per email and per client address, in fixed 15-minute windows.
THROTTLE_WINDOW_SECONDS: Final = 15 * 60
THROTTLE_PER_EMAIL: Final = 5
THROTTLE_PER_ADDRESS: Final = 20


class PasswordTooShort(BadRequest):
    code = "password_too_short"
    default_message = "Password too short"


class PasswordTooLong(BadRequest):
    code = "password_too_long"
    default_message = "Password too long"


class UserAlreadyExists(Unprocessable):
    code = "user_already_exists"
    default_message = "User already exists. Use another email."


class InvalidEmailOrPassword(Unauthorized):
    code = "invalid_email_or_password"
    default_message = "Invalid email or password"


class InvalidPassword(BadRequest):
    code = "invalid_password"
    default_message = "Invalid password"


class SessionNotFresh(AppError):
    status_code = 403
    code = "session_not_fresh"
    default_message = "Session is not fresh"


@dataclass(frozen=True)
class Client:
    """Where a request came from, recorded on sessions and sign-in events."""

    address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class SignedIn:
    user: User
    session: UserSession
    token: str


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PasswordTooShort()
    if len(password) > MAX_PASSWORD:
        raise PasswordTooLong()


def auth_event(
    session: Session,
    *,
    user_id: str | None,
    operation: str,
    action: str = "log",
    client: Client | None = None,
    **metadata: Any,
) -> None:
    """Record an auth event in every organization the user belongs to (their auditors see
    their members' activity), or in the system chain for users in none and unknown users."""
    if client is not None:
        metadata |= {"clientAddress": client.address, "userAgent": client.user_agent}
    organizations: list[str | None] = list(
        repository.organizations_of(session, user_id) if user_id else []
    )
    for organization_id in organizations or [None]:
        record_event(
            session,
            organization_id=organization_id,
            source="api",
            type="auth",
            action=action,
            actor_type="user" if user_id else "anonymous",
            actor_id=user_id,
            operation=operation,
            metadata=metadata,
        )


def create_session(session: Session, user: User, *, remember: bool, client: Client) -> SignedIn:
    token = new_session_token()
    now = utcnow()
    row = UserSession(
        token_hash=token_digest(token),
        user_id=user.id,
        expires_at=now + (SESSION_TTL if remember else ONE_DAY_SESSION),
        absolute_expires_at=now + SESSION_ABSOLUTE_TTL,
        remember=remember,
        ip_address=(client.address or "")[:64],
        user_agent=(client.user_agent or "")[:512],
    )
    repository.add(session, row)
    return SignedIn(user=user, session=row, token=token)


def sign_up(
    session: Session,
    *,
    name: str,
    email: str,
    password: str,
    image: str | None,
    remember: bool,
    client: Client,
) -> SignedIn:
    check_password_policy(password)
    email = email.strip().lower()
    if repository.find_user_by_email(session, email) is not None:
        raise UserAlreadyExists()
    user = User(name=name, email=email, image=image)
    try:
        with session.begin_nested():  # a concurrent sign-up with the same email loses here
            session.add(user)
            session.flush()
    except IntegrityError:
        raise UserAlreadyExists() from None
    repository.add(
        session,
        Account(
            user_id=user.id,
            provider_id="credential",
            account_id=user.id,
            password_hash=hash_password(password),
        ),
    )
    signed_in = create_session(session, user, remember=remember, client=client)
    auth_event(session, user_id=user.id, operation="auth.signed_up", action="allow", client=client)
    return signed_in


def _throttle_buckets(email: str, client: Client) -> list[str]:
    buckets = ["sign-in:email:" + hashlib.sha256(email.encode()).hexdigest()]
    if client.address:
        buckets.append(f"sign-in:address:{client.address}")
    return buckets


def sign_in(
    session: Session, *, email: str, password: str, remember: bool, client: Client
) -> SignedIn | AppError:
    """A new session, or the refusal to send (returned, not raised, so that the failure
    count and the audit event of a refused attempt are committed)."""
    email = email.strip().lower()
    buckets = _throttle_buckets(email, client)
    wait = ratelimit.exhausted(
        session, buckets[:1], limit=THROTTLE_PER_EMAIL, window_seconds=THROTTLE_WINDOW_SECONDS
    ) or ratelimit.exhausted(
        session, buckets[1:], limit=THROTTLE_PER_ADDRESS, window_seconds=THROTTLE_WINDOW_SECONDS
    )
    if wait is not None:
        return RateLimited(
            "Too many failed sign-in attempts. Try again later.",
            retry_after=wait,
            headers={"X-Retry-After": str(wait)},
        )
    user = repository.find_user_by_email(session, email)
    account = repository.credential_account(session, user.id) if user else None
    password_hash = account.password_hash if account else None
    if user is None or not verify_password(password_hash, password):
        ratelimit.add(session, buckets, window_seconds=THROTTLE_WINDOW_SECONDS)
        auth_event(
            session,
            user_id=user.id if user else None,
            operation="auth.sign_in_failed",
            action="deny",
            client=client,
            **({"email": email} if user else {"emailSha256": buckets[0].rsplit(":", 1)[1]}),
        )
        return InvalidEmailOrPassword()
    if account is not None and password_hash is not None and needs_rehash(password_hash):
        account.password_hash = hash_password(password)
        repository.add(session, account)
    signed_in = create_session(session, user, remember=remember, client=client)
    auth_event(session, user_id=user.id, operation="auth.signed_in", action="allow", client=client)
    return signed_in


def current_session(
    session: Session, token: str, *, allow_refresh: bool
) -> tuple[UserSession, User, bool] | None:
    """The live session for `token` and its user, refreshing the sliding expiry when a day
    has passed (never past the absolute cap). The flag says whether it was refreshed."""
    found = repository.session_with_user(session, token_digest(token))
    if found is None:
        return None
    row, user = found
    now = utcnow()
    refreshed = False
    if allow_refresh and row.remember and now - row.updated_at >= SESSION_REFRESH_AFTER:
        row.expires_at = min(now + SESSION_TTL, row.absolute_expires_at)
        row.updated_at = now
        repository.add(session, row)
        refreshed = True
    return row, user, refreshed


def sign_out(session: Session, token: str | None) -> None:
    """End the presented session if there is one (signing out is always successful)."""
    if token is None:
        return
    found = repository.session_with_user(session, token_digest(token))
    if found is None:
        return
    row, user = found
    repository.delete_sessions(session, user.id, only=row.id)
    auth_event(session, user_id=user.id, operation="auth.signed_out", sessionId=row.id)


def list_sessions(session: Session, principal: Principal) -> list[UserSession]:
    assert principal.session_id is not None
    current = next(
        (
            s
            for s in repository.live_sessions(session, principal.user_id)
            if s.id == principal.session_id
        ),
        None,
    )
    if current is None or utcnow() - current.created_at >= ONE_DAY_SESSION:
        raise SessionNotFresh()
    return repository.live_sessions(session, principal.user_id)


def revoke_session(session: Session, principal: Principal, token_or_id: str) -> bool:
    """Revoke one of the caller's sessions, named by its token or by the id that
    list-sessions returns; anything else is silently ignored (as Better Auth does).
    Returns True when it was the current session."""
    target = token_or_id
    if not is_valid_id("session", token_or_id):
        found = repository.session_with_user(session, token_digest(token_or_id))
        if found is None or found[0].user_id != principal.user_id:
            return False
        target = found[0].id
    if repository.delete_sessions(session, principal.user_id, only=target):
        auth_event(
            session, user_id=principal.user_id, operation="auth.session_revoked", sessionId=target
        )
    return target == principal.session_id


def revoke_sessions(session: Session, principal: Principal, *, keep_current: bool) -> None:
    count = repository.delete_sessions(
        session, principal.user_id, keep=principal.session_id if keep_current else None
    )
    auth_event(
        session,
        user_id=principal.user_id,
        operation="auth.other_sessions_revoked" if keep_current else "auth.sessions_revoked",
        count=count,
    )


def change_password(
    session: Session,
    principal: Principal,
    *,
    current: str,
    new: str,
    revoke_other_sessions: bool,
    client: Client,
) -> tuple[User, SignedIn | None] | AppError:
    """Change the password; with `revoke_other_sessions` every session ends and a new one
    starts. A wrong current password is returned (and counted) like a failed sign-in."""
    user = repository.get_user(session, principal.user_id)
    account = repository.credential_account(session, principal.user_id)
    if user is None or account is None or account.password_hash is None:
        raise BadRequest("Credential account not found", code="credential_account_not_found")
    bucket = [f"change-password:user:{user.id}"]
    wait = ratelimit.exhausted(
        session, bucket, limit=THROTTLE_PER_EMAIL, window_seconds=THROTTLE_WINDOW_SECONDS
    )
    if wait is not None:
        return RateLimited(retry_after=wait, headers={"X-Retry-After": str(wait)})
    if not verify_password(account.password_hash, current):
        ratelimit.add(session, bucket, window_seconds=THROTTLE_WINDOW_SECONDS)
        auth_event(
            session,
            user_id=user.id,
            operation="auth.password_change_failed",
            action="deny",
            client=client,
        )
        return InvalidPassword()
    check_password_policy(new)
    account.password_hash = hash_password(new)
    account.updated_at = utcnow()
    repository.add(session, account)
    replacement = None
    if revoke_other_sessions:
        repository.delete_sessions(session, user.id)
        replacement = create_session(session, user, remember=True, client=client)
    auth_event(
        session,
        user_id=user.id,
        operation="auth.password_changed",
        client=client,
        revokedOtherSessions=revoke_other_sessions,
    )
    return user, replacement


def update_user(session: Session, principal: Principal, *, changes: dict[str, Any]) -> User:
    if "email" in changes:
        raise BadRequest("Email can not be updated", code="email_can_not_be_updated")
    if not changes:
        raise BadRequest("No fields to update", code="no_fields_to_update")
    user = repository.get_user(session, principal.user_id)
    if user is None:
        raise Unauthorized()
    for field, value in changes.items():
        setattr(user, field, value)
    user.updated_at = utcnow()
    repository.add(session, user)
    auth_event(session, user_id=user.id, operation="auth.user_updated", fields=sorted(changes))
    return user
