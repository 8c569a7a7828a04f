"""Agent sessions and the kill switch (API.md §4.3): list, read, suspend, resume.
Raises domain errors, writes audit events, never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from functions.policies import repository
from functions.policies.servers import get as get_server
from functions.policies.servers import require_manage
from shared.audit import record_event
from shared.auth import OrgPrincipal
from shared.errors import Conflict, NotFound
from shared.kill_switch import IDLE_COMPLETION, effective_status
from shared.models import AgentSession
from shared.models.base import utcnow
from shared.pagination import decode_cursor, page


class SessionNotActive(Conflict):
    code = "session_not_active"
    default_message = "Only an active session can be suspended."


class SessionNotSuspended(Conflict):
    code = "session_not_suspended"
    default_message = "Only a suspended session can be resumed."


def as_read(row: AgentSession, now: datetime) -> dict[str, Any]:
    """The session as the API shows it, with its effective status."""
    data = row.model_dump()
    data["status"] = effective_status(row.status, row.last_activity_at, now)
    return data


def get(session: Session, principal: OrgPrincipal, agent_session_id: str) -> AgentSession:
    row = repository.get_agent_session(session, principal.organization_id, agent_session_id)
    if row is None:
        raise NotFound("No such agent session.")
    return row


def list_page(
    session: Session,
    principal: OrgPrincipal,
    *,
    status: str | None,
    server_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[AgentSession], str | None]:
    after = decode_cursor(cursor, (datetime.fromisoformat, str))
    rows = repository.list_agent_sessions(
        session,
        principal.organization_id,
        status=status,
        server_id=server_id,
        idle_before=utcnow() - IDLE_COMPLETION,
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    return page(rows, limit, lambda row: (row.started_at.isoformat(), row.id))


def _locked(session: Session, principal: OrgPrincipal, agent_session_id: str) -> AgentSession:
    row = repository.get_agent_session(
        session, principal.organization_id, agent_session_id, for_update=True
    )
    if row is None:
        raise NotFound("No such agent session.")
    require_manage(principal, get_server(session, principal, row.server_id))
    return row


def _event(
    session: Session, principal: OrgPrincipal, row: AgentSession, operation: str, **metadata: Any
) -> None:
    record_event(
        session,
        organization_id=principal.organization_id,
        source="api",
        type="session_update",
        action="log",
        actor_type=principal.kind,
        actor_id=principal.principal_id,
        operation=operation,
        server_id=row.server_id,
        session_id=row.id,
        metadata={"principalType": row.principal_type, "principalId": row.principal_id, **metadata},
    )


def suspend(
    session: Session, principal: OrgPrincipal, agent_session_id: str, *, reason: str
) -> AgentSession:
    """Kill switch: every later call of this session is refused until it is resumed."""
    row = _locked(session, principal, agent_session_id)
    now = utcnow()
    if effective_status(row.status, row.last_activity_at, now) != "active":
        raise SessionNotActive()
    row.status = "suspended"
    row.suspended_at = now
    row.suspended_reason = reason
    row.suspended_by = principal.principal_id
    repository.add(session, row)
    _event(session, principal, row, "session.suspended", reason=reason)
    return row


def resume(session: Session, principal: OrgPrincipal, agent_session_id: str) -> AgentSession:
    row = _locked(session, principal, agent_session_id)
    if row.status != "suspended":
        raise SessionNotSuspended()
    previous_reason = row.suspended_reason
    row.status = "active"
    row.last_activity_at = utcnow()  # a resumed session gets a fresh idle window
    row.suspended_at = row.suspended_reason = row.suspended_by = None
    repository.add(session, row)
    _event(session, principal, row, "session.resumed", suspendedReason=previous_reason)
    return row
