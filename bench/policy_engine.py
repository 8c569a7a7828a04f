"""Policy evaluation time per call for 10, 100 and 1,000 rules.

Rules are a realistic mix (exact names, prefix/suffix/infix globs, `?`, conditions on role,
user, metadata and arguments, rate limits, redaction), split into policies of at most 50
rules, half on the server and half org-wide. Two calls are timed:

- "match at end": only the very last rule (of the last org-wide policy) decides, so every
  rule before it is scanned, and several of those match the tool and fail on a condition;
- "no match": nothing matches and the default deny applies (the worst case, every rule
  scanned).

Each figure is the median of 10,000 individually timed `evaluate` calls (the ordering of
policies is included: it runs on every call). `denied_regardless_of_arguments` (run per
tool on every `tools/list`) and `validate_rules` (run when policies are loaded into an
instance's cache) are timed for 1,000 rules.

Run: `.venv/bin/python -m bench.policy_engine`.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.governance.engine import (
    CallContext,
    PolicySnapshot,
    denied_regardless_of_arguments,
    evaluate,
)
from shared.governance.rules import validate_rules

SERVER = "srv_bench"
RULES_PER_POLICY = 50
SIZES = (10, 100, 1000)
EVALUATIONS = 10_000
T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)

LIMIT = {"max": 100, "windowSeconds": 60, "per": "principal"}


def filler_rule(i: int) -> dict[str, Any]:
    """Rule i of a realistic policy set; none of them decides the benchmark calls."""
    shapes: list[dict[str, Any]] = [
        {"tool": f"delete_{i}_*", "action": "deny", "reason": "Deletes need a ticket."},
        {"tool": f"tool_{i}", "action": "allow", "conditions": {"role": {"in": ["owner"]}}},
        {
            "tool": f"*_{i}_export",
            "action": "require_approval",
            "conditions": {"args.format": {"in": ["csv", "xlsx"]}},
        },
        {"tool": f"write_{i}?", "action": "alert", "conditions": {"metadata.env": "prod"}},
        {
            "tool": f"search_{i}_*",
            "action": "allow",
            "conditions": {"args.limit": {"lte": 100}},
            "rateLimit": LIMIT,
        },
        {"tool": f"*payment{i}*", "action": "redact", "redact": ["args.card.number"]},
        # The next three match the benchmark's tool and fail on a condition: the engine has
        # to evaluate conditions, not just globs, as it would in a real set.
        {"tool": "query_*", "action": "deny", "conditions": {"args.sql": {"matches": "*DROP*"}}},
        {"tool": "*", "action": "deny", "conditions": {"role": "auditor"}},
        {
            "tool": "query_?rders",
            "action": "allow",
            "conditions": {"user": {"matches": "*@example.com"}, "args.limit": {"lt": 10}},
        },
        {"tool": f"admin_{i}", "action": "deny"},
    ]
    return shapes[i % len(shapes)]


DECIDING_RULE = {
    "tool": "query_*",
    "action": "allow",
    "conditions": {"args.limit": {"lte": 1000}, "metadata.env": {"notIn": ["prod"]}},
    "rateLimit": LIMIT,
}


def policy_set(rule_count: int) -> list[PolicySnapshot]:
    """`rule_count` rules in policies of at most 50; the deciding rule is the very last."""
    raw = [filler_rule(i) for i in range(rule_count - 1)] + [DECIDING_RULE]
    chunks = [raw[i : i + RULES_PER_POLICY] for i in range(0, rule_count, RULES_PER_POLICY)]
    policies = []
    for n, chunk in enumerate(chunks):
        on_server = n < len(chunks) // 2  # the server's policies are evaluated first
        policies.append(
            PolicySnapshot(
                id=f"pol_{n:04d}",
                version=1,
                server_id=SERVER if on_server else None,
                priority=n,
                created_at=T0 + timedelta(minutes=n),
                active=True,
                rules=tuple(validate_rules(chunk)),
            )
        )
    policies.reverse()  # as the database might return them: the engine orders them
    return policies


MATCH_AT_END = CallContext(
    tool="query_orders",
    arguments={"sql": "SELECT * FROM orders", "limit": 50, "format": "json"},
    user="dev@example.org",
    metadata={"env": "staging"},
    role="developer",
)
NO_MATCH = CallContext(
    tool="unknown_tool",
    arguments={"limit": 50},
    user="dev@example.org",
    metadata={"env": "staging"},
    role="developer",
)


def median_us(call: Callable[[int], object], runs: int, *, warm: bool = True) -> float:
    """Median wall time of one call, in microseconds (each call timed on its own)."""
    if warm:
        for i in range(min(runs, 200)):  # warm caches and the allocator
            call(i)
    clock = time.perf_counter_ns
    samples = []
    for i in range(runs):
        started = clock()
        call(i)
        samples.append(clock() - started)
    return statistics.median(samples) / 1000


def first_call_contexts(count: int) -> list[CallContext]:
    """Calls for `count` distinct unknown tools: each misses the per-tool memo, so every
    call scans every rule's glob (the first call for a tool on a fresh instance)."""
    return [
        CallContext(
            tool=f"unknown_tool_{i}",
            arguments={"limit": 50},
            user="dev@example.org",
            metadata={"env": "staging"},
            role="developer",
        )
        for i in range(count)
    ]


def evaluation_row(size: int, cold: list[CallContext]) -> str:
    """One line of the table: `size` rules, the three calls."""
    policies = policy_set(size)
    decided = evaluate(policies, SERVER, MATCH_AT_END)
    assert decided.decision == "allow"
    assert decided.rule_index == len(policies[0].rules) - 1, "the last rule must decide"
    assert evaluate(policies, SERVER, NO_MATCH).policy_id is None
    at_end = median_us(lambda _: evaluate(policies, SERVER, MATCH_AT_END), EVALUATIONS)
    none = median_us(lambda _: evaluate(policies, SERVER, NO_MATCH), EVALUATIONS)
    first = median_us(lambda i: evaluate(policies, SERVER, cold[i]), EVALUATIONS, warm=False)
    return f"  {size:>6} {len(policies):>9} {at_end:>11.1f} µs {none:>11.1f} µs {first:>29.1f} µs"


def main() -> None:
    print(
        f"policy engine, median of {EVALUATIONS:,} evaluations per figure "
        f"({sys.version.split()[0]})"
    )
    print(
        f"  {'rules':>6} {'policies':>9} {'match at end':>14} {'no match':>14} "
        f"{'no match, 1st call for the tool':>32}"
    )
    cold = first_call_contexts(EVALUATIONS)
    for size in SIZES:
        print(evaluation_row(size, cold))

    policies = policy_set(1000)
    listing = CallContext(
        tool="query_orders", user="dev@example.org", metadata={"env": "staging"}, role="developer"
    )
    assert not denied_regardless_of_arguments(policies, SERVER, listing)
    hidden = median_us(
        lambda _: denied_regardless_of_arguments(policies, SERVER, listing), EVALUATIONS
    )
    hidden_first = median_us(
        lambda i: denied_regardless_of_arguments(policies, SERVER, cold[i]),
        EVALUATIONS,
        warm=False,
    )
    print(
        f"  denied_regardless_of_arguments, 1,000 rules: {hidden:.1f} µs per tool "
        f"(to the last rule), {hidden_first:.1f} µs for a tool seen first "
        f"({hidden * 50 / 1000:.2f} / {hidden_first * 50 / 1000:.2f} ms for a 50-tool tools/list)"
    )

    raw = [filler_rule(i) for i in range(999)] + [DECIDING_RULE]
    parse = median_us(lambda _: validate_rules(raw), 50)
    print(f"  validate_rules, 1,000 rules (loading a policy set): {parse / 1000:.2f} ms")


if __name__ == "__main__":
    main()
