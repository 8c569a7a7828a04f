from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Index
from sqlmodel import Field, SQLModel

from shared.models.base import ROLES, created_at_field, fk_field, id_field, in_check

INVITATION_STATUSES = ("pending", "accepted", "rejected", "canceled")


class Invitation(SQLModel, table=True):
    """An invitation to join an organization with a role (expires after 48 h)."""

    __tablename__ = "invitation"
    __table_args__ = (
        CheckConstraint(in_check("role", ROLES), name="role"),
        CheckConstraint(in_check("status", INVITATION_STATUSES), name="status"),
        Index("ix_invitation_organization_id_status", "organization_id", "status"),
    )

    id: str = id_field("invitation")
    organization_id: str = fk_field("organization.id", ondelete="CASCADE", index=False)
    email: str = Field(max_length=320, index=True)
    role: str = Field(max_length=16)
    status: str = Field(default="pending", max_length=16)
    inviter_id: str = fk_field("user.id", ondelete="CASCADE")
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    created_at: datetime = created_at_field()
