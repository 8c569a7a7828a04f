from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field


class Session(SQLModel, table=True):
    """A signed-in browser or client. Only the SHA-256 digest of the token is stored."""

    __tablename__ = "session"

    id: str = id_field("session")
    token_hash: str = Field(max_length=64, unique=True)
    user_id: str = fk_field("user.id", ondelete="CASCADE")
    active_organization_id: str | None = fk_field(
        "organization.id", ondelete="SET NULL", nullable=True
    )
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False, index=True)
    absolute_expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    # False for `rememberMe: false` sign-ins: one day, never extended, no persistent cookie.
    remember: bool = Field(default=True, sa_column_kwargs={"server_default": "true"})
    ip_address: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
