"""The audit writer: an append-only, per-organization SHA-256 hash chain.

`record_event` runs inside the caller's transaction, so an act and its audit event commit
or roll back together. Appends to one chain are serialized by the row lock on that chain's
`audit_chain_heads` row (taken by an upsert inside `igris_append_event`), which is
transaction-scoped and therefore safe behind PgBouncer in transaction mode; `seq` stays
gapless because a rolled-back append rolls the head back too. One statement per event: the
application sends the canonical JSON around a placeholder for `seq`, the database fills it in
and computes the hash (migration 0004).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session

from shared.ids import new_id
from shared.models.audit_event import SYSTEM_CHAIN, AuditEvent
from shared.models.base import utcnow

GENESIS_HASH = "0" * 64

# The fields the hash covers, by wire name (API.md §6.1 plus organizationId and externalId).
HASHED_FIELDS: tuple[tuple[str, str], ...] = (
    ("id", "id"),
    ("organizationId", "organization_id"),
    ("seq", "seq"),
    ("occurredAt", "occurred_at"),
    ("source", "source"),
    ("type", "type"),
    ("action", "action"),
    ("operation", "operation"),
    ("toolName", "tool_name"),
    ("serverId", "server_id"),
    ("sessionId", "session_id"),
    ("actorType", "actor_type"),
    ("actorId", "actor_id"),
    ("userRef", "user_ref"),
    ("traceId", "trace_id"),
    ("policyId", "policy_id"),
    ("policyVersion", "policy_version"),
    ("ruleIndex", "rule_index"),
    ("reason", "reason"),
    ("latencyMs", "latency_ms"),
    ("outcome", "outcome"),
    ("externalId", "external_id"),
    ("metadata", "metadata_"),
)


def format_timestamp(value: datetime) -> str:
    """UTC, microseconds, `Z`: the one textual form of a time inside the chain."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_json(value: Any) -> Any:  # noqa: PLR0911 - one branch per JSON type
    """Make `value` survive a round trip through JSONB unchanged.

    JSONB stores numbers as `numeric`: `-0.0` comes back as `0.0`, and an integral float
    written in exponent form (`1e+16`) comes back as an integer; it cannot hold U+0000.
    Normalizing first keeps the hash computed before the insert equal to the one a
    verifier computes from what it reads back.
    """
    if value is None or isinstance(value, bool | int | str):
        return value.replace("\x00", "\ufffd") if isinstance(value, str) else value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("audit metadata cannot hold NaN or infinity")
        if value == 0:
            return 0.0
        if value.is_integer() and "e" in repr(value):
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {
            str(key).replace("\x00", "\ufffd"): normalize_json(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [normalize_json(item) for item in value]
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"audit metadata cannot hold a {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text: the same bytes for the same content."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def hashed_content(event: AuditEvent) -> dict[str, Any]:
    """The event as the hash sees it (wire names, canonical timestamps)."""
    content: dict[str, Any] = {}
    for wire, attribute in HASHED_FIELDS:
        value = getattr(event, attribute)
        content[wire] = format_timestamp(value) if isinstance(value, datetime) else value
    return content


_SEQ_PLACEHOLDER = "\x00seq\x00"  # cannot occur in content: normalize_json replaces NUL
_APPEND = text(
    "SELECT seq, prev_hash, hash FROM igris_append_event(:chain, :prefix, :suffix, "
    "CAST(:row AS jsonb))"
).bindparams(bindparam("row", type_=JSONB))


def _jsonable(value: Any) -> Any:
    return format_timestamp(value) if isinstance(value, datetime) else value


def compute_hash(prev_hash: str, event: AuditEvent) -> str:
    """`SHA-256(prevHash || canonical JSON of the event)`, hex."""
    payload = prev_hash + canonical_json(hashed_content(event))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_COLUMN_OF = {"metadata_": "metadata"}  # attribute → column where they differ
_NOT_SENT = frozenset({"seq", "chain_id"})  # filled in by igris_append_event


@dataclass(frozen=True)
class PreparedEvent:
    """An event ready to be appended by `igris_append_event`: its chain, its canonical JSON
    around the seq placeholder, and its column values. The proxy's one-statement decision
    sends several of these and the database appends the one that applies. Built from plain
    values (no ORM object): the proxy prepares several per call."""

    chain_id: str
    prefix: str
    suffix: str
    values: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.values["id"])

    @property
    def row(self) -> dict[str, Any]:
        return {
            _COLUMN_OF.get(attribute, attribute): _jsonable(value)
            for attribute, value in self.values.items()
            if attribute not in _NOT_SENT
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "chain": self.chain_id,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "row": self.row,
        }

    def stored(self, seq: int, prev_hash: str, hash: str) -> AuditEvent:
        """The event as the database now holds it."""
        return AuditEvent(
            **{
                **self.values,
                "chain_id": self.chain_id,
                "seq": seq,
                "prev_hash": prev_hash,
                "hash": hash,
            }
        )


def prepare_event(
    *,
    organization_id: str | None,
    source: str,
    type: str,
    action: str,
    actor_type: str,
    actor_id: str | None = None,
    operation: str | None = None,
    tool_name: str | None = None,
    server_id: str | None = None,
    session_id: str | None = None,
    user_ref: str | None = None,
    trace_id: str | None = None,
    policy_id: str | None = None,
    policy_version: int | None = None,
    rule_index: int | None = None,
    reason: str | None = None,
    latency_ms: int | None = None,
    outcome: str | None = None,
    external_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> PreparedEvent:
    """Build an event (id and time made here) without writing it."""
    values: dict[str, Any] = {
        "id": new_id("audit_event"),
        "organization_id": organization_id,
        "seq": _SEQ_PLACEHOLDER,
        "occurred_at": (occurred_at or utcnow()).astimezone(UTC),
        "source": source,
        "type": type,
        "action": action,
        "operation": operation,
        "tool_name": tool_name,
        "server_id": server_id,
        "session_id": session_id,
        "actor_type": actor_type,
        "actor_id": actor_id,
        "user_ref": user_ref,
        "trace_id": trace_id,
        "policy_id": policy_id,
        "policy_version": policy_version,
        "rule_index": rule_index,
        "reason": reason,
        "latency_ms": latency_ms,
        "outcome": outcome,
        "external_id": external_id,
        "metadata_": normalize_json(dict(metadata or {})),
    }
    content = {wire: _jsonable(values[attribute]) for wire, attribute in HASHED_FIELDS}
    prefix, placeholder, suffix = canonical_json(content).partition(
        json.dumps(_SEQ_PLACEHOLDER, ensure_ascii=False)
    )
    assert placeholder, "the seq placeholder must appear exactly once"
    del values["seq"]
    return PreparedEvent(
        chain_id=organization_id or SYSTEM_CHAIN, prefix=prefix, suffix=suffix, values=values
    )


def record_event(session: Session, **fields: Any) -> AuditEvent:
    """Append one event to its organization's chain, in the caller's transaction (one
    statement). Takes `prepare_event`'s fields; `organization_id=None` writes to the system
    chain (backups and other events that belong to no organization). Returns the event as
    stored."""
    prepared = prepare_event(**fields)
    appended = session.execute(_APPEND, prepared.as_json()).one()
    return prepared.stored(int(appended.seq), appended.prev_hash, appended.hash)


@dataclass(frozen=True)
class ChainVerification:
    """The result of walking a chain (API.md §6.1 `verify`)."""

    intact: bool
    checked: int
    head_seq: int | None
    head_hash: str | None
    first_broken_seq: int | None = None


def iter_chain(
    session: Session,
    chain_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch_size: int = 1000,
) -> Iterator[AuditEvent]:
    """The chain's events in `seq` order, fetched in keyset batches (constant memory)."""
    last_seq = 0
    while True:
        query = (
            select(AuditEvent)
            .where(AuditEvent.chain_id == chain_id, AuditEvent.seq > last_seq)  # type: ignore[arg-type]
            .order_by(AuditEvent.seq)  # type: ignore[arg-type]
            .limit(batch_size)
        )
        if since is not None:
            query = query.where(AuditEvent.occurred_at >= since)  # type: ignore[arg-type]
        if until is not None:
            query = query.where(AuditEvent.occurred_at < until)  # type: ignore[arg-type]
        batch = list(session.scalars(query))
        yield from batch
        if len(batch) < batch_size:
            return
        last_seq = batch[-1].seq
        for event in batch:
            session.expunge(event)


def verify_chain(
    session: Session,
    chain_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ChainVerification:
    """Recompute every hash in the range and check links and gapless `seq`.

    With `since`, the first event's `prevHash` is taken as given (the range starts mid-chain);
    its own hash and every later link are still checked.
    """
    checked = 0
    expected_prev: str | None = None if since is not None else GENESIS_HASH
    expected_seq: int | None = None if since is not None else 1
    head_seq: int | None = None
    head_hash: str | None = None
    for event in iter_chain(session, chain_id, since=since, until=until):
        checked += 1
        broken = (
            (expected_seq is not None and event.seq != expected_seq)
            or (expected_prev is not None and event.prev_hash != expected_prev)
            or compute_hash(event.prev_hash, event) != event.hash
        )
        if broken:
            return ChainVerification(False, checked, head_seq, head_hash, event.seq)
        head_seq, head_hash = event.seq, event.hash
        expected_seq, expected_prev = event.seq + 1, event.hash
    return ChainVerification(True, checked, head_seq, head_hash)
