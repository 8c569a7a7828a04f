"""The warm path of a tools/call: two database round trips in all.

The function instance keeps what the slow path last read (the caller's principal, the
server, its policies with their versions, the live AI systems on it, the agent session) and
decides in Python. One statement, `igris_proxy_decide` (migration 0005), then checks in the
database that all of it is still current, applies the rate limit and the PHI gate, and
appends the prepared decision event, atomically; the call is forwarded only after it
returns (fail closed). A second statement appends the outcome. When anything is stale (a
revoked key, a suspended or idle session, a changed policy...) the statement says so, the
entry is dropped and the slow path decides instead, so every change is effective on the
very next call on every instance.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from psycopg import OperationalError
from psycopg.types.json import Jsonb

from functions.proxy import jsonrpc, pipeline
from functions.proxy.jsonrpc import JsonObject
from shared import ratelimit
from shared.audit import PreparedEvent, prepare_event
from shared.auth import Principal
from shared.db import autocommit_connection
from shared.errors import DatabaseUnavailable
from shared.governance.engine import CallContext, Decision, PolicySnapshot, evaluate
from shared.ids import new_id
from shared.models.base import utcnow

_MAX_ENTRIES: Final = 4096


@dataclass(frozen=True)
class Warm:
    """What the slow path established for (credential, server), reusable until stale."""

    principal: Principal
    role: str
    target: pipeline.Target
    server_version: datetime
    snapshots: tuple[PolicySnapshot, ...]
    policies: str
    ai_systems: tuple[str, ...]
    agent_session_id: str


_lock = threading.Lock()
_warm: OrderedDict[tuple[str, str], Warm] = OrderedDict()


def remember(credential_digest: str, slug: str, warm: Warm) -> None:
    with _lock:
        _warm[(credential_digest, slug)] = warm
        _warm.move_to_end((credential_digest, slug))
        if len(_warm) > _MAX_ENTRIES:
            _warm.popitem(last=False)


def forget(credential_digest: str, slug: str) -> None:
    with _lock:
        _warm.pop((credential_digest, slug), None)


def lookup(credential_digest: str, slug: str) -> Warm | None:
    with _lock:
        return _warm.get((credential_digest, slug))


def policies_fingerprint(snapshots: tuple[PolicySnapshot, ...] | list[PolicySnapshot]) -> str:
    """The same string igris_proxy_decide aggregates (`id:version`, byte order)."""
    return ",".join(sorted(f"{s.id}:{s.version}" for s in snapshots))


@dataclass(frozen=True)
class FastCall:
    decision: Decision
    tool: str
    arguments: dict[str, Any]
    forward: bool
    refusal: JsonObject | None
    agent_session_id: str


def _prepared(fields: dict[str, Any]) -> PreparedEvent:
    return prepare_event(**fields)


def _payload(
    warm: Warm,
    caller: pipeline.Caller,
    *,
    decision: Decision,
    tool: str,
    arguments: dict[str, Any],
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The statement's payload, and what each outcome would answer."""
    target = warm.target
    session_id = warm.agent_session_id
    common: dict[str, Any] = {"tool": tool, "arguments": arguments, "decision": decision}
    plan = "forward" if decision.decision in {"allow", "alert", "redact"} else "deny"
    events: dict[str, PreparedEvent] = {}
    answers: dict[str, Any] = {}
    if plan == "forward":
        events["forward"] = _prepared(
            pipeline.call_event(
                caller,
                target,
                session_id,
                action=decision.decision,
                outcome="forwarded",
                reason=decision.reason,
                ai_systems=list(warm.ai_systems),
                **common,
            )
        )
    else:
        events["deny"] = _prepared(
            pipeline.call_event(
                caller,
                target,
                session_id,
                action="deny",
                outcome="refused",
                reason=decision.reason,
                code=jsonrpc.DENIED,
                **common,
            )
        )
        answers["deny"] = (jsonrpc.DENIED, decision.reason, None)
    rate_limit: dict[str, Any] | None = None
    if plan == "forward" and decision.rate_limit is not None:
        limit = decision.rate_limit
        window = ratelimit.Window.at(now, limit.window_seconds)
        retry_after = window.retry_after(now)
        rate_limit = {
            "id": new_id("rate_limit"),
            "bucket": pipeline.rate_bucket_key(decision, caller, target, session_id),
            "max": limit.max,
            "window_start": window.start.isoformat(),
            "expires_at": window.end.isoformat(),
        }
        events["rate_limited"] = _prepared(
            pipeline.call_event(
                caller,
                target,
                session_id,
                action="deny",
                outcome="refused",
                reason="rate_limited",
                code=jsonrpc.RATE_LIMITED,
                retry_after=retry_after,
                **common,
            )
        )
        answers["rate_limited"] = (jsonrpc.RATE_LIMITED, "rate_limited", retry_after)
    phi = "phi" in target.data_classes
    if plan == "forward" and phi:
        events["no_baa"] = _prepared(
            pipeline.call_event(
                caller,
                target,
                session_id,
                action="deny",
                outcome="refused",
                reason="no_active_baa",
                code=jsonrpc.NO_ACTIVE_BAA,
                **common,
            )
        )
        answers["no_baa"] = (jsonrpc.NO_ACTIVE_BAA, "no_active_baa", None)
    anomalies = {
        "rate_spike": pipeline.anomaly_event("rate_spike", caller, target),
        "denied_burst": pipeline.anomaly_event("denied_burst", caller, target, tool=tool),
    }
    if plan == "forward" and decision.alert:
        anomalies["policy_alert"] = pipeline.anomaly_event(
            "policy_alert", caller, target, session_id=session_id, tool=tool, decision=decision
        )
    if plan == "forward" and pipeline.is_destructive(tool):
        anomalies["destructive_pattern"] = pipeline.anomaly_event(
            "destructive_pattern", caller, target, session_id=session_id, tool=tool
        )
    spike = ratelimit.Window.at(now, pipeline.SPIKE_WINDOW)
    counters = {
        "server_id": new_id("rate_limit"),
        "server_bucket": f"calls:server:{target.id}",
        "refusal_id": new_id("rate_limit"),
        "refusal_bucket": f"refusals:principal:{caller.principal_id}",
        "window_start": spike.start.isoformat(),
        "expires_at": (
            spike.end + timedelta(seconds=pipeline.SPIKE_WINDOW * (pipeline.SPIKE_HISTORY + 1))
        ).isoformat(),
        "history_since": (
            spike.start - timedelta(seconds=pipeline.SPIKE_WINDOW * pipeline.SPIKE_HISTORY)
        ).isoformat(),
        "history_windows": pipeline.SPIKE_HISTORY,
        "spike_minimum": pipeline.SPIKE_MINIMUM,
        "burst_minimum": pipeline.DENIED_BURST,
        "multiplier": target.anomaly_multiplier,
    }
    principal = warm.principal
    payload = {
        "org": target.organization_id,
        "server_id": target.id,
        "server_version": warm.server_version.isoformat(),
        "policies": warm.policies,
        "ai_systems": ",".join(sorted(warm.ai_systems)),
        "agent_session_id": session_id,
        "principal": {
            "kind": principal.kind,
            "api_key_id": principal.api_key_id,
            "session_id": principal.session_id,
            "role": warm.role,
        },
        "plan": plan,
        "rate_limit": rate_limit,
        "phi": phi,
        "events": {key: event.as_json() for key, event in events.items()},
        "anomalies": {key: _prepared(fields).as_json() for key, fields in anomalies.items()},
        "counters": counters,
    }
    return payload, answers


def _execute(payload: dict[str, Any]) -> dict[str, Any]:
    """One statement; on a dead connection, reconnect and retry once (the event ids make a
    replay answer the recorded outcome instead of deciding twice)."""
    for attempt in (1, 2):
        try:
            with autocommit_connection(fresh=attempt == 2) as connection:
                row = connection.execute(
                    "SELECT igris_proxy_decide(%s)", [Jsonb(payload)]
                ).fetchone()
        except OperationalError:
            if attempt == 2:
                raise DatabaseUnavailable() from None
            continue
        assert row is not None
        result: dict[str, Any] = row[0]
        return result
    raise DatabaseUnavailable()


def decide(warm: Warm, caller: pipeline.Caller, message: JsonObject) -> FastCall | str | JsonObject:
    """The decision on the warm path; a string names what was stale (go slow), a JSON-RPC
    error answers invalid params, approvals always take the slow path."""
    params = message.get("params")
    tool = params.get("name") if isinstance(params, dict) else None
    arguments = params.get("arguments", {}) if isinstance(params, dict) else None
    if not isinstance(tool, str) or not tool or not isinstance(arguments, dict):
        return "params"
    decision = evaluate(
        warm.snapshots,
        warm.target.id,
        CallContext(
            tool=tool,
            arguments=arguments,
            user=caller.user_ref,
            metadata=caller.metadata,
            role=caller.role,
        ),
    )
    if decision.decision == "require_approval":
        return "approval"
    payload, answers = _payload(
        warm, caller, decision=decision, tool=tool, arguments=arguments, now=utcnow()
    )
    result = _execute(payload)
    if "stale" in result:
        return str(result["stale"])
    outcome = str(result["outcome"])
    if outcome == "forward":
        return FastCall(
            decision=decision,
            tool=tool,
            arguments=arguments,
            forward=True,
            refusal=None,
            agent_session_id=warm.agent_session_id,
        )
    code, reason, retry_after = answers[outcome]
    refusal = pipeline.refusal_of(
        message,
        code=code,
        reason=reason,
        session_id=warm.agent_session_id,
        decision=decision,
        retry_after=retry_after,
    )
    return FastCall(
        decision=decision,
        tool=tool,
        arguments=arguments,
        forward=False,
        refusal=refusal,
        agent_session_id=warm.agent_session_id,
    )


def record_outcome(
    caller: pipeline.Caller, warm: Warm, call: FastCall, outcome: pipeline.Outcome
) -> None:
    """The outcome event and the upstream session id when it changed: one statement (the
    update is a data-modifying CTE), so one round trip and both or neither."""
    event = prepare_event(
        **pipeline.outcome_event(
            caller,
            warm.target,
            call.agent_session_id,
            tool=call.tool,
            decision=call.decision,
            outcome=outcome.outcome,
            latency_ms=outcome.latency_ms,
            result_size=outcome.result_size,
            error=outcome.error,
        )
    )
    with autocommit_connection() as connection:
        connection.execute(
            "WITH upstream_session AS ("
            " UPDATE agent_sessions SET mcp_session_id = %(upstream)s::text"
            " WHERE id = %(agent_session)s AND %(upstream)s::text IS NOT NULL"
            " AND mcp_session_id IS DISTINCT FROM %(upstream)s::text)"
            " SELECT igris_append_prepared(%(event)s)",
            {
                "upstream": outcome.upstream_session_id,
                "agent_session": call.agent_session_id,
                "event": Jsonb(event.as_json()),
            },
        )
