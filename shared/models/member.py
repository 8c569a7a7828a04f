from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import ROLES, created_at_field, fk_field, id_field, in_check


class Member(SQLModel, table=True):
    """A user's membership and role in one organization."""

    __tablename__ = "member"
    __table_args__ = (
        UniqueConstraint("organization_id", "user_id"),
        CheckConstraint(in_check("role", ROLES), name="role"),
    )

    id: str = id_field("member")
    # The unique (organization_id, user_id) index serves lookups by organization.
    organization_id: str = fk_field("organization.id", ondelete="CASCADE", index=False)
    user_id: str = fk_field("user.id", ondelete="CASCADE")
    role: str = Field(max_length=16)
    created_at: datetime = created_at_field()
