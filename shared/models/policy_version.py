from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, id_field, jsonb_field


class PolicyVersion(SQLModel, table=True):
    """An immutable snapshot of a policy at one version.

    No foreign key to `policies`: versions outlive a deleted policy so that every audit
    event's (policyId, policyVersion) can always be resolved.
    """

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("policy_id", "version"),)

    id: str = id_field("policy_version")
    organization_id: str = Field(max_length=64, index=True)
    policy_id: str = Field(max_length=64)
    version: int
    snapshot: dict[str, Any] = jsonb_field()
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = created_at_field()
