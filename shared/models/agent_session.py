from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index, text
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, in_check

AGENT_SESSION_STATUSES = ("active", "suspended", "completed")
PRINCIPAL_TYPES = ("api_key", "user")


class AgentSession(SQLModel, table=True):
    """An agent's run against one server; the unit the kill switch suspends."""

    __tablename__ = "agent_sessions"
    __table_args__ = (
        CheckConstraint(in_check("status", AGENT_SESSION_STATUSES), name="status"),
        CheckConstraint(in_check("principal_type", PRINCIPAL_TYPES), name="principal_type"),
        # At most one open (active or suspended) session per (org, server, principal).
        Index(
            "uq_agent_sessions_open_principal",
            "organization_id",
            "server_id",
            "principal_type",
            "principal_id",
            unique=True,
            postgresql_where=text("status IN ('active', 'suspended')"),
        ),
        Index("ix_agent_sessions_organization_id_status", "organization_id", "status"),
    )

    id: str = id_field("agent_session")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE", index=False)
    server_id: str = fk_field("mcp_servers.id", ondelete="CASCADE")
    principal_type: str = Field(max_length=16)
    principal_id: str = Field(max_length=64)
    status: str = Field(default="active", max_length=16)
    tool_calls_count: int = Field(default=0)
    mcp_session_id: str | None = Field(default=None, max_length=255)
    started_at: datetime = created_at_field()
    last_activity_at: datetime = created_at_field()
    completed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    suspended_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    suspended_reason: str | None = Field(default=None, max_length=1000)
    suspended_by: str | None = Field(default=None, max_length=64)
