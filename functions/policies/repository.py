"""Every query of the policies function. Organization-owned reads always take the org id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlmodel import Session, col

from shared.models import McpServer, Policy, ServerTool


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
    if after is not None:
        created_at, server_id = after
        query = query.where(
            or_(
                col(McpServer.created_at) < created_at,
                and_(col(McpServer.created_at) == created_at, col(McpServer.id) < server_id),
            )
        )
    query = query.order_by(col(McpServer.created_at).desc(), col(McpServer.id).desc())
    return list(session.scalars(query.limit(limit + 1)))


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
