from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, id_field, jsonb_field


class Organization(SQLModel, table=True):
    """A tenant. Every governed object belongs to exactly one."""

    __tablename__ = "organization"
    __table_args__ = (CheckConstraint("slug ~ '^[a-z0-9][a-z0-9_-]{1,63}$'", name="slug_format"),)

    id: str = id_field("organization")
    name: str = Field(max_length=200)
    slug: str = Field(max_length=64, unique=True)
    logo: str | None = Field(default=None, max_length=2048)
    metadata_: dict[str, Any] = jsonb_field(name="metadata")
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
