from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, id_field, in_check, jsonb_field

BACKUP_STATUSES = ("running", "completed", "failed")


class Backup(SQLModel, table=True):
    """One scheduled backup run; the unique scheduled time makes a retried delivery a no-op."""

    __tablename__ = "backups"
    __table_args__ = (CheckConstraint(in_check("status", BACKUP_STATUSES), name="status"),)

    id: str = id_field("backup")
    scheduled_for: datetime = Field(sa_type=DateTime(timezone=True), unique=True)
    s3_key: str = Field(max_length=1024)
    status: str = Field(default="running", max_length=16)
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    sha256: str | None = Field(default=None, max_length=64)
    manifest: dict[str, Any] = jsonb_field()
    error: str | None = Field(default=None, max_length=2000)
    started_at: datetime = created_at_field()
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
