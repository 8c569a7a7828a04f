from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, id_field


class User(SQLModel, table=True):
    """A person who signs in (Better Auth `user`)."""

    __tablename__ = "user"
    # Emails are unique case-insensitively (lookups use lower(email) too).
    __table_args__ = (Index("uq_user_email_lower", text("lower(email)"), unique=True),)

    id: str = id_field("user")
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    email_verified: bool = Field(default=False)
    image: str | None = Field(default=None, max_length=2048)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
