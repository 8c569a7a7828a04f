from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from shared.models.base import created_at_field, id_field, in_check, jsonb_field

SOURCES = ("proxy", "api", "portkey", "helicone", "cloudflare", "raw", "system")
EVENT_TYPES = (
    "tool_call",
    "anomaly",
    "session_update",
    "admin",
    "auth",
    "completion",
    "embedding",
    "custom",
)
ACTIONS = ("allow", "deny", "alert", "redact", "require_approval", "log")
ACTOR_TYPES = ("user", "api_key", "system", "anonymous")
SYSTEM_CHAIN = "system"


class AuditEvent(SQLModel, table=True):
    """One link of an organization's append-only, hash-chained audit trail.

    Written only through `shared.audit.record_event`. The database refuses UPDATE, DELETE
    and TRUNCATE (grants and triggers, see the initial migration). No foreign keys: the
    trail outlives whatever it describes, including a deleted organization.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "seq"),
        CheckConstraint(in_check("source", SOURCES), name="source"),
        CheckConstraint(in_check("type", EVENT_TYPES), name="type"),
        CheckConstraint(in_check("action", ACTIONS), name="action"),
        CheckConstraint(in_check("actor_type", ACTOR_TYPES), name="actor_type"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        Index("ix_audit_events_organization_id_trace_id", "organization_id", "trace_id"),
        Index("ix_audit_events_organization_id_session_id", "organization_id", "session_id"),
        Index(
            "ix_audit_events_anomaly_cooldown",
            "organization_id",
            "server_id",
            "type",
            "occurred_at",
        ),
        # Ingestion ignores duplicates by the provider's trace or request id.
        Index(
            "uq_audit_events_external_id",
            "organization_id",
            "source",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
    )

    id: str = id_field("audit_event")
    # The organization id, or `system` for organization-less events (backups): the
    # (chain_id, seq) unique index serves every "newest first in my organization" query.
    chain_id: str = Field(max_length=64)
    organization_id: str | None = Field(default=None, max_length=64)
    seq: int = Field(sa_type=BigInteger)
    occurred_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)
    recorded_at: datetime = created_at_field()
    source: str = Field(max_length=16)
    type: str = Field(max_length=32)
    action: str = Field(max_length=32)
    operation: str | None = Field(default=None, max_length=128)
    tool_name: str | None = Field(default=None, max_length=255)
    server_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=64)
    actor_type: str = Field(max_length=16)
    actor_id: str | None = Field(default=None, max_length=64)
    user_ref: str | None = Field(default=None, max_length=255)
    trace_id: str | None = Field(default=None, max_length=128)
    policy_id: str | None = Field(default=None, max_length=64)
    policy_version: int | None = Field(default=None)
    rule_index: int | None = Field(default=None)
    reason: str | None = Field(default=None, max_length=2000)
    latency_ms: int | None = Field(default=None)
    outcome: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=255)
    metadata_: dict[str, Any] = jsonb_field(name="metadata")
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditChainHead(SQLModel, table=True):
    """The latest (seq, hash) of each chain; its row lock serializes appends per chain.

    Keyed by the chain id (an organization id, or `system` for organization-less events)
    rather than a fresh nanoid: there is exactly one head per chain.
    """

    __tablename__ = "audit_chain_heads"

    chain_id: str = Field(primary_key=True, max_length=64)
    seq: int = Field(sa_type=BigInteger)
    hash: str = Field(max_length=64)
