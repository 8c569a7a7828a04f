from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime
from sqlmodel import Field, SQLModel

from shared.models.base import ROLES, created_at_field, fk_field, id_field, in_check


class ApiKey(SQLModel, table=True):
    """An organization API key (`ig_…`). Only its SHA-256 digest is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(in_check("role", ROLES), name="role"),)

    id: str = id_field("api_key")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE")
    name: str = Field(max_length=200)
    role: str = Field(max_length=16)
    start: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    created_by: str = fk_field("user.id", ondelete="CASCADE")
    expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_used_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = created_at_field()
