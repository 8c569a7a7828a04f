"""Every query of the proxy function. Organization-owned reads always take the org id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import any_, func, literal, select, text
from sqlmodel import Session, col

from shared.models import AgentSession, AiSystem, Approval, Baa, McpServer, ServerTool


def add(session: Session, row: Any) -> None:
    session.add(row)
    session.flush()


def server_by_slug(session: Session, organization_id: str, slug: str) -> McpServer | None:
    query = select(McpServer).where(
        col(McpServer.organization_id) == organization_id, col(McpServer.slug) == slug
    )
    return session.scalars(query).first()


def open_agent_session(
    session: Session,
    organization_id: str,
    server_id: str,
    principal_type: str,
    principal_id: str,
) -> AgentSession | None:
    """The (at most one) active or suspended session, locked for this transaction."""
    query = (
        select(AgentSession)
        .where(
            col(AgentSession.organization_id) == organization_id,
            col(AgentSession.server_id) == server_id,
            col(AgentSession.principal_type) == principal_type,
            col(AgentSession.principal_id) == principal_id,
            col(AgentSession.status).in_(("active", "suspended")),
        )
        .with_for_update()
    )
    return session.scalars(query).first()


def active_baa_covers(
    session: Session, organization_id: str, server_id: str, now: datetime
) -> bool:
    query = (
        select(func.count())
        .select_from(Baa)
        .where(
            col(Baa.organization_id) == organization_id,
            col(Baa.status) == "fully_executed",
            (col(Baa.expires_at).is_(None)) | (col(Baa.expires_at) > now),
            literal(server_id) == any_(col(Baa.server_ids)),
        )
    )
    return bool(session.scalar(query))


def usable_approval(
    session: Session,
    *,
    organization_id: str,
    server_id: str,
    tool: str,
    digest: str,
    principal_type: str,
    principal_id: str,
    policy_id: str,
    policy_version: int,
    now: datetime,
    status: str,
) -> Approval | None:
    query = (
        select(Approval)
        .where(
            col(Approval.organization_id) == organization_id,
            col(Approval.server_id) == server_id,
            col(Approval.tool_name) == tool,
            col(Approval.arguments_digest) == digest,
            col(Approval.principal_type) == principal_type,
            col(Approval.principal_id) == principal_id,
            col(Approval.policy_id) == policy_id,
            col(Approval.policy_version) == policy_version,
            col(Approval.status) == status,
            col(Approval.expires_at) > now,
        )
        .order_by(col(Approval.created_at))
        .with_for_update()
    )
    return session.scalars(query).first()


def server_tools(session: Session, server_id: str) -> list[ServerTool]:
    query = select(ServerTool).where(col(ServerTool.server_id) == server_id)
    return list(session.scalars(query))


def ai_systems_for_server(session: Session, organization_id: str, server_id: str) -> list[str]:
    """Live AI systems whose registry entry lists this server (EU AI Act Art. 12 logging)."""
    query = select(col(AiSystem.id)).where(
        col(AiSystem.organization_id) == organization_id,
        col(AiSystem.retired_at).is_(None),
        literal(server_id) == any_(col(AiSystem.server_ids)),
    )
    return sorted(session.scalars(query))


_WINDOW_COUNTS = text(
    """
    SELECT window_start, count FROM rate_limit_counters
    WHERE bucket = :bucket AND window_start >= :since AND window_start < :current
    """
)


def previous_window_counts(
    session: Session, bucket: str, since: datetime, current: datetime
) -> list[int]:
    return [
        int(count)
        for _start, count in session.execute(
            _WINDOW_COUNTS, {"bucket": bucket, "since": since, "current": current}
        )
    ]
