"""Builders shared by the engine tests: rules from their wire form, snapshots with defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.governance.engine import PolicySnapshot
from shared.governance.rules import Rule, validate_rules

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def rules(*raw: dict[str, Any]) -> tuple[Rule, ...]:
    """Rules from their JSON form (validated exactly as the policies API validates them)."""
    return tuple(validate_rules(list(raw))) if raw else ()


def policy(
    policy_id: str,
    *raw_rules: dict[str, Any],
    server_id: str | None = None,
    priority: int = 100,
    created_at: datetime = T0,
    active: bool = True,
    version: int = 1,
) -> PolicySnapshot:
    return PolicySnapshot(
        id=policy_id,
        version=version,
        server_id=server_id,
        priority=priority,
        created_at=created_at,
        active=active,
        rules=rules(*raw_rules),
    )
