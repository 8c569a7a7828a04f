from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, jsonb_field


class Policy(SQLModel, table=True):
    """An ordered list of rules for one server (or every server when server_id is NULL)."""

    __tablename__ = "policies"
    __table_args__ = (
        UniqueConstraint("organization_id", "name"),
        CheckConstraint("version >= 1", name="version_positive"),
        # The proxy loads "active policies for (org, server) plus org-wide" in one query.
        Index(
            "ix_policies_organization_id_server_id_priority",
            "organization_id",
            "server_id",
            "priority",
        ),
    )

    id: str = id_field("policy")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE", index=False)
    # RESTRICT: deleting a server that policies point at is refused unless forced, and the
    # forced delete removes the policies in the same transaction (API.md §4).
    server_id: str | None = fk_field("mcp_servers.id", ondelete="RESTRICT", nullable=True)
    name: str = Field(max_length=200)
    priority: int = Field(default=100)
    active: bool = Field(default=True)
    rules: list[dict[str, Any]] = jsonb_field(default_factory=list)
    version: int = Field(default=1)
    created_by: str | None = fk_field("user.id", ondelete="SET NULL", nullable=True)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
