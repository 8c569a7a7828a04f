"""Every query of the policies function. Organization-owned reads always take the org id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlmodel import Session, col

from shared.models import AgentSession, Approval, McpServer, Policy, PolicyVersion, ServerTool
from shared.pagination import newest_first


def add(session: Session, row: Any) -> None:
    session.add(row)
    session.flush()


def get_server(session: Session, organization_id: str, server_id: str) -> McpServer | None:
    query = select(McpServer).where(
        col(McpServer.id) == server_id, col(McpServer.organization_id) == organization_id
    )
    return session.scalars(query).first()


def get_server_by_slug(session: Session, organization_id: str, slug: str) -> McpServer | None:
    query = select(McpServer).where(
        col(McpServer.slug) == slug, col(McpServer.organization_id) == organization_id
    )
    return session.scalars(query).first()


def list_servers(
    session: Session, organization_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[McpServer]:
    query = select(McpServer).where(col(McpServer.organization_id) == organization_id)
    query = newest_first(query, col(McpServer.created_at), col(McpServer.id), after, limit)
    return list(session.scalars(query))


def policies_on_server(session: Session, organization_id: str, server_id: str) -> list[Policy]:
    query = select(Policy).where(
        col(Policy.organization_id) == organization_id, col(Policy.server_id) == server_id
    )
    return list(session.scalars(query.order_by(col(Policy.id))))


def delete_policies(session: Session, policy_ids: list[str]) -> None:
    if policy_ids:
        session.execute(delete(Policy).where(col(Policy.id).in_(policy_ids)))


def delete_row(session: Session, row: Any) -> None:
    session.delete(row)
    session.flush()


def server_tools(session: Session, server_id: str) -> list[ServerTool]:
    query = select(ServerTool).where(col(ServerTool.server_id) == server_id)
    return list(session.scalars(query.order_by(col(ServerTool.name))))


def get_agent_session(
    session: Session, organization_id: str, agent_session_id: str, *, for_update: bool = False
) -> AgentSession | None:
    query = select(AgentSession).where(
        col(AgentSession.id) == agent_session_id,
        col(AgentSession.organization_id) == organization_id,
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def list_agent_sessions(
    session: Session,
    organization_id: str,
    *,
    status: str | None,
    server_id: str | None,
    idle_before: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[AgentSession]:
    """Newest first. `status` is the effective one: an active session idle since before
    `idle_before` counts as completed."""
    query = select(AgentSession).where(col(AgentSession.organization_id) == organization_id)
    stored, last_activity = col(AgentSession.status), col(AgentSession.last_activity_at)
    if status == "active":
        query = query.where(stored == "active", last_activity >= idle_before)
    elif status == "completed":
        query = query.where(
            or_(stored == "completed", and_(stored == "active", last_activity < idle_before))
        )
    elif status == "suspended":
        query = query.where(stored == "suspended")
    if server_id is not None:
        query = query.where(col(AgentSession.server_id) == server_id)
    query = newest_first(query, col(AgentSession.started_at), col(AgentSession.id), after, limit)
    return list(session.scalars(query))


def get_approval(
    session: Session, organization_id: str, approval_id: str, *, for_update: bool = False
) -> Approval | None:
    query = select(Approval).where(
        col(Approval.id) == approval_id, col(Approval.organization_id) == organization_id
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def list_approvals(
    session: Session,
    organization_id: str,
    *,
    status: str | None,
    server_id: str | None,
    now: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Approval]:
    """Newest first; a pending approval past its expiry counts as expired."""
    query = select(Approval).where(col(Approval.organization_id) == organization_id)
    stored, expires = col(Approval.status), col(Approval.expires_at)
    if status == "pending":
        query = query.where(stored == "pending", expires > now)
    elif status == "expired":
        query = query.where(stored == "pending", expires <= now)
    elif status is not None:
        query = query.where(stored == status)
    if server_id is not None:
        query = query.where(col(Approval.server_id) == server_id)
    query = newest_first(query, col(Approval.created_at), col(Approval.id), after, limit)
    return list(session.scalars(query))


def get_policy(
    session: Session, organization_id: str, policy_id: str, *, for_update: bool = False
) -> Policy | None:
    query = select(Policy).where(
        col(Policy.id) == policy_id, col(Policy.organization_id) == organization_id
    )
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def policy_name_taken(
    session: Session, organization_id: str, name: str, exclude_id: str | None
) -> bool:
    query = select(col(Policy.id)).where(
        col(Policy.organization_id) == organization_id, col(Policy.name) == name
    )
    with session.no_autoflush:
        found = session.scalars(query).first()
    return found is not None and found != exclude_id


def list_policies(
    session: Session,
    organization_id: str,
    *,
    server_id: str | None,
    active: bool | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Policy]:
    query = select(Policy).where(col(Policy.organization_id) == organization_id)
    if server_id is not None:
        query = query.where(col(Policy.server_id) == server_id)
    if active is not None:
        query = query.where(col(Policy.active).is_(active))
    query = newest_first(query, col(Policy.created_at), col(Policy.id), after, limit)
    return list(session.scalars(query))


def policy_versions(
    session: Session, organization_id: str, policy_id: str, *, version: int | None = None
) -> list[PolicyVersion]:
    query = select(PolicyVersion).where(
        col(PolicyVersion.organization_id) == organization_id,
        col(PolicyVersion.policy_id) == policy_id,
    )
    if version is not None:
        query = query.where(col(PolicyVersion.version) == version)
    return list(session.scalars(query.order_by(col(PolicyVersion.version).desc())))
