"""The policy engine: evaluation order, first match, deny by default, every condition
operator and path kind, tools/list filtering, masking and the approval digest."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.governance.engine import (
    DEFAULT_DENY_REASON,
    REDACTED,
    CallContext,
    Decision,
    PolicySnapshot,
    canonical_arguments_digest,
    denied_regardless_of_arguments,
    evaluate,
    mask_arguments,
    mask_strings,
    mask_text,
    order_policies,
)
from tests.shared.governance.helpers import T0, policy

SERVER = "srv_a"


def decide(policies: list[PolicySnapshot], tool: str, **ctx: Any) -> Decision:
    return evaluate(policies, SERVER, CallContext(tool=tool, **ctx))


# --- the worked example (API.md §4.2, issue 4) ---------------------------------------------


WORKED = policy(
    "pol_worked",
    {"tool": "delete_*", "action": "deny"},
    {"tool": "drop_*", "action": "deny"},
    {"tool": "write_*", "action": "alert"},
    {"tool": "*", "action": "allow"},
)


@pytest.mark.parametrize(
    ("tool", "expected", "index", "is_forwarded", "alert"),
    [
        ("delete_users", "deny", 0, False, False),
        ("drop_table", "deny", 1, False, False),
        ("write_record", "alert", 2, True, True),
        ("read_data", "allow", 3, True, False),
    ],
)
def test_worked_example(
    tool: str, expected: str, index: int, is_forwarded: bool, alert: bool
) -> None:
    decision = decide([WORKED], tool)
    assert decision.decision == expected
    assert decision.rule_index == index
    assert decision.policy_id == "pol_worked"
    assert decision.is_forwarded is is_forwarded
    assert decision.alert is alert


@pytest.mark.parametrize("tool", ["delete_users", "drop_table", "write_record", "read_data"])
def test_with_no_rules_everything_is_denied(tool: str) -> None:
    for policies in ([], [policy("pol_empty")]):
        decision = decide(policies, tool)
        assert decision.decision == "deny"
        assert decision.reason == DEFAULT_DENY_REASON
        assert decision.policy_id is None
        assert decision.policy_version is None
        assert decision.rule_index is None
        assert not decision.is_forwarded


# --- matching and the decision's contents --------------------------------------------------


def test_no_matching_rule_is_a_deny_by_default() -> None:
    decision = decide([policy("pol_1", {"tool": "read_*", "action": "allow"})], "write_x")
    assert (decision.decision, decision.policy_id) == ("deny", None)
    assert decision.reason == DEFAULT_DENY_REASON


def test_first_matching_rule_wins_even_when_a_later_one_is_more_specific() -> None:
    p = policy(
        "pol_1",
        {"tool": "read_*", "action": "deny"},
        {"tool": "read_data", "action": "allow"},
    )
    assert decide([p], "read_data").decision == "deny"


def test_a_rule_whose_conditions_fail_is_skipped() -> None:
    p = policy(
        "pol_1",
        {"tool": "*", "action": "allow", "conditions": {"role": "admin"}},
        {"tool": "*", "action": "require_approval"},
    )
    assert decide([p], "x", role="admin").decision == "allow"
    decision = decide([p], "x", role="developer")
    assert (decision.decision, decision.rule_index) == ("require_approval", 1)
    assert not decision.is_forwarded


def test_rule_index_counts_within_its_policy_and_version_is_reported() -> None:
    first = policy("pol_1", {"tool": "a", "action": "deny"}, priority=1)
    second = policy(
        "pol_2",
        {"tool": "b", "action": "deny"},
        {"tool": "c", "action": "allow"},
        priority=2,
        version=7,
    )
    decision = decide([first, second], "c")
    assert (decision.policy_id, decision.policy_version, decision.rule_index) == ("pol_2", 7, 1)


def test_reason_is_the_rules_or_a_generated_one() -> None:
    p = policy(
        "pol_1",
        {"tool": "a", "action": "deny", "reason": "Deleting is reserved to admins."},
        {"tool": "b", "action": "deny"},
        {"tool": "c", "action": "deny", "reason": "   "},
    )
    assert decide([p], "a").reason == "Deleting is reserved to admins."
    assert decide([p], "b").reason == "denied by policy pol_1 rule 1"
    assert decide([p], "c").reason == "denied by policy pol_1 rule 2"


def test_decision_carries_rate_limit_and_redaction() -> None:
    p = policy(
        "pol_1",
        {
            "tool": "charge",
            "action": "redact",
            "redact": ["args.card.number", {"result": r"\d{4}-\d{4}"}],
            "rateLimit": {"max": 5, "windowSeconds": 60, "per": "principal"},
        },
        {"tool": "*", "action": "allow"},
    )
    decision = decide([p], "charge")
    assert decision.decision == "redact"
    assert decision.is_forwarded
    assert decision.rate_limit is not None
    assert (decision.rate_limit.max, decision.rate_limit.window_seconds) == (5, 60)
    assert decision.rate_limit.per == "principal"
    assert decision.redact_paths == ("args.card.number",)
    assert [p.pattern for p in decision.result_patterns] == [r"\d{4}-\d{4}"]
    other = decide([p], "other")
    assert (other.rate_limit, other.redact_paths, other.result_patterns) == (None, (), ())


def test_tool_names_are_matched_whole_and_case_sensitively() -> None:
    p = policy("pol_1", {"tool": "read_?ata", "action": "allow"})
    assert decide([p], "read_data").decision == "allow"
    assert decide([p], "read_data2").decision == "deny"
    assert decide([p], "Read_data").decision == "deny"
    assert decide([p], "read_ata").decision == "deny"


# --- ordering ------------------------------------------------------------------------------


def test_server_policies_come_before_org_wide_whatever_their_priority() -> None:
    org_wide = policy("pol_org", {"tool": "*", "action": "deny"}, priority=0)
    server = policy("pol_srv", {"tool": "*", "action": "allow"}, server_id=SERVER, priority=999)
    assert [p.id for p in order_policies([org_wide, server], SERVER)] == ["pol_srv", "pol_org"]
    assert decide([org_wide, server], "x").policy_id == "pol_srv"


def test_within_a_group_lower_priority_then_earlier_creation_then_id() -> None:
    later = T0 + timedelta(seconds=1)
    policies = [
        policy("pol_c", priority=5, created_at=later),
        policy("pol_b", priority=5, created_at=T0),
        policy("pol_a", priority=5, created_at=later),
        policy("pol_d", priority=1, created_at=later),
        policy("pol_s", priority=50, server_id=SERVER),
    ]
    ordered = [p.id for p in order_policies(policies, SERVER)]
    assert ordered == ["pol_s", "pol_d", "pol_b", "pol_a", "pol_c"]


def test_inactive_and_other_servers_policies_are_dropped() -> None:
    policies = [
        policy("pol_off", {"tool": "*", "action": "allow"}, active=False),
        policy("pol_off_srv", {"tool": "*", "action": "allow"}, server_id=SERVER, active=False),
        policy("pol_other", {"tool": "*", "action": "allow"}, server_id="srv_other"),
    ]
    assert order_policies(policies, SERVER) == []
    assert decide(policies, "x").decision == "deny"
    assert [p.id for p in order_policies(policies, "srv_other")] == ["pol_other"]


def test_naive_and_aware_timestamps_sort_together_as_utc() -> None:
    naive = policy("pol_naive", created_at=datetime(2026, 11, 29, 9, 0))
    aware = policy("pol_aware", created_at=T0)
    assert [p.id for p in order_policies([aware, naive], SERVER)] == ["pol_naive", "pol_aware"]


# --- conditions: every operator and path kind ----------------------------------------------


ARGS: dict[str, Any] = {
    "name": "alice",
    "age": 30,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "tags": ["a", "b"],
    "nested": {"id": "x1", "items": [{"id": 7}, {"id": 8}]},
    "0": "zero",
}

CONDITION_CASES: list[tuple[dict[str, Any], bool]] = [
    # literal equality (JSON semantics)
    ({"args.name": "alice"}, True),
    ({"args.name": "bob"}, False),
    ({"args.age": 30}, True),
    ({"args.age": 30.0}, True),
    ({"args.age": "30"}, False),
    ({"args.flag": True}, True),
    ({"args.flag": 1}, False),
    ({"args.age": True}, False),
    ({"args.nothing": None}, True),
    ({"args.missing": None}, False),
    ({"args.tags": ["a", "b"]}, True),
    ({"args.tags": ["b", "a"]}, False),
    ({"args.tags": "a"}, False),
    ({"args.nested.id": "x1"}, True),
    ({"args.nested.items.1.id": 8}, True),
    ({"args.nested.items.2.id": 8}, False),
    ({"args.nested.items.first.id": 7}, False),
    ({"args.nested.items.-1.id": 8}, False),
    ({"args.0": "zero"}, True),
    ({"args.name.first": "a"}, False),
    # in / notIn: present scalars only
    ({"args.name": {"in": ["alice", "bob"]}}, True),
    ({"args.name": {"in": ["bob"]}}, False),
    ({"args.age": {"in": [1, 30]}}, True),
    ({"args.flag": {"in": [1]}}, False),
    ({"args.flag": {"in": [True]}}, True),
    ({"args.nothing": {"in": [None]}}, True),
    ({"args.missing": {"in": [None]}}, False),
    ({"args.tags": {"in": ["a"]}}, False),
    ({"args.name": {"notIn": ["bob"]}}, True),
    ({"args.name": {"notIn": ["alice"]}}, False),
    ({"args.flag": {"notIn": [1]}}, True),
    ({"args.missing": {"notIn": ["x"]}}, False),
    ({"args.tags": {"notIn": ["x"]}}, False),
    # matches: strings only
    ({"args.name": {"matches": "al*"}}, True),
    ({"args.name": {"matches": "?lice"}}, True),
    ({"args.name": {"matches": "b*"}}, False),
    ({"args.age": {"matches": "*"}}, False),
    ({"args.missing": {"matches": "*"}}, False),
    # exists
    ({"args.name": {"exists": True}}, True),
    ({"args.name": {"exists": False}}, False),
    ({"args.nothing": {"exists": True}}, True),
    ({"args.missing": {"exists": True}}, False),
    ({"args.missing": {"exists": False}}, True),
    ({"args.name.deeper": {"exists": False}}, True),
    # numeric comparisons: numbers only, never booleans
    ({"args.age": {"gt": 29}}, True),
    ({"args.age": {"gt": 30}}, False),
    ({"args.age": {"gte": 30}}, True),
    ({"args.age": {"gte": 30.5}}, False),
    ({"args.age": {"lt": 31}}, True),
    ({"args.age": {"lt": 30}}, False),
    ({"args.age": {"lte": 30}}, True),
    ({"args.age": {"lte": 29.9}}, False),
    ({"args.ratio": {"gt": 0.25}}, True),
    ({"args.flag": {"gt": 0}}, False),
    ({"args.flag": {"lt": 2}}, False),
    ({"args.name": {"gt": 0}}, False),
    ({"args.missing": {"lt": 100}}, False),
    # several conditions: all must hold
    ({"args.name": "alice", "args.age": {"gte": 18}}, True),
    ({"args.name": "alice", "args.age": {"gte": 65}}, False),
    # user, role, metadata
    ({"user": "u_1"}, True),
    ({"user": "u_2"}, False),
    ({"user": {"matches": "u_*"}}, True),
    ({"user": {"exists": True}}, True),
    ({"role": "developer"}, True),
    ({"role": {"in": ["owner", "admin"]}}, False),
    ({"role": {"notIn": ["auditor"]}}, True),
    ({"metadata.env": "prod"}, True),
    ({"metadata.env": {"in": ["staging"]}}, False),
    ({"metadata.retries": {"lte": 3}}, True),
    ({"metadata.team.name": "core"}, True),
    ({"metadata.absent": {"exists": False}}, True),
    ({"metadata.absent": "x"}, False),
]


@pytest.mark.parametrize(("conditions", "holds"), CONDITION_CASES)
def test_condition(conditions: dict[str, Any], holds: bool) -> None:
    p = policy("pol_1", {"tool": "t", "action": "allow", "conditions": conditions})
    ctx = CallContext(
        tool="t",
        arguments=ARGS,
        user="u_1",
        role="developer",
        metadata={"env": "prod", "retries": 2, "team.name": "core"},
    )
    assert (evaluate([p], SERVER, ctx).decision == "allow") is holds


@pytest.mark.parametrize(
    ("conditions", "holds"),
    [
        ({"user": {"exists": False}}, True),
        ({"user": "u_1"}, False),
        ({"user": {"notIn": ["u_1"]}}, False),
        ({"role": {"exists": False}}, True),
        ({"metadata.env": {"exists": False}}, True),
    ],
)
def test_absent_user_role_and_metadata_are_missing(conditions: dict[str, Any], holds: bool) -> None:
    p = policy("pol_1", {"tool": "t", "action": "allow", "conditions": conditions})
    assert (decide([p], "t").decision == "allow") is holds


# --- tools/list filtering ------------------------------------------------------------------


def hidden(policies: list[PolicySnapshot], tool: str, **ctx: Any) -> bool:
    return denied_regardless_of_arguments(policies, SERVER, CallContext(tool=tool, **ctx))


def test_hidden_with_no_policies_and_shown_with_allow_all() -> None:
    assert hidden([], "anything")
    assert not hidden([WORKED], "read_data")
    assert not hidden([WORKED], "write_record")
    assert hidden([WORKED], "delete_users")


@pytest.mark.parametrize("action", ["allow", "alert", "redact", "require_approval"])
def test_every_non_deny_action_counts_as_reachable(action: str) -> None:
    rule: dict[str, Any] = {"tool": "t", "action": action}
    if action == "redact":
        rule["redact"] = ["args.x"]
    assert not hidden([policy("pol_1", rule)], "t")
    assert not hidden([policy("pol_1", {**rule, "conditions": {"args.x": 1}})], "t")


def test_argument_conditions_make_a_deny_uncertain() -> None:
    deny_some = {"tool": "t", "action": "deny", "conditions": {"args.amount": {"gt": 100}}}
    assert hidden([policy("pol_1", deny_some)], "t")
    assert not hidden([policy("pol_1", deny_some, {"tool": "*", "action": "allow"})], "t")
    assert hidden([policy("pol_1", deny_some, {"tool": "*", "action": "deny"})], "t")
    allow_some = {"tool": "t", "action": "allow", "conditions": {"args.amount": {"lt": 10}}}
    assert not hidden([policy("pol_1", allow_some, {"tool": "*", "action": "deny"})], "t")


def test_context_conditions_are_evaluated_and_arguments_ignored() -> None:
    p = policy(
        "pol_1",
        {"tool": "*", "action": "allow", "conditions": {"role": "admin"}},
        {"tool": "x", "action": "allow", "conditions": {"args.a": 1, "user": "u_ok"}},
    )
    assert not hidden([p], "t", role="admin")
    assert hidden([p], "t", role="developer")
    assert not hidden([p], "x", role="developer", user="u_ok")
    assert hidden([p], "x", role="developer", user="u_other", arguments={"a": 1})


def test_filtering_follows_the_evaluation_order() -> None:
    server_deny = policy("pol_srv", {"tool": "t", "action": "deny"}, server_id=SERVER)
    org_allow = policy("pol_org", {"tool": "*", "action": "allow"}, priority=0)
    assert hidden([org_allow, server_deny], "t")
    assert not hidden([org_allow, server_deny], "u")
    inactive = policy("pol_off", {"tool": "*", "action": "allow"}, active=False)
    assert hidden([inactive], "t")


# --- masking and the digest ----------------------------------------------------------------


def test_mask_arguments_replaces_paths_and_leaves_the_input_alone() -> None:
    arguments: dict[str, Any] = {
        "password": "hunter2",
        "card": {"number": "4111", "exp": "12/30"},
        "items": [{"ssn": "1"}, {"ssn": "2", "keep": True}, "scalar"],
        "keep": 1,
    }
    snapshot = repr(arguments)
    masked = mask_arguments(
        arguments,
        ["args.password", "args.card.number", "args.items.*.ssn", "args.absent", "args.keep.x"],
    )
    assert masked == {
        "password": REDACTED,
        "card": {"number": REDACTED, "exp": "12/30"},
        "items": [{"ssn": REDACTED}, {"ssn": REDACTED, "keep": True}, "scalar"],
        "keep": 1,
    }
    assert repr(arguments) == snapshot
    assert masked is not arguments


def test_mask_arguments_by_index_and_whole_objects() -> None:
    arguments = {"rows": [[1, 2], [3, 4]], "creds": {"a": 1, "b": {"c": 2}}}
    assert mask_arguments(arguments, ["args.rows.1.0", "args.rows.9", "args.creds.*"]) == {
        "rows": [[1, 2], [REDACTED, 4]],
        "creds": {"a": REDACTED, "b": REDACTED},
    }
    assert mask_arguments(arguments, ["args.*"]) == {"rows": REDACTED, "creds": REDACTED}
    assert mask_arguments(arguments, []) == arguments


def test_mask_arguments_refuses_paths_that_are_not_argument_paths() -> None:
    with pytest.raises(ValueError, match=r"args\.<path>"):
        mask_arguments({"password": "x"}, ["password"])


def test_mask_text_and_strings() -> None:
    patterns = (re.compile(r"\d{3}-\d{2}-\d{4}"), re.compile(r"(?i)secret"))
    text = "ssn 123-45-6789 and SECRET and 123-45-6789."
    assert mask_text(text, patterns) == f"ssn {REDACTED} and {REDACTED} and {REDACTED}."
    assert mask_text(text, ()) == text
    assert mask_text("abc", [re.compile(r"x*")]) == "abc"  # empty matches never inserted
    result = {"content": [{"type": "text", "text": "id 123-45-6789"}], "isError": False, "n": 1}
    assert mask_strings(result, patterns) == {
        "content": [{"type": "text", "text": f"id {REDACTED}"}],
        "isError": False,
        "n": 1,
    }
    assert mask_strings(result, ()) is result


def test_canonical_digest_ignores_key_order_and_spacing_but_not_values() -> None:
    expected = hashlib.sha256('{"a":[1,{"c":null,"d":"é"}],"b":"x"}'.encode()).hexdigest()
    assert canonical_arguments_digest({"b": "x", "a": [1, {"d": "é", "c": None}]}) == expected
    assert canonical_arguments_digest({"a": 1}) != canonical_arguments_digest({"a": 2})
    assert canonical_arguments_digest({"a": 1}) != canonical_arguments_digest({"a": "1"})
    assert canonical_arguments_digest({}) == hashlib.sha256(b"{}").hexdigest()


def test_snapshot_rules_are_a_tuple_and_compiled_once() -> None:
    p = policy("pol_1", {"tool": "a", "action": "allow"}, {"tool": "b", "action": "deny"})
    assert isinstance(p.rules, tuple)
    assert [c.action for c in p.compiled] == ["allow", "deny"]
    with pytest.raises(AttributeError):
        p.priority = 3  # type: ignore[misc]


def test_the_per_tool_memo_is_exact_and_bounded() -> None:
    p = policy(
        "pol_1",
        {"tool": "read_*", "action": "allow"},
        {"tool": "*", "action": "deny", "conditions": {"role": "auditor"}},
        {"tool": "write_?", "action": "alert"},
    )
    assert p.rules_for_tool("read_x") == (0, 1)
    assert p.rules_for_tool("write_a") == (1, 2)
    assert p.rules_for_tool("read_x") == (0, 1)
    for i in range(1000):
        assert p.rules_for_tool(f"tool_{i}") == (1,)
    assert len(p._by_tool) <= 256
    assert decide([p], "write_a").decision == "alert"
    assert decide([p], "write_a", role="auditor").decision == "deny"
