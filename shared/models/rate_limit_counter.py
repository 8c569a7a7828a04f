from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import id_field


class RateLimitCounter(SQLModel, table=True):
    """One fixed window of one rate-limit bucket, shared by every function instance."""

    __tablename__ = "rate_limit_counters"
    __table_args__ = (UniqueConstraint("bucket", "window_start"),)

    id: str = id_field("rate_limit")
    bucket: str = Field(max_length=300)
    window_start: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    count: int = Field(default=0)
    # When the row stops mattering; expired rows are pruned (shared.ratelimit.prune).
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False, index=True)
