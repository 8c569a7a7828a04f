"""Who is calling: principal resolution and the permission dependencies every route uses.

A caller is a session (cookie `igris.session_token` or `Authorization: Bearer <token>`) or
an API key (`Authorization: Bearer ig_…`). Each is resolved with one indexed query; a
malformed API key is refused without touching the database. Routes declare exactly one of
`requires(permission)`, `signed_in` or `public` (tests/test_permissions.py walks them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, Request
from sqlalchemy import text
from sqlmodel import Session

from shared.cookies import SESSION_COOKIE, bearer_token, unsign
from shared.db import SessionDep
from shared.errors import Forbidden, Unauthorized
from shared.models.base import utcnow
from shared.permissions import Permission, Role, has_permission
from shared.security import is_api_key, looks_like_api_key, token_digest

SESSION_TTL: Final = timedelta(days=7)
SESSION_REFRESH_AFTER: Final = timedelta(days=1)
SESSION_ABSOLUTE_TTL: Final = timedelta(days=30)
API_KEY_TOUCH_INTERVAL: Final = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller and the organization it acts in."""

    kind: Literal["user", "api_key"]
    user_id: str  # the signed-in user, or the user who created the API key
    organization_id: str | None
    role: Role | None
    session_id: str | None = None
    api_key_id: str | None = None

    @property
    def principal_id(self) -> str:
        """The id an agent session or approval is bound to: the API key, else the user."""
        return self.api_key_id or self.user_id

    def can(self, permission: Permission) -> bool:
        return self.role is not None and has_permission(self.role, permission)


@dataclass(frozen=True)
class OrgPrincipal(Principal):
    """A principal acting inside an organization (every /api/v1 route gets one)."""

    organization_id: str
    role: Role


_SESSION_QUERY = text(
    """
    SELECT s.id, s.user_id, s.active_organization_id, s.updated_at, s.remember, m.role
    FROM session s
    LEFT JOIN member m
      ON m.organization_id = s.active_organization_id AND m.user_id = s.user_id
    WHERE s.token_hash = :digest AND s.expires_at > now()
    """
)
_SESSION_REFRESH = text(
    """
    UPDATE session
    SET expires_at = LEAST(now() + make_interval(secs => :ttl), absolute_expires_at),
        updated_at = now()
    WHERE id = :id
    """
)
# A key works only while its creator is still a member of the key's organization.
_API_KEY_QUERY = text(
    """
    SELECT k.id, k.organization_id, k.role, k.created_by, k.last_used_at
    FROM api_keys k
    JOIN member m ON m.organization_id = k.organization_id AND m.user_id = k.created_by
    WHERE k.key_hash = :digest
      AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now())
    """
)
_API_KEY_TOUCH = text(
    """
    UPDATE api_keys SET last_used_at = now()
    WHERE id = :id AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
    """
)


def presented_token(request: Request) -> str | None:
    """The credential the request carries: an API key or a session token.

    `Authorization: Bearer` wins over the cookie. A session token may come raw or signed
    (`token.signature`); the cookie must be signed. A signature that does not verify counts
    as no credential at all.
    """
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        credential = value.strip()
        return credential if looks_like_api_key(credential) else bearer_token(credential)
    cookie = request.cookies.get(SESSION_COOKIE)
    return unsign(cookie) if cookie else None


def resolve_session(session: Session, token: str) -> Principal | None:
    """A live session's principal (refreshing its sliding expiry at most once a day)."""
    row = session.execute(_SESSION_QUERY, {"digest": token_digest(token)}).first()
    if row is None:
        return None
    if row.remember and utcnow() - row.updated_at > SESSION_REFRESH_AFTER:
        session.execute(_SESSION_REFRESH, {"id": row.id, "ttl": SESSION_TTL.total_seconds()})
    return Principal(
        kind="user",
        user_id=row.user_id,
        organization_id=row.active_organization_id if row.role else None,
        role=Role(row.role) if row.role else None,
        session_id=row.id,
    )


def resolve_api_key(session: Session, key: str) -> Principal | None:
    """A valid key's principal; malformed keys never reach the database."""
    if not is_api_key(key):
        return None
    row = session.execute(_API_KEY_QUERY, {"digest": token_digest(key)}).first()
    if row is None:
        return None
    last_used: datetime | None = row.last_used_at
    if last_used is None or utcnow() - last_used > API_KEY_TOUCH_INTERVAL:
        session.execute(_API_KEY_TOUCH, {"id": row.id})
    return Principal(
        kind="api_key",
        user_id=row.created_by,
        organization_id=row.organization_id,
        role=Role(row.role),
        api_key_id=row.id,
    )


def resolve_principal(session: Session, request: Request) -> Principal | None:
    token = presented_token(request)
    if token is None:
        return None
    if looks_like_api_key(token):
        return resolve_api_key(session, token)
    return resolve_session(session, token)


# "inline": the route authenticates and checks `permission` itself, inside transactions it
# controls (the proxy must not hold one across the upstream call); the dependency only
# declares the rule so that every route still states exactly one.
GuardKind = Literal["permission", "signed_in", "public", "inline"]


class Guard:
    """A route's access rule; FastAPI calls it as a dependency. `kind`/`permission` let the
    route-walking test see which rule each route declared."""

    def __init__(self, kind: GuardKind, permission: Permission | None = None) -> None:
        self.kind = kind
        self.permission = permission

    def __call__(self, request: Request, session: SessionDep) -> Any:
        if self.kind == "public":
            return None
        principal = resolve_principal(session, request)
        if principal is None:
            raise Unauthorized()
        if self.kind == "signed_in":
            # Account and organization routes act for a person: an API key never signs in.
            if principal.kind != "user":
                raise Forbidden(
                    "This route needs a signed-in session, not an API key.",
                    code="session_required",
                )
            return principal
        if principal.organization_id is None or principal.role is None:
            raise Forbidden("Select an active organization first.", code="no_active_organization")
        assert self.permission is not None
        if not principal.can(self.permission):
            raise Forbidden()
        return OrgPrincipal(
            kind=principal.kind,
            user_id=principal.user_id,
            organization_id=principal.organization_id,
            role=principal.role,
            session_id=principal.session_id,
            api_key_id=principal.api_key_id,
        )

    def __repr__(self) -> str:
        return f"Guard({self.kind}, {self.permission})"


_GUARDS: dict[Permission, Guard] = {}


def requires(permission: Permission) -> Callable[..., Any]:
    """Dependency: an authenticated principal in an organization, holding `permission`."""
    return _GUARDS.setdefault(permission, Guard("permission", permission))


class InlineGuard(Guard):
    """The declaration of a route that enforces `permission` itself (see GuardKind). It
    takes no database session, so none is opened for the request."""

    def __init__(self, permission: Permission) -> None:
        super().__init__("inline", permission)

    def __call__(self) -> None:  # type: ignore[override]
        return None


signed_in_guard = Guard("signed_in")
public_guard = Guard("public")

SignedIn = Annotated[Principal, Depends(signed_in_guard)]
Public = Annotated[None, Depends(public_guard)]
