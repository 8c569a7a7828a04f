from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field


class Account(SQLModel, table=True):
    """A way to sign in for a user: `credential` (password) or a social provider."""

    __tablename__ = "account"
    __table_args__ = (UniqueConstraint("provider_id", "account_id"),)

    id: str = id_field("account")
    user_id: str = fk_field("user.id", ondelete="CASCADE")
    provider_id: str = Field(max_length=32)
    account_id: str = Field(max_length=255)
    # argon2id hash (PHC string) for provider `credential`; NULL for social accounts.
    password_hash: str | None = Field(default=None, max_length=255)
    scope: str | None = Field(default=None, max_length=1024)
    # Provider tokens are encrypted with IGRIS_ENCRYPTION_KEY (shared.crypto) when kept at all.
    access_token_encrypted: str | None = Field(default=None)
    refresh_token_encrypted: str | None = Field(default=None)
    access_token_expires_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
