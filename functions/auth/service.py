"""Use cases of the auth function. Raises domain errors, writes audit events, never commits."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from functions.auth import repository
from shared.audit import record_event
from shared.auth import OrgPrincipal
from shared.errors import Forbidden, NotFound, Unprocessable
from shared.models import ApiKey
from shared.models.base import utcnow
from shared.pagination import decode_cursor, page
from shared.permissions import Permission, Role, role_within
from shared.security import API_KEY_START_LENGTH, new_api_key, token_digest


def _admin_event(
    session: Session, principal: OrgPrincipal, operation: str, **metadata: object
) -> None:
    record_event(
        session,
        organization_id=principal.organization_id,
        source="api",
        type="admin",
        action="log",
        actor_type=principal.kind,
        actor_id=principal.principal_id,
        operation=operation,
        metadata=metadata,
    )


def _require_session(principal: OrgPrincipal) -> None:
    # A leaked key must not be able to mint keys that outlive its own revocation.
    if principal.kind != "user":
        raise Forbidden("API keys are managed from a signed-in session.", code="session_required")


def create_api_key(
    session: Session,
    principal: OrgPrincipal,
    *,
    name: str,
    role: Role | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """A new key (role at most the creator's); returns the row and the only copy of the key."""
    _require_session(principal)
    chosen = role or principal.role
    if not role_within(chosen, principal.role):
        raise Forbidden(
            f"A {principal.role} cannot create a key with the {chosen} role.",
            code="role_exceeds_creator",
        )
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise Unprocessable(
                details=[{"field": "expiresAt", "message": "Give a time zone offset."}]
            )
        if expires_at <= utcnow():
            raise Unprocessable(
                details=[{"field": "expiresAt", "message": "Must be in the future."}]
            )
    key = new_api_key()
    row = ApiKey(
        organization_id=principal.organization_id,
        name=name,
        role=chosen.value,
        start=key[:API_KEY_START_LENGTH],
        key_hash=token_digest(key),
        created_by=principal.user_id,
        expires_at=expires_at,
    )
    repository.add(session, row)
    _admin_event(session, principal, "api_key.created", apiKeyId=row.id, role=row.role, name=name)
    return row, key


def list_api_keys(
    session: Session, principal: OrgPrincipal, *, limit: int, cursor: str | None
) -> tuple[list[ApiKey], str | None]:
    """Every key of the organization for owners and admins, else the caller's own."""
    after = decode_cursor(cursor, (datetime.fromisoformat, str))
    rows = repository.list_api_keys(
        session,
        principal.organization_id,
        created_by=None if principal.can(Permission.API_KEYS_ALL) else principal.user_id,
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    return page(rows, limit, lambda key: (key.created_at.isoformat(), key.id))


def revoke_api_key(session: Session, principal: OrgPrincipal, key_id: str) -> None:
    """Revoke (idempotent); another member's key is 404 unless the caller manages all keys."""
    _require_session(principal)
    row = repository.get_api_key(session, principal.organization_id, key_id)
    if row is None or (
        row.created_by != principal.user_id and not principal.can(Permission.API_KEYS_ALL)
    ):
        raise NotFound("No such API key.")
    if row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    repository.add(session, row)
    _admin_event(session, principal, "api_key.revoked", apiKeyId=row.id)
