from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, in_check, jsonb_field

BAA_STATUSES = (
    "draft",
    "pending_signature",
    "partially_signed",
    "fully_executed",
    "expired",
    "terminated",
)


class Baa(SQLModel, table=True):
    """A HIPAA Business Associate Agreement record (retained, never erased)."""

    __tablename__ = "baa"
    __table_args__ = (
        CheckConstraint(in_check("status", BAA_STATUSES), name="status"),
        Index("ix_baa_organization_id_status", "organization_id", "status"),
    )

    id: str = id_field("baa")
    organization_id: str = fk_field("organization.id", ondelete="RESTRICT", index=False)
    covered_entity: str = Field(max_length=500)
    business_associate: str = Field(max_length=500)
    effective_date: date
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    permitted_uses: str = Field()
    safeguards: list[Any] = jsonb_field(default_factory=list)
    server_ids: list[str] = Field(
        default_factory=list,
        sa_type=ARRAY(TEXT),
        sa_column_kwargs={"nullable": False, "server_default": "{}"},
    )
    status: str = Field(default="draft", max_length=32)
    signatures: list[dict[str, Any]] = jsonb_field(default_factory=list)
    terminated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
