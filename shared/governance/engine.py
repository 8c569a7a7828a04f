"""Policy evaluation (API.md §4.2) and the helpers the proxy needs around it (§4.4, §5).

Pure functions over immutable inputs: the caller loads policies (with their versions) and
builds the call context; the engine orders, matches and decides, and never counts, stores
or logs. That keeps `POST /api/v1/policies/evaluate` (a dry run) and the proxy's real
decision the same code, and lets the proxy evaluate against policies cached in the
function instance.

Order for a call on server S: active policies of S, then active org-wide policies; within
each group by priority (lower first), then creation time, then id (so equal priorities
and timestamps still give one answer whatever order the database returned); rules in list
order. The first rule whose tool glob and all conditions hold decides; no match is a deny.
"""

from __future__ import annotations

import hashlib
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from shared.governance.glob import compile_glob, glob_match
from shared.governance.rules import (
    MISSING,
    Action,
    CompiledRule,
    Condition,
    RateLimit,
    Rule,
    parse_argument_path,
)

__all__ = [
    "DEFAULT_DENY_REASON",
    "REDACTED",
    "CallContext",
    "Decision",
    "PolicySnapshot",
    "canonical_arguments_digest",
    "compile_glob",
    "denied_regardless_of_arguments",
    "evaluate",
    "glob_match",
    "mask_arguments",
    "mask_strings",
    "mask_text",
    "order_policies",
]

DEFAULT_DENY_REASON: Final = "no policy allows this call"
REDACTED: Final = "[REDACTED]"
_TOOL_MEMO_SIZE: Final = 256
_FORWARDED: Final = frozenset({"allow", "alert", "redact"})
_VERBS: Final[dict[str, str]] = {
    "allow": "allowed",
    "deny": "denied",
    "alert": "allowed with an alert",
    "redact": "allowed with redaction",
    "require_approval": "approval required",
}


def _lookup(arguments: Mapping[str, Any], segments: Sequence[str]) -> object:
    """The value at a dotted path into JSON arguments, or MISSING. List elements are
    addressed by decimal index (`items.0.id`)."""
    current: object = arguments
    for segment in segments:
        if isinstance(current, Mapping):
            current = current.get(segment, MISSING)
            if current is MISSING:
                return MISSING
        elif isinstance(current, list | tuple):
            if not segment.isdigit() or not segment.isascii():
                return MISSING
            index = int(segment)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


_Check = Callable[["CallContext"], bool]


def _check(condition: Condition) -> _Check:
    """One condition as a single call on the context: the value lookup is specialised by
    path kind once, instead of being dispatched on every evaluation."""
    test = condition.test
    source = condition.source
    if source == "user":
        return lambda ctx: test(MISSING if ctx.user is None else ctx.user)
    if source == "role":
        return lambda ctx: test(MISSING if ctx.role is None else ctx.role)
    if source == "metadata":
        key = condition.segments[0]
        return lambda ctx: test(ctx.metadata.get(key, MISSING))
    segments = condition.segments
    if len(segments) == 1:
        (name,) = segments
        return lambda ctx: test(ctx.arguments.get(name, MISSING))
    return lambda ctx: test(_lookup(ctx.arguments, segments))


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """One version of a policy as the engine sees it. `rules` are validated `Rule`s (see
    `shared.governance.rules.validate_rules`); their compiled forms are gathered here once
    so evaluation touches only plain objects."""

    id: str
    version: int
    server_id: str | None
    priority: int
    created_at: datetime
    active: bool
    rules: tuple[Rule, ...]
    compiled: tuple[CompiledRule, ...] = field(init=False, repr=False, compare=False)
    _checks: tuple[tuple[_Check, ...], ...] = field(init=False, repr=False, compare=False)
    _context_checks: tuple[tuple[_Check, ...], ...] = field(init=False, repr=False, compare=False)
    _by_tool: dict[str, tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "compiled", tuple(rule.compiled for rule in self.rules))
        context = tuple(tuple(map(_check, rule.context_conditions)) for rule in self.compiled)
        arguments = tuple(tuple(map(_check, rule.args_conditions)) for rule in self.compiled)
        object.__setattr__(self, "_context_checks", context)
        # Context conditions first: they are the cheaper lookups and often the selective ones.
        object.__setattr__(self, "_checks", tuple(map(operator.add, context, arguments)))
        object.__setattr__(self, "_by_tool", {})

    def rules_for_tool(self, tool: str) -> tuple[int, ...]:
        """Indices of the rules whose glob matches `tool`, in order.

        Memoized per tool name: a server exposes a handful of tools and a warm instance
        evaluates the same snapshot for each of them again and again, so the glob scan over
        every rule runs once per (snapshot, tool) and a call only looks at the rules that
        can apply. The memo is a pure function of the immutable rules; it is bounded (and
        simply cleared when full) so arbitrary tool names cannot grow it.
        """
        found = self._by_tool.get(tool)
        if found is None:
            if len(self._by_tool) >= _TOOL_MEMO_SIZE:
                self._by_tool.clear()
            found = tuple(i for i, rule in enumerate(self.compiled) if rule.matches_tool(tool))
            self._by_tool[tool] = found
        return found


@dataclass(frozen=True, slots=True)
class CallContext:
    """What conditions can see about one tool call: `user` is X-Igris-User, `metadata`
    X-Igris-Metadata, `role` the caller's organization role."""

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    user: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    role: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one evaluation.

    `decision` is the deciding rule's action (`alert` and `redact` forward the call, see
    `is_forwarded`), or `deny` with no policy when nothing matched. `rate_limit` is the
    deciding rule's descriptor for the caller to enforce. `redact_paths` (`args.<path>`,
    as written in the rule) are masked in the audit record with `mask_arguments`;
    `result_patterns` in the result returned to the agent with `mask_text`/`mask_strings`.
    """

    decision: Action
    reason: str
    policy_id: str | None = None
    policy_version: int | None = None
    rule_index: int | None = None
    rate_limit: RateLimit | None = None
    redact_paths: tuple[str, ...] = ()
    result_patterns: tuple[re.Pattern[str], ...] = ()
    alert: bool = False

    @property
    def is_forwarded(self) -> bool:
        """True when the call goes upstream on this decision alone (allow, alert, redact);
        require_approval needs a granted approval first."""
        return self.decision in _FORWARDED


_DEFAULT_DENY: Final = Decision(decision="deny", reason=DEFAULT_DENY_REASON)


def _utc(moment: datetime) -> datetime:
    """Naive timestamps are taken as UTC so mixed inputs sort instead of raising."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def order_policies(
    policies: Iterable[PolicySnapshot], server_id: str | None
) -> list[PolicySnapshot]:
    """The policies that apply to a call on `server_id`, in evaluation order.

    Inactive policies and those of other servers are dropped. The final `id` tiebreak makes
    the order total, so the decision never depends on the order the caller passes.
    """
    applicable = [
        policy
        for policy in policies
        if policy.active and (policy.server_id is None or policy.server_id == server_id)
    ]
    applicable.sort(key=lambda p: (p.server_id is None, p.priority, _utc(p.created_at), p.id))
    return applicable


def _decide(policy: PolicySnapshot, index: int) -> Decision:
    rule = policy.rules[index]
    compiled = policy.compiled[index]
    reason = rule.reason if rule.reason and rule.reason.strip() else None
    return Decision(
        decision=rule.action,
        reason=reason or f"{_VERBS[rule.action]} by policy {policy.id} rule {index}",
        policy_id=policy.id,
        policy_version=policy.version,
        rule_index=index,
        rate_limit=rule.rate_limit,
        redact_paths=compiled.redact_paths,
        result_patterns=compiled.result_patterns,
        alert=rule.action == "alert",
    )


def evaluate(
    policies: Iterable[PolicySnapshot], server_id: str | None, ctx: CallContext
) -> Decision:
    """The decision for one tool call: first matching rule wins, otherwise deny."""
    tool = ctx.tool
    for policy in order_policies(policies, server_id):
        checks = policy._checks
        for index in policy.rules_for_tool(tool):
            for check in checks[index]:
                if not check(ctx):
                    break
            else:
                return _decide(policy, index)
    return _DEFAULT_DENY


def denied_regardless_of_arguments(
    policies: Iterable[PolicySnapshot], server_id: str | None, ctx_without_args: CallContext
) -> bool:
    """True only when every possible argument set is denied: such a tool is hidden from
    `tools/list` (API.md §5). Arguments in `ctx_without_args` are ignored.

    A matching rule without argument conditions decides for every call. A matching rule
    with argument conditions may or may not apply: if it is not a deny, some call may get
    through (False); if it is a deny, calls it does not catch fall through to later rules.
    Reaching the end means the default deny. The answer errs towards showing a tool (for
    instance, an allow rule whose argument conditions can never hold still counts as a
    way in): the call itself is still evaluated, so that costs nothing in safety.
    """
    tool = ctx_without_args.tool
    for policy in order_policies(policies, server_id):
        compiled, context_checks = policy.compiled, policy._context_checks
        for index in policy.rules_for_tool(tool):
            for check in context_checks[index]:
                if not check(ctx_without_args):
                    break
            else:
                rule = compiled[index]
                if not rule.args_conditions:
                    return rule.action == "deny"
                if rule.action != "deny":
                    return False
    return True


# --- masking and digests ------------------------------------------------------------------


def _mask_at(value: Any, segments: tuple[str, ...]) -> Any:
    """A copy of `value` with the target(s) of `segments` replaced; untouched branches are
    shared, not copied, so large arguments cost only the path."""
    if not segments:
        return REDACTED
    if isinstance(value, Mapping):
        return _mask_in_object(value, segments[0], segments[1:])
    if isinstance(value, list | tuple):
        return _mask_in_array(value, segments[0], segments[1:])
    return value


def _mask_in_object(value: Mapping[str, Any], head: str, rest: tuple[str, ...]) -> Any:
    if head == "*":
        return {key: _mask_at(item, rest) for key, item in value.items()}
    if head not in value:
        return value
    copy = dict(value)
    copy[head] = _mask_at(value[head], rest)
    return copy


def _mask_in_array(value: Sequence[Any], head: str, rest: tuple[str, ...]) -> Any:
    if head == "*":
        return [_mask_at(item, rest) for item in value]
    if not head.isdigit() or not head.isascii() or int(head) >= len(value):
        return value
    index = int(head)
    items = list(value)
    items[index] = _mask_at(value[index], rest)
    return items


def mask_arguments(arguments: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A new dict with the values at `paths` (`args.<path>`, `*` for every key or element)
    replaced by "[REDACTED]". Missing paths are ignored; `arguments` is not mutated.

    Raises ValueError for a path that is not an argument path (a programming error: paths
    come from validated rules).
    """
    masked: Any = dict(arguments)
    for path in paths:
        try:
            segments = parse_argument_path(path)
        except ValueError:
            raise ValueError("not an args.<path> argument path") from None
        masked = _mask_at(masked, segments)
    return dict(masked)


def mask_text(text: str, patterns: Iterable[re.Pattern[str]]) -> str:
    """`text` with every (non-empty) match of each pattern replaced by "[REDACTED]"."""

    def replace(match: re.Match[str]) -> str:
        return REDACTED if match.group(0) else ""

    for pattern in patterns:
        text = pattern.sub(replace, text)
    return text


def mask_strings(value: Any, patterns: Sequence[re.Pattern[str]]) -> Any:
    """`mask_text` applied to every string inside a JSON value (an MCP result's `content`
    and `structuredContent`), leaving the structure intact; masking serialized JSON could
    cut through escapes. Returns a new value."""
    if not patterns:
        return value
    if isinstance(value, str):
        return mask_text(value, patterns)
    if isinstance(value, Mapping):
        return {key: mask_strings(item, patterns) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_strings(item, patterns) for item in value]
    return value


def canonical_arguments_digest(arguments: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of `arguments`: sorted keys, no whitespace,
    UTF-8 without escaping. An approval binds to this digest (API.md §4.4), so the same
    call by key order or spacing is the same call, and any other argument is not."""
    text = json.dumps(
        dict(arguments),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
