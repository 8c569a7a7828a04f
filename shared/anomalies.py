"""Anomaly events (API.md §6.4): `type: "anomaly"` audit events with `metadata.anomalyType`,
suppressed for 5 minutes per (organization, server, type) after one fires.

The cooldown is computed from PostgreSQL state (many function instances run at once) under
a transaction-scoped advisory lock on the (organization, server, type) triple, so two
instances cannot both fire; the lock is released at commit (safe behind PgBouncer).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlmodel import Session

from shared.audit import record_event
from shared.models import AuditEvent

COOLDOWN: Final = timedelta(minutes=5)
ANOMALY_TYPES: Final = frozenset(
    {"rate_spike", "destructive_pattern", "policy_alert", "tool_definition_changed", "denied_burst"}
)

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_RECENT = text(
    """
    SELECT 1 FROM audit_events
    WHERE organization_id = :org AND server_id = :server AND type = 'anomaly'
      AND occurred_at > now() - make_interval(secs => :seconds)
      AND metadata->>'anomalyType' = :kind
    LIMIT 1
    """
)


def anomaly_fields(
    *,
    organization_id: str,
    server_id: str,
    anomaly_type: str,
    source: str = "proxy",
    actor_type: str = "system",
    actor_id: str | None = None,
    session_id: str | None = None,
    tool_name: str | None = None,
    trace_id: str | None = None,
    reason: str | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """The audit event of an anomaly (`record_event`/`prepare_event` fields)."""
    if anomaly_type not in ANOMALY_TYPES:
        raise ValueError(f"unknown anomaly type {anomaly_type!r}")
    return {
        "organization_id": organization_id,
        "source": source,
        "type": "anomaly",
        "action": "alert",
        "actor_type": actor_type,
        "actor_id": actor_id,
        "operation": f"anomaly.{anomaly_type}",
        "server_id": server_id,
        "session_id": session_id,
        "tool_name": tool_name,
        "trace_id": trace_id,
        "reason": reason,
        "metadata": {"anomalyType": anomaly_type, **metadata},
    }


def cooldown_key(organization_id: str, server_id: str, anomaly_type: str) -> str:
    """The advisory-lock key serializing one (organization, server, type) cooldown (the
    proxy's decision function in migration 0005 builds the same key)."""
    return f"anomaly:{organization_id}:{server_id}:{anomaly_type}"


def raise_anomaly(session: Session, **fields: Any) -> AuditEvent | None:
    """Record the anomaly unless one of the same type fired for this server within the
    cooldown; returns the event, or None when suppressed. Takes `anomaly_fields`' keywords."""
    event = anomaly_fields(**fields)
    organization_id, server_id = event["organization_id"], event["server_id"]
    anomaly_type = event["metadata"]["anomalyType"]
    session.execute(_LOCK, {"key": cooldown_key(organization_id, server_id, anomaly_type)})
    recent = session.execute(
        _RECENT,
        {
            "org": organization_id,
            "server": server_id,
            "kind": anomaly_type,
            "seconds": COOLDOWN.total_seconds(),
        },
    ).first()
    if recent is not None:
        return None
    return record_event(session, **event)
