"""Property-based tests where the rules compose: glob matching, policy ordering, the
tools/list filter and the condition operators."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.governance.engine import (
    CallContext,
    PolicySnapshot,
    denied_regardless_of_arguments,
    evaluate,
    glob_match,
)
from shared.governance.rules import validate_rules
from tests.shared.governance.helpers import T0

# --- glob matching -------------------------------------------------------------------------

# Regex metacharacters and glob look-alikes are literal in our globs.
NAME_ALPHABET = "ab.[]\\^$+(){}|-\n"
PATTERN_ALPHABET = NAME_ALPHABET + "*?"
names = st.text(alphabet=NAME_ALPHABET, max_size=12)
patterns = st.text(alphabet=PATTERN_ALPHABET, max_size=10)


def reference_regex(pattern: str) -> re.Pattern[str]:
    """The obvious (backtracking) translation: fine for short inputs, the oracle here."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(patterns, names)
def test_glob_agrees_with_a_reference_regex(pattern: str, name: str) -> None:
    assert glob_match(pattern, name) == (reference_regex(pattern).fullmatch(name) is not None)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab*?", max_size=8), st.text(alphabet="ab", max_size=8))
def test_glob_agrees_with_a_reference_regex_on_a_dense_alphabet(pattern: str, name: str) -> None:
    """Two letters make overlapping pieces (`*a*b*` against `aba`) common: this is where a
    greedy matcher that places a piece badly would go wrong."""
    assert glob_match(pattern, name) == (reference_regex(pattern).fullmatch(name) is not None)


@settings(max_examples=300, deadline=None)
@given(patterns, st.data())
def test_names_built_from_the_pattern_match_it(pattern: str, data: st.DataObject) -> None:
    """Replace each `*` by any text and each `?` by any character: always a match."""
    name = "".join(
        data.draw(names) if c == "*" else data.draw(st.characters()) if c == "?" else c
        for c in pattern
    )
    assert glob_match(pattern, name)


@given(st.text())
def test_star_matches_everything(name: str) -> None:
    assert glob_match("*", name)
    assert glob_match("**", name)


@given(st.text(alphabet=NAME_ALPHABET, max_size=8), names)
def test_a_pattern_without_wildcards_matches_only_itself(pattern: str, name: str) -> None:
    assert glob_match(pattern, pattern)
    assert glob_match(pattern, name) == (pattern == name)


@given(st.integers(min_value=0, max_value=6), st.text(max_size=8))
def test_question_marks_match_exactly_that_many_characters(count: int, name: str) -> None:
    assert glob_match("?" * count, name) == (len(name) == count)


def test_no_catastrophic_backtracking() -> None:
    started = time.perf_counter()
    for pattern in ["*a" * 30 + "*b", "*a*a*a*a*a*a*a*a*a*b", "?*" * 40 + "b", "*a?" * 20 + "c"]:
        assert not glob_match(pattern, "a" * 20_000)
    assert time.perf_counter() - started < 2.0


# --- ordering: the engine against a naive reference ----------------------------------------

SERVERS = [None, "srv_a", "srv_b"]
TOOLS = ["*", "read_*", "write_*", "read_data", "?ead_data", "delete_*", "*_data"]
ACTIONS = ["allow", "deny", "alert", "require_approval"]
ROLES = ["owner", "admin", "developer"]
USERS = ["u_1", "u_2"]


@st.composite
def raw_rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "tool": draw(st.sampled_from(TOOLS)),
        "action": draw(st.sampled_from(ACTIONS)),
    }
    conditions: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        conditions["role"] = draw(st.sampled_from(ROLES))
    if draw(st.integers(0, 3)) == 0:
        conditions["user"] = {"in": draw(st.lists(st.sampled_from(USERS), max_size=2))}
    if conditions:
        rule["conditions"] = conditions
    return rule


@st.composite
def policy_sets(draw: st.DrawFn) -> list[PolicySnapshot]:
    ids = draw(st.lists(st.sampled_from([f"pol_{i}" for i in range(12)]), unique=True, max_size=8))
    policies = []
    for policy_id in ids:
        raw = draw(st.lists(raw_rules(), max_size=3))
        policies.append(
            PolicySnapshot(
                id=policy_id,
                version=draw(st.integers(min_value=1, max_value=3)),
                server_id=draw(st.sampled_from(SERVERS)),
                priority=draw(st.integers(min_value=0, max_value=1)),
                created_at=T0 + timedelta(seconds=draw(st.integers(min_value=0, max_value=1))),
                active=draw(st.sampled_from([True, True, True, False])),
                rules=tuple(validate_rules(raw)) if raw else (),
            )
        )
    return policies


contexts = st.builds(
    CallContext,
    tool=st.sampled_from(["read_data", "write_x", "delete_y", "head_data", "other"]),
    user=st.sampled_from([None, *USERS]),
    role=st.sampled_from([None, *ROLES]),
)


def reference_conditions_hold(conditions: dict[str, Any] | None, ctx: CallContext) -> bool:
    for path, expected in (conditions or {}).items():
        if path == "role" and ctx.role != expected:
            return False
        if path == "user" and (ctx.user is None or ctx.user not in expected["in"]):
            return False
    return True


def reference_decision(
    policies: list[PolicySnapshot], server_id: str, ctx: CallContext
) -> tuple[str, str | None, int | None, int | None]:
    """Filter, then stable-sort from the least significant key up, then scan."""
    ordered = [p for p in policies if p.active and p.server_id in (server_id, None)]
    ordered = sorted(ordered, key=lambda p: p.id)
    ordered = sorted(ordered, key=lambda p: p.created_at)
    ordered = sorted(ordered, key=lambda p: p.priority)
    ordered = sorted(ordered, key=lambda p: p.server_id != server_id)
    for p in ordered:
        for index, rule in enumerate(p.rules):
            if reference_regex(rule.tool).fullmatch(ctx.tool) and reference_conditions_hold(
                rule.conditions, ctx
            ):
                return rule.action, p.id, p.version, index
    return "deny", None, None, None


@settings(max_examples=200, deadline=None)
@given(policy_sets(), st.sampled_from(["srv_a", "srv_b"]), contexts, st.data())
def test_evaluation_matches_the_reference_and_ignores_input_order(
    policies: list[PolicySnapshot], server_id: str, ctx: CallContext, data: st.DataObject
) -> None:
    decision = evaluate(policies, server_id, ctx)
    got = (decision.decision, decision.policy_id, decision.policy_version, decision.rule_index)
    assert got == reference_decision(policies, server_id, ctx)
    assert evaluate(data.draw(st.permutations(policies)), server_id, ctx) == decision
    assert evaluate(reversed(policies), server_id, ctx) == decision


# --- tools/list filtering is sound ---------------------------------------------------------

ARG_CONDITIONS = [
    {"args.amount": {"gt": 100}},
    {"args.amount": {"lte": 100}},
    {"args.mode": "dry_run"},
    {"args.mode": {"exists": False}},
    {"args.items.0": {"in": ["a", "b"]}},
]
argument_sets = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.sampled_from([0, 100, 101, 1.5, "100", True]),
        "mode": st.sampled_from(["dry_run", "live", None]),
        "items": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
    },
)


@st.composite
def rules_with_arguments(draw: st.DrawFn) -> dict[str, Any]:
    rule = draw(raw_rules())
    if draw(st.booleans()):
        rule["conditions"] = {**rule.get("conditions", {}), **draw(st.sampled_from(ARG_CONDITIONS))}
    return rule


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(rules_with_arguments(), min_size=1, max_size=5), max_size=3),
    contexts,
    st.lists(argument_sets, min_size=1, max_size=8),
)
def test_a_hidden_tool_is_denied_whatever_the_arguments(
    rule_lists: list[list[dict[str, Any]]],
    ctx: CallContext,
    arguments: list[dict[str, Any]],
) -> None:
    policies = [
        PolicySnapshot(f"pol_{i}", 1, None, i, T0, True, tuple(validate_rules(raw)))
        for i, raw in enumerate(rule_lists)
    ]
    decisions = [
        evaluate(policies, "srv_a", CallContext(ctx.tool, args, ctx.user, {}, ctx.role)).decision
        for args in arguments
    ]
    hidden = denied_regardless_of_arguments(policies, "srv_a", ctx)
    if hidden:
        assert set(decisions) == {"deny"}
    has_argument_conditions = any(
        rule.compiled.args_conditions for p in policies for rule in p.rules
    )
    if not has_argument_conditions:
        assert hidden == (decisions[0] == "deny")


# --- condition operators -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0.0, 1.0, 2.5, -1.5]),
    st.sampled_from(["", "a", "b", "1"]),
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=6)


def holds(conditions: dict[str, Any], arguments: dict[str, Any]) -> bool:
    p = PolicySnapshot(
        "pol_1",
        1,
        None,
        0,
        T0,
        True,
        tuple(validate_rules([{"tool": "t", "action": "allow", "conditions": conditions}])),
    )
    return evaluate([p], "srv_a", CallContext("t", arguments)).decision == "allow"


def json_same(a: Any, b: Any) -> bool:
    """Reference JSON equality: booleans are not numbers, 1 == 1.0, arrays in order."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(json_same, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.just({}), json_values.map(lambda v: {"v": v})),
    st.lists(json_scalars, max_size=4),
)
def test_in_and_not_in_split_present_scalars(arguments: dict[str, Any], items: list[Any]) -> None:
    is_in = holds({"args.v": {"in": items}}, arguments)
    not_in = holds({"args.v": {"notIn": items}}, arguments)
    if "v" not in arguments or isinstance(arguments["v"], list):
        assert not is_in
        assert not not_in
    else:
        assert is_in == any(json_same(arguments["v"], item) for item in items)
        assert not_in == (not is_in)


@settings(max_examples=200, deadline=None)
@given(json_values, st.sampled_from([-1, 0, 1, 2.5]))
def test_comparisons_split_numbers_and_reject_the_rest(value: Any, bound: float) -> None:
    arguments = {"v": value}
    results = {op: holds({"args.v": {op: bound}}, arguments) for op in ("gt", "gte", "lt", "lte")}
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert results == {
            "gt": value > bound,
            "gte": value >= bound,
            "lt": value < bound,
            "lte": value <= bound,
        }
    else:
        assert not any(results.values())


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_literal_equality_is_json_equality(value: Any, expected: Any) -> None:
    assert holds({"args.v": expected}, {"v": value}) == json_same(value, expected)
    assert not holds({"args.v": expected}, {})
    assert holds({"args.v": {"exists": True}}, {"v": value})
    assert not holds({"args.v": {"exists": False}}, {"v": value})
