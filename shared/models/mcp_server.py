from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, in_check

AUTH_TYPES = ("none", "bearer", "header")


class McpServer(SQLModel, table=True):
    """An upstream MCP server registered in an organization, reached as /proxy/{slug}."""

    __tablename__ = "mcp_servers"
    __table_args__ = (
        UniqueConstraint("organization_id", "slug"),
        CheckConstraint("slug ~ '^[a-z0-9][a-z0-9_-]{2,63}$'", name="slug_format"),
        CheckConstraint(in_check("auth_type", AUTH_TYPES), name="auth_type"),
        CheckConstraint("anomaly_multiplier > 0", name="anomaly_multiplier_positive"),
    )

    id: str = id_field("mcp_server")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE", index=False)
    name: str = Field(max_length=200)
    slug: str = Field(max_length=64)
    url: str = Field(max_length=2048)
    auth_type: str = Field(default="none", max_length=16)
    auth_header_name: str | None = Field(default=None, max_length=128)
    # AES-256-GCM ciphertext (nonce included) of the upstream credential, and the id of
    # the key that sealed it so keys can rotate. Never returned, never logged.
    credential_ciphertext: bytes | None = Field(default=None)
    credential_key_id: str | None = Field(default=None, max_length=64)
    enabled: bool = Field(default=True)
    data_classes: list[str] = Field(
        default_factory=list,
        sa_type=ARRAY(TEXT),
        sa_column_kwargs={"nullable": False, "server_default": "{}"},
    )
    anomaly_multiplier: float = Field(default=3.0)
    log_arguments: bool = Field(default=False)
    created_by: str | None = fk_field("user.id", ondelete="SET NULL", nullable=True)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
