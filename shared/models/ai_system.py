from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index
from sqlalchemy.dialects.postgresql import ARRAY, TEXT
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, fk_field, id_field, in_check, jsonb_field

AI_ROLES = ("provider", "deployer", "importer", "distributor")
RISK_TIERS = ("prohibited", "high", "limited", "minimal")
REGISTRATION_STATUSES = ("not_required", "required", "registered")
MARKET_STATUSES = ("on_market", "no_longer_on_market", "recalled")


class AiSystem(SQLModel, table=True):
    """An entry of the EU AI Act AI-system registry (retired, never erased)."""

    __tablename__ = "ai_systems"
    __table_args__ = (
        CheckConstraint(in_check("role", AI_ROLES), name="role"),
        CheckConstraint(in_check("risk_tier", RISK_TIERS), name="risk_tier"),
        CheckConstraint(
            in_check("registration_status", REGISTRATION_STATUSES), name="registration_status"
        ),
        CheckConstraint(in_check("market_status", MARKET_STATUSES), name="market_status"),
        Index("ix_ai_systems_organization_id_risk_tier", "organization_id", "risk_tier"),
    )

    id: str = id_field("ai_system")
    organization_id: str = fk_field("organization.id", ondelete="RESTRICT", index=False)
    name: str = Field(max_length=300)
    trade_name: str | None = Field(default=None, max_length=300)
    role: str = Field(max_length=16)
    intended_purpose: str = Field()
    description: str = Field()
    annex_iii_area: str | None = Field(default=None, max_length=64)
    prohibited_practice: str | None = Field(default=None, max_length=1)
    gpai: bool = Field(default=False)
    interacts_with_persons: bool = Field(default=False)
    generates_synthetic_content: bool = Field(default=False)
    article6_exemption: dict[str, Any] | None = jsonb_field(nullable=True)
    risk_tier: str = Field(max_length=16)
    obligations: list[dict[str, Any]] = jsonb_field(default_factory=list)
    registration_status: str = Field(default="not_required", max_length=16)
    eu_database_id: str | None = Field(default=None, max_length=128)
    member_states: list[str] = Field(
        default_factory=list,
        sa_type=ARRAY(TEXT),
        sa_column_kwargs={"nullable": False, "server_default": "{}"},
    )
    market_status: str = Field(default="on_market", max_length=32)
    human_oversight: str | None = Field(default=None)
    server_ids: list[str] = Field(
        default_factory=list,
        sa_type=ARRAY(TEXT),
        sa_column_kwargs={"nullable": False, "server_default": "{}"},
    )
    provider: dict[str, Any] = jsonb_field()
    authorised_representative: dict[str, Any] | None = jsonb_field(nullable=True)
    notified_body: dict[str, Any] | None = jsonb_field(nullable=True)
    retired_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_by: str | None = Field(default=None, max_length=64)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
