"""Loading an organization's policies for one server as engine snapshots.

One SQL statement per load. Snapshots are immutable per (policy id, version), so a
function instance keeps the compiled ones and rebuilds only what changed: validation and
compilation of rules happen once per policy version, not once per call.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from sqlalchemy import or_, select
from sqlmodel import Session, col

from shared.governance.engine import PolicySnapshot
from shared.governance.rules import validate_rules
from shared.models import Policy

_CACHE_SIZE: Final = 2048
_snapshots: OrderedDict[tuple[str, int], PolicySnapshot] = OrderedDict()


def snapshot_of(policy: Policy) -> PolicySnapshot:
    """The engine's view of one policy version (cached per instance)."""
    key = (policy.id, policy.version)
    cached = _snapshots.get(key)
    if cached is not None and cached.active == policy.active:
        _snapshots.move_to_end(key)
        return cached
    snapshot = PolicySnapshot(
        id=policy.id,
        version=policy.version,
        server_id=policy.server_id,
        priority=policy.priority,
        created_at=policy.created_at,
        active=policy.active,
        rules=tuple(validate_rules(policy.rules)),
    )
    _snapshots[key] = snapshot
    if len(_snapshots) > _CACHE_SIZE:
        _snapshots.popitem(last=False)
    return snapshot


def load_policies(session: Session, organization_id: str, server_id: str) -> list[PolicySnapshot]:
    """Active policies that apply to calls on `server_id`: its own and the org-wide ones."""
    query = select(Policy).where(
        col(Policy.organization_id) == organization_id,
        col(Policy.active).is_(True),
        or_(col(Policy.server_id) == server_id, col(Policy.server_id).is_(None)),
    )
    return [snapshot_of(policy) for policy in session.scalars(query)]
