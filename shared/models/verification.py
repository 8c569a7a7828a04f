from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, id_field


class Verification(SQLModel, table=True):
    """A short-lived secret bound to an identifier (OAuth state + PKCE verifier, ...)."""

    __tablename__ = "verification"

    id: str = id_field("verification")
    identifier: str = Field(max_length=255, unique=True)
    value: str = Field()
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False, index=True)
    created_at: datetime = created_at_field()
