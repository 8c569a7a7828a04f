"""The governance pipeline of the proxy (API.md §5): authenticate, resolve the server, then
for each JSON-RPC message decide, record, forward and record the outcome.

Transactions are short and never span the upstream call: a `tools/call` is decided and its
decision event committed first (if that commit fails, nothing is forwarded: fail closed),
then forwarded with no database connection held, then its outcome is recorded in a second
transaction.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import httpx
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from functions.proxy import jsonrpc, repository
from functions.proxy.jsonrpc import JsonObject
from shared import ratelimit
from shared.anomalies import anomaly_fields, raise_anomaly
from shared.audit import record_event
from shared.auth import Principal, resolve_principal
from shared.config import get_settings
from shared.errors import AppError, Forbidden, NotFound, Unauthorized
from shared.governance.engine import (
    CallContext,
    Decision,
    PolicySnapshot,
    canonical_arguments_digest,
    denied_regardless_of_arguments,
    evaluate,
    mask_arguments,
    mask_strings,
)
from shared.governance.glob import glob_match
from shared.ids import new_id
from shared.kill_switch import IDLE_COMPLETION
from shared.mcp_client import (
    UpstreamAuth,
    UpstreamError,
    UpstreamReply,
    UpstreamTimeout,
    new_http_client,
    post_jsonrpc,
    tool_fingerprint,
)
from shared.models import AgentSession, Approval, ServerTool
from shared.models.base import utcnow
from shared.permissions import Permission
from shared.policy_store import load_policies
from shared.upstream import UpstreamUrlError, check_upstream_url_cached, upstream_auth

APPROVAL_TTL: Final = timedelta(hours=1)
DESTRUCTIVE: Final = ("delete_*", "drop_*", "truncate_*", "destroy_*", "purge_*")
SPIKE_WINDOW: Final = 60
SPIKE_HISTORY: Final = 15
SPIKE_MINIMUM: Final = 10
DENIED_BURST: Final = 10
MAX_METADATA_KEYS: Final = 32
INVALID_EXCERPT: Final = 256
_TRACE_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class ServerDisabled(Forbidden):
    code = "server_disabled"
    default_message = "This MCP server is disabled."


class SessionExpired(AppError):
    """The upstream no longer knows the caller's MCP session: HTTP 404, so that the client
    re-initializes (MCP Streamable HTTP)."""

    status_code = 404
    code = "mcp_session_expired"
    default_message = "The MCP session expired upstream; initialize a new one."


class UpstreamSessionExpired(UpstreamError):
    def __init__(self) -> None:
        super().__init__("the upstream MCP session expired", status_code=404)


class BadHeader(AppError):
    status_code = 400
    code = "invalid_header"


@dataclass(frozen=True)
class Caller:
    """Who is calling, and what they told us about the end user."""

    principal: Principal
    organization_id: str
    role: str
    user_ref: str | None
    metadata: dict[str, Any]
    trace_id: str
    upstream_session_id: str | None
    protocol_version: str | None

    @property
    def principal_type(self) -> str:
        return self.principal.kind

    @property
    def principal_id(self) -> str:
        return self.principal.principal_id


@dataclass(frozen=True)
class Target:
    """The server as the pipeline needs it, read once per request."""

    id: str
    organization_id: str
    url: str
    auth: UpstreamAuth
    data_classes: tuple[str, ...]
    anomaly_multiplier: float
    log_arguments: bool
    version: datetime


@dataclass
class Result:
    """What the proxy answers: the JSON-RPC messages and the upstream session id."""

    messages: list[JsonObject] = field(default_factory=list)
    upstream_session_id: str | None = None


@lru_cache(maxsize=1)
def http_client() -> httpx.Client:
    """One upstream client per process: keep-alive connections survive between calls."""
    return new_http_client()


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """`X-Igris-Metadata`: a JSON object of scalars (400 otherwise)."""
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BadHeader("X-Igris-Metadata must be a JSON object.") from None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise BadHeader(
            f"X-Igris-Metadata must be a JSON object of at most {MAX_METADATA_KEYS} keys."
        )
    for key, item in value.items():
        if not isinstance(item, str | int | float | bool) and item is not None:
            raise BadHeader(f"X-Igris-Metadata values must be scalars ({key!r} is not).")
        if "\x00" in key or (isinstance(item, str) and "\x00" in item):
            raise BadHeader("X-Igris-Metadata must not contain NUL characters.")
    return value


def trace_id_of(header: str | None) -> str:
    return header if header and _TRACE_ID.match(header) else new_id("trace")


def authenticate(session: Session, request: Any) -> Principal:
    """API key or session; auditors (no proxy permission) are refused."""
    principal = resolve_principal(session, request)
    if principal is None:
        raise Unauthorized()
    if principal.organization_id is None or principal.role is None:
        raise Forbidden("Select an active organization first.", code="no_active_organization")
    if not principal.can(Permission.PROXY_CALL):
        raise Forbidden("This role cannot call tools through the proxy.")
    return principal


def resolve_target(session: Session, organization_id: str, slug: str) -> Target:
    server = repository.server_by_slug(session, organization_id, slug)
    if server is None:
        raise NotFound("No such MCP server.")
    if not server.enabled:
        raise ServerDisabled()
    return Target(
        id=server.id,
        organization_id=server.organization_id,
        url=server.url,
        auth=upstream_auth(server),
        data_classes=tuple(server.data_classes),
        anomaly_multiplier=server.anomaly_multiplier,
        log_arguments=server.log_arguments,
        version=server.updated_at,
    )


def event_base(caller: Caller, target: Target) -> dict[str, Any]:
    """What every proxy audit event says about who called which server."""
    return {
        "organization_id": target.organization_id,
        "source": "proxy",
        "server_id": target.id,
        "actor_type": caller.principal_type,
        "actor_id": caller.principal_id,
        "user_ref": caller.user_ref,
        "trace_id": caller.trace_id,
    }


# --------------------------------------------------------------------- agent sessions


def _session_event(
    session: Session, caller: Caller, target: Target, row: AgentSession, operation: str
) -> None:
    record_event(
        session,
        **event_base(caller, target),
        type="session_update",
        action="log",
        operation=operation,
        session_id=row.id,
    )


def agent_session(session: Session, caller: Caller, target: Target) -> AgentSession:
    """The caller's open session on this server: reused, completed after 30 idle minutes
    (and replaced), or opened. A suspended one is returned as is: it blocks the principal
    until resumed, and a new session cannot be opened beside it (a partial unique index)."""
    now = utcnow()
    row = repository.open_agent_session(
        session, target.organization_id, target.id, caller.principal_type, caller.principal_id
    )
    if row is not None and row.status == "active" and now - row.last_activity_at >= IDLE_COMPLETION:
        row.status = "completed"
        row.completed_at = now
        repository.add(session, row)
        _session_event(session, caller, target, row, "session.completed")
        row = None
    if row is not None:
        return row
    row = AgentSession(
        organization_id=target.organization_id,
        server_id=target.id,
        principal_type=caller.principal_type,
        principal_id=caller.principal_id,
        mcp_session_id=caller.upstream_session_id,
    )
    try:
        with session.begin_nested():
            repository.add(session, row)
    except IntegrityError:
        # Another instance opened it first: use theirs.
        found = repository.open_agent_session(
            session,
            target.organization_id,
            target.id,
            caller.principal_type,
            caller.principal_id,
        )
        if found is None:
            raise
        return found
    _session_event(session, caller, target, row, "session.started")
    return row


# --------------------------------------------------------------------- tools/call


@dataclass
class CallDecision:
    """The outcome of the decision transaction for one tools/call."""

    forward: bool
    refusal: JsonObject | None
    decision: Decision | None
    agent_session_id: str
    tool: str
    arguments: dict[str, Any]
    approval_id: str | None = None
    # What the decision read, for the warm path to reuse (see functions/proxy/fast.py).
    snapshots: tuple[PolicySnapshot, ...] = ()
    ai_systems: tuple[str, ...] = ()


def _arguments_record(
    target: Target, arguments: Mapping[str, Any], decision: Decision | None
) -> dict[str, Any]:
    """Arguments as the audit trail keeps them: digest and size by default; the arguments
    themselves only when the server says `logArguments`. Both are of the *redacted*
    arguments: a digest of the raw values would let anyone who reads the trail recover a
    redacted value from a small space (an SSN) by trying them all."""
    paths = decision.redact_paths if decision else ()
    kept = mask_arguments(arguments, paths) if paths else dict(arguments)
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    record: dict[str, Any] = {
        "argumentsSha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "argumentsSize": len(canonical.encode("utf-8")),
    }
    if target.log_arguments:
        record["arguments"] = kept
    return record


def call_event(
    caller: Caller,
    target: Target,
    session_id: str,
    *,
    tool: str,
    arguments: Mapping[str, Any],
    decision: Decision | None,
    action: str,
    outcome: str,
    reason: str | None,
    code: int | None = None,
    approval_id: str | None = None,
    retry_after: int | None = None,
    ai_systems: list[str] | None = None,
) -> dict[str, Any]:
    """The decision event of one tools/call (forwarded or refused), as `record_event` and
    `prepare_event` take it: the slow and the fast path write the same event."""
    metadata: dict[str, Any] = {
        **_arguments_record(target, arguments, decision),
        "userMetadata": caller.metadata,
    }
    if code is not None:
        metadata["jsonrpcCode"] = code
    if approval_id is not None:
        metadata["approvalId"] = approval_id
    if retry_after is not None:
        metadata["retryAfter"] = retry_after
    if ai_systems:
        metadata["aiSystemIds"] = ai_systems
    return {
        **event_base(caller, target),
        "type": "tool_call",
        "action": action,
        "operation": "tools/call",
        "tool_name": tool,
        "session_id": session_id,
        "policy_id": decision.policy_id if decision else None,
        "policy_version": decision.policy_version if decision else None,
        "rule_index": decision.rule_index if decision else None,
        "reason": reason,
        "outcome": outcome,
        "metadata": metadata,
    }


def anomaly_event(
    kind: str,
    caller: Caller,
    target: Target,
    *,
    session_id: str | None = None,
    tool: str | None = None,
    decision: Decision | None = None,
) -> dict[str, Any]:
    """The anomaly events the proxy raises (static content, so that the one-statement
    decision can carry them prepared in advance)."""
    extra: dict[str, Any] = {}
    reason: str | None
    if kind == "rate_spike":
        reason = f"call rate above {target.anomaly_multiplier:g}x the 15-minute average"
        extra = {"multiplier": target.anomaly_multiplier}
    elif kind == "denied_burst":
        reason = f"{DENIED_BURST} or more refusals for one principal within a minute"
        extra = {"principalId": caller.principal_id}
    elif kind == "policy_alert":
        reason = decision.reason if decision else None
        extra = {
            "policyId": decision.policy_id if decision else None,
            "ruleIndex": decision.rule_index if decision else None,
        }
    else:
        reason = f"destructive tool name {tool}"
    return anomaly_fields(
        organization_id=target.organization_id,
        server_id=target.id,
        anomaly_type=kind,
        actor_type=caller.principal_type,
        actor_id=caller.principal_id,
        session_id=session_id,
        tool_name=tool,
        trace_id=caller.trace_id,
        reason=reason,
        **extra,
    )


def is_destructive(tool: str) -> bool:
    return any(glob_match(pattern, tool) for pattern in DESTRUCTIVE)


def _count_and_detect(
    session: Session, caller: Caller, target: Target, tool: str, refused: bool
) -> None:
    """Per-minute counters in PostgreSQL behind rate_spike and denied_burst (§6.4)."""
    server_bucket = f"calls:server:{target.id}"
    buckets = [server_bucket]
    principal_bucket = f"refusals:principal:{caller.principal_id}"
    if refused:
        buckets.append(principal_bucket)
    counts = ratelimit.add(
        session,
        buckets,
        window_seconds=SPIKE_WINDOW,
        retain_seconds=SPIKE_WINDOW * (SPIKE_HISTORY + 1),
    )
    current = counts.get(server_bucket, 0)
    if current >= SPIKE_MINIMUM:
        window = ratelimit.Window.at(utcnow(), SPIKE_WINDOW)
        history = repository.previous_window_counts(
            session,
            server_bucket,
            window.start - timedelta(seconds=SPIKE_WINDOW * SPIKE_HISTORY),
            window.start,
        )
        if current > sum(history) / SPIKE_HISTORY * target.anomaly_multiplier:
            raise_anomaly(session, **_fields_of(anomaly_event("rate_spike", caller, target)))
    if refused and counts.get(principal_bucket, 0) >= DENIED_BURST:
        raise_anomaly(
            session, **_fields_of(anomaly_event("denied_burst", caller, target, tool=tool))
        )


def _fields_of(event: dict[str, Any]) -> dict[str, Any]:
    """`anomaly_fields` output back into `raise_anomaly`'s keywords."""
    metadata = dict(event["metadata"])
    kind = metadata.pop("anomalyType")
    return {
        "organization_id": event["organization_id"],
        "server_id": event["server_id"],
        "anomaly_type": kind,
        "actor_type": event["actor_type"],
        "actor_id": event["actor_id"],
        "session_id": event["session_id"],
        "tool_name": event["tool_name"],
        "trace_id": event["trace_id"],
        "reason": event["reason"],
        **metadata,
    }


def refusal_of(
    message: JsonObject,
    *,
    code: int,
    reason: str,
    session_id: str,
    decision: Decision | None,
    retry_after: int | None = None,
    approval_id: str | None = None,
) -> JsonObject:
    data: JsonObject = {
        "decision": "require_approval" if code == jsonrpc.APPROVAL_REQUIRED else "deny",
        "reason": reason,
        "policyId": decision.policy_id if decision else None,
        "policyVersion": decision.policy_version if decision else None,
        "ruleIndex": decision.rule_index if decision else None,
        "sessionId": session_id,
        "retryAfter": retry_after,
        "approvalId": approval_id,
    }
    return jsonrpc.refusal(message.get("id"), code, data)


def _refuse(
    session: Session,
    caller: Caller,
    *,
    target: Target,
    row: AgentSession,
    message: JsonObject,
    tool: str,
    arguments: dict[str, Any],
    code: int,
    reason: str,
    action: str = "deny",
    decision: Decision | None = None,
    retry_after: int | None = None,
    approval_id: str | None = None,
) -> CallDecision:
    record_event(
        session,
        **call_event(
            caller,
            target,
            row.id,
            tool=tool,
            arguments=arguments,
            decision=decision,
            action=action,
            outcome="refused",
            reason=reason,
            code=code,
            approval_id=approval_id,
            retry_after=retry_after,
        ),
    )
    row.last_activity_at = utcnow()
    repository.add(session, row)
    _count_and_detect(session, caller, target, tool, refused=True)
    return CallDecision(
        forward=False,
        refusal=refusal_of(
            message,
            code=code,
            reason=reason,
            session_id=row.id,
            decision=decision,
            retry_after=retry_after,
            approval_id=approval_id,
        ),
        decision=decision,
        agent_session_id=row.id,
        tool=tool,
        arguments=arguments,
        approval_id=approval_id,
    )


def rate_bucket_key(decision: Decision, caller: Caller, target: Target, session_id: str) -> str:
    """The counter a rule's rate limit uses: per agent session, principal or server."""
    assert decision.rate_limit is not None
    per = decision.rate_limit.per
    subject = {"session": session_id, "principal": caller.principal_id, "server": target.id}[per]
    return (
        f"rule:{decision.policy_id}:{decision.policy_version}:{decision.rule_index}:{per}:{subject}"
    )


def _approval(
    session: Session,
    caller: Caller,
    *,
    target: Target,
    row: AgentSession,
    decision: Decision,
    tool: str,
    digest: str,
) -> tuple[bool, str]:
    """(granted, approval id): an approved, unused, unexpired approval of this exact call is
    used up; otherwise the pending one for it (created if needed) is returned."""
    assert decision.policy_id is not None
    assert decision.policy_version is not None
    now = utcnow()
    key: dict[str, Any] = {
        "organization_id": target.organization_id,
        "server_id": target.id,
        "tool": tool,
        "digest": digest,
        "principal_type": caller.principal_type,
        "principal_id": caller.principal_id,
        "policy_id": decision.policy_id,
        "policy_version": decision.policy_version,
        "now": now,
    }
    approved = repository.usable_approval(session, **key, status="approved")
    if approved is not None:
        approved.status = "used"
        approved.used_at = now
        repository.add(session, approved)
        return True, approved.id
    pending = repository.usable_approval(session, **key, status="pending")
    if pending is None:
        pending = Approval(
            organization_id=target.organization_id,
            server_id=target.id,
            agent_session_id=row.id,
            tool_name=tool,
            arguments_digest=digest,
            policy_id=decision.policy_id,
            policy_version=decision.policy_version,
            principal_type=caller.principal_type,
            principal_id=caller.principal_id,
            requester_user_id=caller.principal.user_id,
            expires_at=now + APPROVAL_TTL,
        )
        repository.add(session, pending)
    return False, pending.id


def decide_call(  # noqa: PLR0911 - each stage of the pipeline may refuse
    session: Session, caller: Caller, target: Target, message: JsonObject
) -> CallDecision | JsonObject:
    """Session check, policy evaluation, rate limit, data-class gate, approval (checked last,
    so an approval is used up only by a call that proceeds); the decision event is written in
    this transaction. Returns a JSON-RPC error for invalid params."""
    params = message.get("params")
    tool = params.get("name") if isinstance(params, dict) else None
    arguments = params.get("arguments", {}) if isinstance(params, dict) else None
    if not isinstance(tool, str) or not tool or not isinstance(arguments, dict):
        return jsonrpc.error(
            message.get("id"),
            -32602,
            "Invalid params: tools/call needs a name and object arguments",
        )
    row = agent_session(session, caller, target)
    refuse = functools.partial(
        _refuse,
        session,
        caller,
        target=target,
        row=row,
        message=message,
        tool=tool,
        arguments=arguments,
    )
    if row.status == "suspended":
        return refuse(
            code=jsonrpc.SESSION_SUSPENDED,
            reason="session_suspended",
        )
    snapshots = load_policies(session, target.organization_id, target.id)
    decision = evaluate(
        snapshots,
        target.id,
        CallContext(
            tool=tool,
            arguments=arguments,
            user=caller.user_ref,
            metadata=caller.metadata,
            role=caller.role,
        ),
    )
    if decision.decision == "deny":
        return refuse(
            code=jsonrpc.DENIED,
            reason=decision.reason,
            decision=decision,
        )
    if decision.rate_limit is not None:
        limit = decision.rate_limit
        hit = ratelimit.hit(
            session,
            rate_bucket_key(decision, caller, target, row.id),
            limit=limit.max,
            window_seconds=limit.window_seconds,
        )
        if not hit.allowed:
            return refuse(
                code=jsonrpc.RATE_LIMITED,
                reason="rate_limited",
                decision=decision,
                retry_after=hit.retry_after,
            )
    if "phi" in target.data_classes and not repository.active_baa_covers(
        session, target.organization_id, target.id, utcnow()
    ):
        return refuse(
            code=jsonrpc.NO_ACTIVE_BAA,
            reason="no_active_baa",
            decision=decision,
        )
    approval_id = None
    if decision.decision == "require_approval":
        granted, approval_id = _approval(
            session,
            caller,
            target=target,
            row=row,
            decision=decision,
            tool=tool,
            digest=canonical_arguments_digest(arguments),
        )
        if not granted:
            return refuse(
                code=jsonrpc.APPROVAL_REQUIRED,
                reason="approval_required",
                action="require_approval",
                decision=decision,
                approval_id=approval_id,
            )
    ai_systems = repository.ai_systems_for_server(session, target.organization_id, target.id)
    record_event(
        session,
        **call_event(
            caller,
            target,
            row.id,
            tool=tool,
            arguments=arguments,
            decision=decision,
            action=decision.decision,
            outcome="forwarded",
            reason=decision.reason,
            approval_id=approval_id,
            ai_systems=ai_systems,
        ),
    )
    row.tool_calls_count += 1
    row.last_activity_at = utcnow()
    repository.add(session, row)
    if decision.alert:
        raise_anomaly(
            session,
            **_fields_of(
                anomaly_event(
                    "policy_alert", caller, target, session_id=row.id, tool=tool, decision=decision
                )
            ),
        )
    if is_destructive(tool):
        raise_anomaly(
            session,
            **_fields_of(
                anomaly_event("destructive_pattern", caller, target, session_id=row.id, tool=tool)
            ),
        )
    _count_and_detect(session, caller, target, tool, refused=False)
    return CallDecision(
        forward=True,
        refusal=None,
        decision=decision,
        agent_session_id=row.id,
        approval_id=approval_id,
        tool=tool,
        arguments=arguments,
        snapshots=tuple(snapshots),
        ai_systems=tuple(ai_systems),
    )


def outcome_event(
    caller: Caller,
    target: Target,
    session_id: str,
    *,
    tool: str,
    decision: Decision | None,
    outcome: str,
    latency_ms: int,
    result_size: int | None,
    error: str | None,
) -> dict[str, Any]:
    """The event recording how a forwarded call ended (both paths write this one)."""
    return {
        **event_base(caller, target),
        "type": "tool_call",
        "action": "log",
        "operation": "tools/call.completed",
        "tool_name": tool,
        "session_id": session_id,
        "policy_id": decision.policy_id if decision else None,
        "policy_version": decision.policy_version if decision else None,
        "latency_ms": latency_ms,
        "outcome": outcome,
        "reason": error,
        "metadata": {"resultSize": result_size},
    }


@dataclass(frozen=True)
class Outcome:
    """How a forwarded call ended."""

    outcome: str  # ok | error | timeout
    latency_ms: int
    result_size: int | None
    error: str | None
    upstream_session_id: str | None


def forward_call(
    caller: Caller,
    target: Target,
    message: JsonObject,
    decision: Decision | None,
    session_id: str,
) -> tuple[JsonObject | None, Outcome]:
    """Forward a call that was decided and recorded; the answer (results masked per the
    deciding rule) and how it went. Upstream failures answer -32005; an expired upstream
    session has no answer (None): the caller gets HTTP 404 and re-initializes."""
    started = now_ms()
    try:
        reply = forward(caller, target, message)
    except UpstreamSessionExpired as exc:
        return None, Outcome(
            outcome="error",
            latency_ms=round(now_ms() - started),
            result_size=None,
            error=exc.message,
            upstream_session_id=None,
        )
    except UpstreamError as exc:
        outcome = Outcome(
            outcome="timeout" if isinstance(exc, UpstreamTimeout) else "error",
            latency_ms=round(now_ms() - started),
            result_size=None,
            error=exc.message,
            upstream_session_id=None,
        )
        return upstream_failure(message, session_id, exc), outcome
    answer = answer_of(reply, message)
    assert answer is not None
    answer = redact_result(answer, decision)
    failed = "error" in answer or bool((answer.get("result") or {}).get("isError"))
    return answer, Outcome(
        outcome="error" if failed else "ok",
        latency_ms=round(now_ms() - started),
        result_size=reply.raw_size,
        error=None,
        upstream_session_id=reply.session_id,
    )


def record_outcome(
    session: Session, caller: Caller, target: Target, call: CallDecision, outcome: Outcome
) -> None:
    record_event(
        session,
        **outcome_event(
            caller,
            target,
            call.agent_session_id,
            tool=call.tool,
            decision=call.decision,
            outcome=outcome.outcome,
            latency_ms=outcome.latency_ms,
            result_size=outcome.result_size,
            error=outcome.error,
        ),
    )
    if outcome.upstream_session_id is not None:
        row = session.get(AgentSession, call.agent_session_id)
        if row is not None and row.mcp_session_id != outcome.upstream_session_id:
            row.mcp_session_id = outcome.upstream_session_id
            repository.add(session, row)


def redact_result(response: JsonObject, decision: Decision | None) -> JsonObject:
    """Mask the rule's result patterns in everything the agent receives."""
    if decision is None or not decision.result_patterns or "result" not in response:
        return response
    return {**response, "result": mask_strings(response["result"], decision.result_patterns)}


# --------------------------------------------------------------------- forwarding


def forward(caller: Caller, target: Target, message: JsonObject) -> UpstreamReply:
    """POST the message upstream with the server's credential (never the caller's)."""
    settings = get_settings()
    try:
        url = check_upstream_url_cached(target.url, allow_private=settings.allow_private_upstreams)
    except UpstreamUrlError as exc:
        raise UpstreamError(f"the server's URL is not allowed: {exc}") from None
    reply = post_jsonrpc(
        http_client(),
        url,
        message,
        auth=target.auth,
        session_id=caller.upstream_session_id,
        protocol_version=caller.protocol_version,
        timeout=settings.upstream_timeout_seconds,
    )
    if reply.status_code == 404 and caller.upstream_session_id:
        raise UpstreamSessionExpired()
    return reply


def upstream_failure(message: JsonObject, session_id: str | None, exc: UpstreamError) -> JsonObject:
    return jsonrpc.refusal(
        message.get("id"),
        jsonrpc.UPSTREAM_UNAVAILABLE,
        {"decision": "allow", "reason": exc.message, "sessionId": session_id},
    )


def answer_of(reply: UpstreamReply, message: JsonObject) -> JsonObject | None:
    """The upstream's response to `message` (None for a notification)."""
    if "id" not in message:
        return None
    found = reply.response_for(message["id"])
    if found is None:
        return jsonrpc.refusal(
            message.get("id"),
            jsonrpc.UPSTREAM_UNAVAILABLE,
            {
                "decision": "allow",
                "reason": f"the upstream answered HTTP {reply.status_code} without a response",
            },
        )
    return found


def now_ms() -> float:
    return time.perf_counter() * 1000


# --------------------------------------------------------------------- tools/list


def filter_and_refresh_tools(
    session: Session, caller: Caller, target: Target, response: JsonObject
) -> JsonObject:
    """Hide tools the policies deny whatever the arguments; refresh the stored tools (a
    changed definition raises tool_definition_changed)."""
    result = response.get("result")
    tools = result.get("tools") if isinstance(result, dict) else None
    if not isinstance(tools, list):
        return response
    snapshots = load_policies(session, target.organization_id, target.id)
    stored: dict[str, ServerTool] = {t.name: t for t in repository.server_tools(session, target.id)}
    now = utcnow()
    visible = []
    for tool in tools:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        name = tool["name"]
        fingerprint = tool_fingerprint(tool)
        row = stored.get(name)
        if row is None:
            row = ServerTool(
                organization_id=target.organization_id,
                server_id=target.id,
                name=name,
                fingerprint=fingerprint,
                first_fingerprint=fingerprint,
                first_seen_at=now,
                last_seen_at=now,
                description=tool.get("description"),
                input_schema=dict(tool.get("inputSchema") or {}),
            )
            repository.add(session, row)
        elif row.fingerprint != fingerprint:
            row.fingerprint = fingerprint
            row.changed_at = now
            row.description = tool.get("description")
            row.input_schema = dict(tool.get("inputSchema") or {})
            row.last_seen_at = now
            repository.add(session, row)
            raise_anomaly(
                session,
                organization_id=target.organization_id,
                server_id=target.id,
                anomaly_type="tool_definition_changed",
                actor_type=caller.principal_type,
                actor_id=caller.principal_id,
                tool_name=name,
                trace_id=caller.trace_id,
                reason=f"the definition of {name} changed since it was first seen",
            )
        context = CallContext(
            tool=name,
            arguments={},
            user=caller.user_ref,
            metadata=caller.metadata,
            role=caller.role,
        )
        if not denied_regardless_of_arguments(snapshots, target.id, context):
            visible.append(tool)
    assert isinstance(result, dict)
    return {**response, "result": {**result, "tools": visible}}


def record_passthrough(
    session: Session,
    caller: Caller,
    target: Target,
    message: JsonObject,
    *,
    outcome: str,
    latency_ms: int | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """An audit record for a forwarded method other than tools/call."""
    record_event(
        session,
        **event_base(caller, target),
        type="custom",
        action="log",
        operation=str(message.get("method", "response"))[:128],
        latency_ms=latency_ms,
        outcome=outcome,
        metadata={"userMetadata": caller.metadata, **(extra or {})},
    )


def record_bad_header(
    session: Session, principal: Principal, target: Target, trace_id: str, value: str
) -> None:
    """A refused X-Igris-Metadata is audited like a rejected body: digest, size, excerpt."""
    raw = value.encode("utf-8", "replace")
    record_event(
        session,
        organization_id=target.organization_id,
        source="proxy",
        type="custom",
        action="deny",
        operation="mcp.invalid_header",
        server_id=target.id,
        actor_type=principal.kind,
        actor_id=principal.principal_id,
        trace_id=trace_id,
        outcome="rejected",
        reason="invalid X-Igris-Metadata",
        metadata={
            "header": "X-Igris-Metadata",
            "valueSha256": hashlib.sha256(raw).hexdigest(),
            "valueSize": len(raw),
            "excerpt": value[:INVALID_EXCERPT].replace("\x00", "\ufffd"),
        },
    )


def record_invalid(
    session: Session, caller: Caller, target: Target, body: bytes, code: int
) -> None:
    """A rejected body is audited in a size-capped form: digest, size and a short excerpt."""
    record_event(
        session,
        **event_base(caller, target),
        type="custom",
        action="deny",
        operation="mcp.invalid_message",
        outcome="rejected",
        reason="parse error" if code == jsonrpc.PARSE_ERROR else "invalid JSON-RPC",
        metadata={
            "jsonrpcCode": code,
            "bodySha256": hashlib.sha256(body).hexdigest(),
            "bodySize": len(body),
            "excerpt": body[:INVALID_EXCERPT].decode("utf-8", "replace"),
        },
    )


def end_upstream_session(caller: Caller, target: Target) -> None:
    """DELETE the MCP session upstream (errors ignored: the session is over either way)."""
    headers = {**target.auth.headers(), "Mcp-Session-Id": str(caller.upstream_session_id)}
    with contextlib.suppress(httpx.HTTPError):
        http_client().delete(
            target.url, headers=headers, timeout=get_settings().upstream_timeout_seconds
        )
