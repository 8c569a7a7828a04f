from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, jsonb_field


class ServerTool(SQLModel, table=True):
    """A tool an upstream server advertised, with a fingerprint of its definition."""

    __tablename__ = "server_tools"
    __table_args__ = (UniqueConstraint("server_id", "name"),)

    id: str = id_field("server_tool")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE")
    server_id: str = fk_field("mcp_servers.id", ondelete="CASCADE", index=False)
    name: str = Field(max_length=255)
    description: str | None = Field(default=None)
    input_schema: dict[str, Any] = jsonb_field()
    fingerprint: str = Field(max_length=64)
    first_fingerprint: str = Field(max_length=64)
    first_seen_at: datetime = created_at_field()
    last_seen_at: datetime = created_at_field()
    changed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
