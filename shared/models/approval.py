from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, in_check

APPROVAL_STATUSES = ("pending", "approved", "rejected", "used")


class Approval(SQLModel, table=True):
    """A pending or decided approval bound to one exact tool call (API.md §4.4)."""

    __tablename__ = "approvals"
    __table_args__ = (
        CheckConstraint(in_check("status", APPROVAL_STATUSES), name="status"),
        Index("ix_approvals_organization_id_status", "organization_id", "status"),
        Index(
            "ix_approvals_call",
            "server_id",
            "principal_type",
            "principal_id",
            "tool_name",
            "arguments_digest",
        ),
    )

    id: str = id_field("approval")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE", index=False)
    server_id: str = fk_field("mcp_servers.id", ondelete="CASCADE", index=False)
    agent_session_id: str | None = fk_field("agent_sessions.id", ondelete="SET NULL", nullable=True)
    tool_name: str = Field(max_length=255)
    arguments_digest: str = Field(max_length=64)
    policy_id: str = Field(max_length=64)
    policy_version: int
    principal_type: str = Field(max_length=16)
    principal_id: str = Field(max_length=64)
    # The user behind the request (the caller, or the API key's creator): never an approver.
    requester_user_id: str | None = Field(default=None, max_length=64)
    status: str = Field(default="pending", max_length=16)
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    decision_reason: str | None = Field(default=None, max_length=1000)
    used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    created_at: datetime = created_at_field()
