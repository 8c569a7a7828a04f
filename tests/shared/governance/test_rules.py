"""Rule validation: every bad field is reported at its wire path, without echoing input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from shared.governance.rules import (
    MAX_RULES,
    Rule,
    Rules,
    RuleValidationError,
    rules_to_json,
    validate_rules,
)

SECRET = "sk-live-DO-NOT-ECHO"


def errors_of(raw: Any) -> dict[str, str]:
    """field → message for rules that must fail validation."""
    with pytest.raises(RuleValidationError) as caught:
        validate_rules(raw)
    details = caught.value.details
    assert all(set(d) == {"field", "message"} for d in details)
    return {d["field"]: d["message"] for d in details}


def rule_errors(rule: dict[str, Any]) -> dict[str, str]:
    return errors_of([rule])


def test_a_full_rule_round_trips_through_its_wire_form() -> None:
    raw = [
        {
            "tool": "charge_*",
            "action": "redact",
            "conditions": {
                "user": {"matches": "*@example.com"},
                "role": {"in": ["owner", "admin"]},
                "metadata.env": "prod",
                "args.amount": {"gt": 100},
                "args.currency": {"notIn": ["XBT"]},
                "args.items.0.id": {"exists": True},
                "args.tags": ["a", {"nested": [1, 2.5, None, True]}],
                "args.limit": {"lte": 1.5},
            },
            "rateLimit": {"max": 10, "windowSeconds": 3600, "per": "session"},
            "redact": ["args.card.number", "args.items.*.ssn", {"result": r"\d{16}"}],
            "reason": "Card data is masked in the audit trail.",
        },
        {"tool": "*", "action": "allow"},
    ]
    parsed = validate_rules(raw)
    assert rules_to_json(parsed) == raw
    assert validate_rules(rules_to_json(parsed)) == parsed
    assert parsed[0].rate_limit is not None
    assert parsed[0].rate_limit.window_seconds == 3600


@pytest.mark.parametrize("action", ["allow", "deny", "alert", "require_approval"])
def test_every_action_is_accepted(action: str) -> None:
    assert validate_rules([{"tool": "x", "action": action}])[0].action == action


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"tool": "x", "action": "permit"}, "rules[0].action"),
        ({"tool": "x", "action": "ALLOW"}, "rules[0].action"),
        ({"tool": "x", "action": 1}, "rules[0].action"),
        ({"tool": "x"}, "rules[0].action"),
        ({"tool": "", "action": "allow"}, "rules[0].tool"),
        ({"tool": "   ", "action": "allow"}, "rules[0].tool"),
        ({"tool": " read_*", "action": "allow"}, "rules[0].tool"),
        ({"tool": "x" * 257, "action": "allow"}, "rules[0].tool"),
        ({"tool": ["x"], "action": "allow"}, "rules[0].tool"),
        ({"action": "allow"}, "rules[0].tool"),
        ({"tool": "x", "action": "allow", "reason": "r" * 501}, "rules[0].reason"),
        ({"tool": "x", "action": "allow", "priority": 1}, "rules[0].priority"),
        ({"tool": "x", "action": "allow", "rate_limit": {}}, "rules[0].rate_limit"),
    ],
)
def test_bad_rule_fields_are_named(rule: dict[str, Any], field: str) -> None:
    assert list(rule_errors(rule)) == [field]


@pytest.mark.parametrize(
    ("conditions", "field"),
    [
        ({"args.x": {"regex": "a.*"}}, "rules[0].conditions.args.x"),
        ({"args.x": {"in": [1], "notIn": [2]}}, "rules[0].conditions.args.x"),
        ({"args.x": {}}, "rules[0].conditions.args.x"),
        ({"args.x": {"in": "abc"}}, "rules[0].conditions.args.x"),
        ({"args.x": {"in": [[1]]}}, "rules[0].conditions.args.x"),
        ({"args.x": {"notIn": [{"a": 1}]}}, "rules[0].conditions.args.x"),
        ({"args.x": {"in": list(range(1001))}}, "rules[0].conditions.args.x"),
        ({"args.x": {"matches": 5}}, "rules[0].conditions.args.x"),
        ({"args.x": {"matches": "*" * 257}}, "rules[0].conditions.args.x"),
        ({"args.x": {"exists": "yes"}}, "rules[0].conditions.args.x"),
        ({"args.x": {"exists": 1}}, "rules[0].conditions.args.x"),
        ({"args.x": {"gt": "5"}}, "rules[0].conditions.args.x"),
        ({"args.x": {"gte": True}}, "rules[0].conditions.args.x"),
        ({"args.x": {"lt": None}}, "rules[0].conditions.args.x"),
        ({"args.x": {"lte": float("inf")}}, "rules[0].conditions.args.x"),
        ({"args.x": float("nan")}, "rules[0].conditions.args.x"),
        ({"args.x": {"eq": {"nested": "object"}}}, "rules[0].conditions.args.x"),
        ({"args.x": ("tuple",)}, "rules[0].conditions.args.x"),
        ({"role": ["admin", "owner"]}, "rules[0].conditions.role"),
        ({"role": {"gt": 1}}, "rules[0].conditions.role"),
        ({"user": 42}, "rules[0].conditions.user"),
        ({"user": None}, "rules[0].conditions.user"),
        ({"metadata.env": ["prod"]}, "rules[0].conditions.metadata.env"),
    ],
)
def test_bad_operators_are_named(conditions: dict[str, Any], field: str) -> None:
    assert list(rule_errors({"tool": "x", "action": "allow", "conditions": conditions})) == [field]


@pytest.mark.parametrize(
    "path",
    [
        "users",
        "User",
        "user.name",
        "roles",
        "args",
        "args.",
        "args..x",
        "args.x.",
        "arguments.x",
        "metadata",
        "metadata.",
        "meta.x",
        "",
        "args." + "x" * 256,
    ],
)
def test_bad_condition_paths_are_named(path: str) -> None:
    errors = rule_errors({"tool": "x", "action": "allow", "conditions": {path: 1}})
    assert list(errors) == [f"rules[0].conditions.{path}"]


def test_too_many_conditions() -> None:
    conditions = {f"args.a{i}": i for i in range(65)}
    assert list(rule_errors({"tool": "x", "action": "allow", "conditions": conditions})) == [
        "rules[0].conditions"
    ]
    conditions.pop("args.a64")
    validate_rules([{"tool": "x", "action": "allow", "conditions": conditions}])


@pytest.mark.parametrize(
    ("rate_limit", "fields"),
    [
        ({"max": 0, "windowSeconds": 60, "per": "session"}, ["rules[0].rateLimit.max"]),
        ({"max": -1, "windowSeconds": 60, "per": "session"}, ["rules[0].rateLimit.max"]),
        ({"max": 1.5, "windowSeconds": 60, "per": "session"}, ["rules[0].rateLimit.max"]),
        ({"max": "10", "windowSeconds": 60, "per": "session"}, ["rules[0].rateLimit.max"]),
        ({"max": True, "windowSeconds": 60, "per": "session"}, ["rules[0].rateLimit.max"]),
        ({"max": 1, "windowSeconds": 0, "per": "session"}, ["rules[0].rateLimit.windowSeconds"]),
        (
            {"max": 1, "windowSeconds": 86_401, "per": "session"},
            ["rules[0].rateLimit.windowSeconds"],
        ),
        ({"max": 1, "windowSeconds": 60, "per": "user"}, ["rules[0].rateLimit.per"]),
        ({"max": 1, "windowSeconds": 60}, ["rules[0].rateLimit.per"]),
        (
            {"max": 1, "window_seconds": 60, "per": "server"},
            ["rules[0].rateLimit.windowSeconds", "rules[0].rateLimit.window_seconds"],
        ),
        (
            {"max": 1, "windowSeconds": 60, "per": "server", "burst": 2},
            ["rules[0].rateLimit.burst"],
        ),
        ("10/minute", ["rules[0].rateLimit"]),
        (
            {"max": 0, "windowSeconds": 0, "per": "x"},
            [
                "rules[0].rateLimit.max",
                "rules[0].rateLimit.windowSeconds",
                "rules[0].rateLimit.per",
            ],
        ),
    ],
)
def test_bad_rate_limits_are_named(rate_limit: Any, fields: list[str]) -> None:
    errors = rule_errors({"tool": "x", "action": "allow", "rateLimit": rate_limit})
    assert sorted(errors) == sorted(fields)


def test_rate_limit_bounds_are_inclusive() -> None:
    for window in (1, 86_400):
        rate_limit = {"max": 1, "windowSeconds": window, "per": "server"}
        validate_rules([{"tool": "x", "action": "allow", "rateLimit": rate_limit}])


def test_rate_limit_is_refused_on_a_deny_rule() -> None:
    rate_limit = {"max": 1, "windowSeconds": 60, "per": "server"}
    errors = rule_errors({"tool": "x", "action": "deny", "rateLimit": rate_limit})
    assert list(errors) == ["rules[0].rateLimit"]


@pytest.mark.parametrize(
    ("rule", "fields"),
    [
        ({"tool": "x", "action": "allow", "redact": ["args.a"]}, ["rules[0].redact"]),
        ({"tool": "x", "action": "deny", "redact": []}, ["rules[0].redact"]),
        ({"tool": "x", "action": "redact"}, ["rules[0].redact"]),
        ({"tool": "x", "action": "redact", "redact": []}, ["rules[0].redact"]),
        ({"tool": "x", "action": "redact", "redact": "args.a"}, ["rules[0].redact"]),
        ({"tool": "x", "action": "redact", "redact": ["password"]}, ["rules[0].redact[0]"]),
        ({"tool": "x", "action": "redact", "redact": ["args."]}, ["rules[0].redact[0]"]),
        ({"tool": "x", "action": "redact", "redact": ["args.a..b"]}, ["rules[0].redact[0]"]),
        ({"tool": "x", "action": "redact", "redact": [1]}, ["rules[0].redact[0]"]),
        (
            {"tool": "x", "action": "redact", "redact": [{"result": "a", "flags": "i"}]},
            ["rules[0].redact[0]"],
        ),
        ({"tool": "x", "action": "redact", "redact": [{"regex": "a"}]}, ["rules[0].redact[0]"]),
        (
            {"tool": "x", "action": "redact", "redact": ["args.ok", {"result": "("}]},
            ["rules[0].redact[1].result"],
        ),
        (
            {"tool": "x", "action": "redact", "redact": [{"result": "a" * 501}]},
            ["rules[0].redact[0].result"],
        ),
        (
            {"tool": "x", "action": "redact", "redact": [{"result": ""}]},
            ["rules[0].redact[0].result"],
        ),
        (
            {"tool": "x", "action": "redact", "redact": [{"result": "x*"}]},
            ["rules[0].redact[0].result"],
        ),
        (
            {"tool": "x", "action": "redact", "redact": [{"result": 5}]},
            ["rules[0].redact[0].result"],
        ),
        (
            {"tool": "x", "action": "redact", "redact": ["args.a"] * 65},
            ["rules[0].redact"],
        ),
        (
            {"tool": "x", "action": "redact", "redact": ["bad", "args.ok", {"result": "["}]},
            ["rules[0].redact[0]", "rules[0].redact[2].result"],
        ),
    ],
)
def test_bad_redaction_is_named(rule: dict[str, Any], fields: list[str]) -> None:
    assert sorted(rule_errors(rule)) == sorted(fields)


@pytest.mark.parametrize(
    "pattern", [r"(a+)+", r"(\w+\s?)+$", r"(a*)*b", r"(?:x|(y+))*z", r"((ab)*c)+"]
)
def test_result_patterns_with_exponential_backtracking_are_refused(pattern: str) -> None:
    errors = rule_errors({"tool": "x", "action": "redact", "redact": [{"result": pattern}]})
    assert list(errors) == ["rules[0].redact[0].result"]
    assert "exponential" in errors["rules[0].redact[0].result"]


@pytest.mark.parametrize(
    "pattern",
    [r"\d{3}-\d{2}-\d{4}", r"(\w++\s?)+", r"(?>\w+\s?)+", r"(\d+-){1,3}", r"(?i)sk-[a-z0-9]+"],
)
def test_ordinary_possessive_and_atomic_result_patterns_are_accepted(pattern: str) -> None:
    validate_rules([{"tool": "x", "action": "redact", "redact": [{"result": pattern}]}])


def test_a_result_pattern_of_500_characters_is_accepted() -> None:
    pattern = "a" * 500
    rule = validate_rules([{"tool": "x", "action": "redact", "redact": [{"result": pattern}]}])
    assert [p.pattern for p in rule[0].compiled.result_patterns] == [pattern]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "rules"),
        ({"tool": "x", "action": "allow"}, "rules"),
        (None, "rules"),
        ("[]", "rules"),
        ([{"tool": "x", "action": "allow"}] * (MAX_RULES + 1), "rules"),
        (["not a rule"], "rules[0]"),
    ],
)
def test_the_rules_list_itself(raw: Any, field: str) -> None:
    assert list(errors_of(raw)) == [field]


def test_a_thousand_rules_are_accepted() -> None:
    assert len(validate_rules([{"tool": "x", "action": "allow"}] * MAX_RULES)) == MAX_RULES


def test_every_bad_field_of_every_rule_is_listed() -> None:
    errors = errors_of(
        [
            {"tool": "ok", "action": "allow"},
            {
                "tool": "",
                "action": "nope",
                "conditions": {"bogus": 1, "args.a": {"bad": 1}, "args.b": 1},
                "rateLimit": {"max": 0, "windowSeconds": 60, "per": "session"},
                "extra": True,
            },
            {"tool": "x", "action": "allow", "redact": ["args.a"]},
        ]
    )
    assert sorted(errors) == [
        "rules[1].action",
        "rules[1].conditions.args.a",
        "rules[1].conditions.bogus",
        "rules[1].extra",
        "rules[1].rateLimit.max",
        "rules[1].tool",
        "rules[2].redact",
    ]
    assert errors["rules[1].extra"] == "Unknown field."


def test_messages_never_echo_submitted_values() -> None:
    with pytest.raises(RuleValidationError) as caught:
        validate_rules(
            [
                {
                    "tool": f" {SECRET}",
                    "action": SECRET,
                    "conditions": {
                        f"x.{SECRET}": SECRET,
                        "args.a": {SECRET: 1},
                        "args.b": {"gt": SECRET},
                        "args.c": {"in": [{SECRET: 1}]},
                    },
                    "rateLimit": {"max": SECRET, "windowSeconds": SECRET, "per": SECRET},
                    "redact": [SECRET, {"result": f"({SECRET}"}],
                    "reason": SECRET * 100,
                    SECRET: SECRET,
                },
                SECRET,
            ]
        )
    messages = json.dumps([d["message"] for d in caught.value.details])
    assert SECRET not in messages
    assert "DO-NOT-ECHO" not in str(caught.value)


def test_the_rules_type_reports_the_same_locations_in_a_request_schema() -> None:
    """The policies API may declare `rules: Rules` in its body model and map pydantic's
    locations itself: they are the same wire paths."""

    class PolicyBody(BaseModel):
        rules: Rules

    with pytest.raises(ValidationError) as caught:
        PolicyBody.model_validate(
            {"rules": [{"tool": "x", "action": "bad", "conditions": {"args.a": {"x": 1}}}]}
        )
    locations = sorted(error["loc"] for error in caught.value.errors())
    assert locations == [("rules", 0, "action"), ("rules", 0, "conditions", "args.a")]
    assert "rules" in PolicyBody.model_json_schema()["properties"]


def test_snake_case_names_are_not_accepted_on_the_wire() -> None:
    assert "rules[0].rate_limit" in rule_errors(
        {
            "tool": "x",
            "action": "allow",
            "rate_limit": {"max": 1, "windowSeconds": 1, "per": "session"},
        }
    )


def test_rules_are_immutable_and_json_schema_is_available() -> None:
    (rule,) = validate_rules([{"tool": "x", "action": "allow"}])
    with pytest.raises(ValidationError):
        rule.action = "deny"  # type: ignore[misc]
    schema = Rule.model_json_schema(by_alias=True)
    assert {"tool", "action", "conditions", "rateLimit", "redact", "reason"} <= set(
        schema["properties"]
    )
