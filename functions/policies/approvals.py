"""Approvals (API.md §4.4): decide pending approvals bound to one exact tool call.
Raises domain errors, writes audit events, never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from functions.policies import repository
from shared.audit import record_event
from shared.auth import OrgPrincipal
from shared.errors import Conflict, Forbidden, NotFound
from shared.models import Approval
from shared.models.base import utcnow
from shared.pagination import decode_cursor, page


class ApprovalNotPending(Conflict):
    code = "approval_not_pending"
    default_message = "This approval was already decided."


class ApprovalExpired(Conflict):
    code = "approval_expired"
    default_message = "This approval has expired."


def effective_status(row: Approval, now: datetime) -> str:
    return "expired" if row.status == "pending" and row.expires_at <= now else row.status


def as_read(row: Approval, now: datetime) -> dict[str, Any]:
    data = row.model_dump()
    data["status"] = effective_status(row, now)
    return data


def get(session: Session, principal: OrgPrincipal, approval_id: str) -> Approval:
    row = repository.get_approval(session, principal.organization_id, approval_id)
    if row is None:
        raise NotFound("No such approval.")
    return row


def list_page(
    session: Session,
    principal: OrgPrincipal,
    *,
    status: str | None,
    server_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Approval], str | None]:
    after = decode_cursor(cursor, (datetime.fromisoformat, str))
    rows = repository.list_approvals(
        session,
        principal.organization_id,
        status=status,
        server_id=server_id,
        now=utcnow(),
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    return page(rows, limit, lambda row: (row.created_at.isoformat(), row.id))


def decide(
    session: Session,
    principal: OrgPrincipal,
    approval_id: str,
    *,
    approve: bool,
    reason: str | None,
) -> Approval:
    """Approve or reject; never by the principal that asked (the requesting user, or the
    user who created the requesting API key)."""
    row = repository.get_approval(session, principal.organization_id, approval_id, for_update=True)
    if row is None:
        raise NotFound("No such approval.")
    if principal.user_id == row.requester_user_id or principal.principal_id == row.principal_id:
        raise Forbidden("You cannot decide your own request.", code="own_request")
    now = utcnow()
    status = effective_status(row, now)
    if status == "expired":
        raise ApprovalExpired()
    if status != "pending":
        raise ApprovalNotPending()
    row.status = "approved" if approve else "rejected"
    row.decided_by = principal.principal_id
    row.decided_at = now
    row.decision_reason = reason
    repository.add(session, row)
    record_event(
        session,
        organization_id=principal.organization_id,
        source="api",
        type="admin",
        action="log",
        actor_type=principal.kind,
        actor_id=principal.principal_id,
        operation="approval.approved" if approve else "approval.rejected",
        tool_name=row.tool_name,
        server_id=row.server_id,
        session_id=row.agent_session_id,
        policy_id=row.policy_id,
        policy_version=row.policy_version,
        reason=reason,
        metadata={
            "approvalId": row.id,
            "argumentsSha256": row.arguments_digest,
            "principalId": row.principal_id,
        },
    )
    return row
