"""The rule language (API.md §4.2): pydantic models that validate policy rules on the wire,
and the compiled form the engine evaluates.

One definition serves both the policies API (422 with every bad field named, API.md §0)
and the engine, so a rule that passes validation is exactly a rule the engine can run: the
models compile their globs, conditions and regexes once, when validated, and the per-call
path does no parsing.

Wire format, camelCase; unknown keys are refused at every level:

    {"tool": "<glob>", "action": "allow"|"deny"|"alert"|"redact"|"require_approval",
     "conditions": {"<path>": <literal> | {"<operator>": <operand>}},
     "rateLimit": {"max": 1.., "windowSeconds": 1..86400, "per": "session"|"principal"|"server"},
     "redact": ["args.<path>" | {"result": "<regex>"}],
     "reason": "<at most 500 characters>"}

Decisions where API.md is silent (also in shared/governance/README.md):

- Every object value of a condition is an operator object with exactly one known operator;
  there are no object literals. A misspelt operator (`{"matchs": ...}`) must fail with 422,
  not silently become an equality that never holds (for a deny rule: silently allowing).
  To constrain a nested object, put conditions on its paths (`args.filter.kind`). Lists and
  scalars are literals compared by JSON equality (`true` is not `1`; `1` is `1.0`).
- `user` and `role` are strings: a non-string literal or a numeric comparison on them is
  refused, as is a list literal on `metadata.<key>` (metadata values are scalars). Such a
  condition could never hold, which in a deny rule means silently never denying.
- An operator only holds for values of its type: `in`/`notIn` for present scalars,
  `matches` for strings, `gt`/`gte`/`lt`/`lte` for numbers (never booleans). A missing value
  satisfies `{"exists": false}` and nothing else, equality included. JSON `null` is present.
- `redact` is only allowed, and required (non-empty), with action `redact`. Argument paths
  use the same `args.<path>` language as conditions (one path language, and a forgotten
  prefix fails loudly instead of masking nothing); a `*` segment means every key or element
  (`args.items.*.ssn`). `{"result": "<regex>"}` is a Python regex of at most 500
  characters that must compile, must not match the empty string and must not nest
  unbounded repetitions (`(a+)+`: exponential time on a near-miss, and results come from
  upstreams).
- `rateLimit` is refused on a `deny` rule: such a rule refuses every call, the limit could
  never apply. `per` is required.
- Tool patterns: 1..256 characters, no leading or trailing whitespace (a pattern that can
  never match a tool name is a mistake worth reporting).
- Bounds keep evaluation cheap and bodies small: at most 1000 rules per policy, 64
  conditions per rule, 1000 items in `in`/`notIn`, 64 redact entries, paths and globs of at
  most 256 characters.
"""

from __future__ import annotations

import importlib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.governance.glob import GlobMatcher, compile_glob

Action = Literal["allow", "deny", "alert", "redact", "require_approval"]
RateLimitScope = Literal["session", "principal", "server"]
ConditionSource = Literal["user", "role", "metadata", "args"]
Operator = Literal["equals", "in", "notIn", "matches", "exists", "gt", "gte", "lt", "lte"]

MAX_RULES: Final = 1000
MAX_PATTERN_LENGTH: Final = 256
MAX_PATH_LENGTH: Final = 256
MAX_CONDITIONS: Final = 64
MAX_IN_ITEMS: Final = 1000
MAX_REDACT_ITEMS: Final = 64
MAX_RESULT_REGEX_LENGTH: Final = 500
MAX_REASON_LENGTH: Final = 500
MAX_RATE_LIMIT: Final = 1_000_000_000
MAX_WINDOW_SECONDS: Final = 86_400
_MAX_LITERAL_DEPTH: Final = 32

OPERATORS: Final[tuple[str, ...]] = ("in", "notIn", "matches", "exists", "gt", "gte", "lt", "lte")
_OPERATOR_LIST: Final = "in, notIn, matches, exists, gt, gte, lt or lte"
_COMPARISONS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


class _Missing:
    """The value of a condition path that is absent from the call (distinct from `null`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


# --- JSON values --------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    """JSON numbers: int or float, never bool (Python's bool is an int, JSON's is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int)


def _scalar_key(value: object) -> tuple[int, object] | None:
    """A hashable key under which two scalars are equal exactly when JSON says they are."""
    if isinstance(value, str):
        return (0, value)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if value is None:
        return (3, None)
    return None


def json_equal(left: object, right: object) -> bool:
    """Equality as JSON means it: `true != 1`, `1 == 1.0`, objects by keys, arrays in order."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, str | int | float) or isinstance(right, str | int | float):
        return _scalar_key(left) == _scalar_key(right)
    if left is None or right is None:
        return left is right
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(map(json_equal, left, right))
    return False


def _is_json(value: object, depth: int = 0) -> bool:
    if depth > _MAX_LITERAL_DEPTH:
        return False
    if isinstance(value, list):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return _is_scalar(value)


# --- conditions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """One parsed condition: where its value comes from and the predicate it must satisfy.

    `segments` is `()` for `user`/`role`, `(key,)` for `metadata.<key>` (the whole rest of
    the path: metadata is a flat object) and the dotted path for `args.<path>`.
    """

    path: str
    source: ConditionSource
    segments: tuple[str, ...]
    operator: Operator
    operand: Any
    test: Callable[[object], bool] = field(repr=False, compare=False)

    def holds(self, value: object) -> bool:
        """Does the resolved value (or MISSING) satisfy this condition?"""
        return self.test(value)


def _problem(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, message)


def parse_condition_path(path: str) -> tuple[ConditionSource, tuple[str, ...]]:
    """`user` | `role` | `metadata.<key>` | `args.<a>.<b>...`; anything else is refused."""
    if len(path) > MAX_PATH_LENGTH:
        raise _problem("condition_path", f"Too long: at most {MAX_PATH_LENGTH} characters.")
    if path == "user":
        return "user", ()
    if path == "role":
        return "role", ()
    if path.startswith("metadata."):
        key = path[len("metadata.") :]
        if key:
            return "metadata", (key,)
        raise _problem("condition_path", "Name the metadata key: metadata.<key>.")
    if path.startswith("args."):
        segments = tuple(path[len("args.") :].split("."))
        if all(segments):
            return "args", segments
        raise _problem(
            "condition_path",
            "An argument path is args.<name>[.<name>...] with no empty segments.",
        )
    raise _problem(
        "condition_path",
        "Unknown condition path: use user, role, metadata.<key> or args.<path>.",
    )


def _in_test(operand: list[Any], *, negate: bool) -> Callable[[object], bool]:
    keys = frozenset(_scalar_key(item) for item in operand)

    def test(value: object) -> bool:
        key = _scalar_key(value)
        return key is not None and (key in keys) != negate

    return test


def _equals_test(operand: Any) -> Callable[[object], bool]:
    expected = _scalar_key(operand)
    if expected is not None:
        return lambda value: _scalar_key(value) == expected
    return lambda value: value is not MISSING and json_equal(value, operand)


def _matches_test(pattern: str) -> Callable[[object], bool]:
    matcher = compile_glob(pattern)
    return lambda value: isinstance(value, str) and matcher(value)


def _exists_test(expected: bool) -> Callable[[object], bool]:
    return lambda value: (value is not MISSING) is expected


def _comparison_test(name: str, bound: float) -> Callable[[object], bool]:
    compare = _COMPARISONS[name]
    return lambda value: _is_number(value) and compare(value, bound)


def parse_condition_value(value: object) -> tuple[Operator, Any, Callable[[object], bool]]:
    """A literal (equality) or an operator object with exactly one operator."""
    if not isinstance(value, dict):
        if not _is_json(value):
            raise _problem("condition_value", "Must be a JSON value or an operator object.")
        return "equals", value, _equals_test(value)
    if len(value) != 1:
        raise _problem(
            "condition_operator",
            f"An operator object holds exactly one operator: {_OPERATOR_LIST}.",
        )
    ((name, operand),) = value.items()
    if name in ("in", "notIn"):
        if (
            not isinstance(operand, list)
            or len(operand) > MAX_IN_ITEMS
            or not all(_is_scalar(item) for item in operand)
        ):
            raise _problem(
                "condition_operand",
                f"{name} needs a list of at most {MAX_IN_ITEMS} strings, numbers, "
                "booleans or nulls.",
            )
        return name, operand, _in_test(operand, negate=name == "notIn")
    if name == "matches":
        if not isinstance(operand, str) or len(operand) > MAX_PATTERN_LENGTH:
            raise _problem(
                "condition_operand",
                f"matches needs a glob string of at most {MAX_PATTERN_LENGTH} characters.",
            )
        return "matches", operand, _matches_test(operand)
    if name == "exists":
        if not isinstance(operand, bool):
            raise _problem("condition_operand", "exists needs true or false.")
        return "exists", operand, _exists_test(operand)
    if name in _COMPARISONS:
        if not _is_number(operand) or not math.isfinite(operand):
            raise _problem("condition_operand", f"{name} needs a number.")
        return name, operand, _comparison_test(name, operand)
    raise _problem("condition_operator", f"Unknown operator: use one of {_OPERATOR_LIST}.")


def _check_fits_source(source: ConditionSource, name: Operator, operand: object) -> None:
    """Refuse conditions that can never hold because of what the source can hold: in a
    deny rule they would silently never deny."""
    if source in ("user", "role") and (
        name in _COMPARISONS or (name == "equals" and not isinstance(operand, str))
    ):
        raise _problem(
            "condition_operand",
            f"{source} is a string: compare it with a string, in, notIn, matches or exists.",
        )
    if source == "metadata" and name == "equals" and isinstance(operand, list):
        raise _problem(
            "condition_operand", "Metadata values are scalars: a list never equals one; use in."
        )


def compile_condition(path: str, value: object) -> Condition:
    """Parse one `path: value` entry of a rule's `conditions` (raises PydanticCustomError)."""
    source, segments = parse_condition_path(path)
    name, operand, test = parse_condition_value(value)
    _check_fits_source(source, name, operand)
    return Condition(path, source, segments, name, operand, test)


# --- redaction ----------------------------------------------------------------------------


def parse_argument_path(path: str) -> tuple[str, ...]:
    """`args.<a>.<b>` → ("a", "b"); `*` segments allowed (every key or element)."""
    if len(path) > MAX_PATH_LENGTH:
        raise _problem("redact_path", f"Too long: at most {MAX_PATH_LENGTH} characters.")
    if not path.startswith("args."):
        raise _problem(
            "redact_path",
            'An argument path starts with "args." (args.<name>[.<name>...]); '
            'mask results with {"result": "<regex>"}.',
        )
    segments = tuple(path[len("args.") :].split("."))
    if not all(segments):
        raise _problem(
            "redact_path", "An argument path is args.<name>[.<name>...] with no empty segments."
        )
    return segments


def _nested_unbounded_repeat(pattern: str) -> bool:
    """Star height above one (`(a+)+`, `(\\w+\\s?)*`): the classic shape of a regex that takes
    exponential time on a near-miss. Python's `re` has no timeout and these patterns run on
    upstream results, which an upstream (or whoever wrote into it) controls, so they are
    refused at validation. Possessive quantifiers and atomic groups cannot backtrack into
    their content and are allowed. A heuristic: it catches the common cases, not overlapping
    alternations such as `(a|aa)+`.
    """
    parser: Any = importlib.import_module("re._parser")
    constants: Any = importlib.import_module("re._constants")
    unbounded = constants.MAXREPEAT

    def visit(node: Any, inside: bool) -> bool:
        if (
            isinstance(node, tuple)
            and len(node) == 2
            and isinstance(node[0], constants._NamedIntConstant)
        ):
            return visit_operation(str(node[0]), node[1], inside)
        if isinstance(node, parser.SubPattern | tuple | list):
            return any(visit(item, inside) for item in node)
        return False

    def visit_operation(kind: str, argument: Any, inside: bool) -> bool:
        if kind in ("MAX_REPEAT", "MIN_REPEAT"):
            is_unbounded = argument[1] == unbounded
            return (inside and is_unbounded) or visit(argument[2], inside or is_unbounded)
        if kind == "POSSESSIVE_REPEAT":
            return False
        return visit(argument, inside and kind != "ATOMIC_GROUP")

    return visit(parser.parse(pattern), False)


def compile_result_pattern(pattern: object) -> re.Pattern[str]:
    """A result-masking regex: bounded, compiling, and never matching the empty string."""
    if not isinstance(pattern, str) or not pattern:
        raise _problem("redact_result", "Must be a non-empty regular expression string.")
    if len(pattern) > MAX_RESULT_REGEX_LENGTH:
        raise _problem("redact_result", f"Too long: at most {MAX_RESULT_REGEX_LENGTH} characters.")
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        raise _problem("redact_result", "Not a valid regular expression.") from None
    if compiled.fullmatch("") is not None:
        raise _problem("redact_result", "Must not match the empty string.")
    if _nested_unbounded_repeat(pattern):
        raise _problem(
            "redact_result",
            "Nested unbounded repetition such as (a+)+ can take exponential time: rewrite "
            "it, or use a possessive quantifier (a++) or an atomic group (?>...).",
        )
    return compiled


# --- models -------------------------------------------------------------------------------


class RuleModel(BaseModel):
    """camelCase on the wire only (as `shared.schemas.ApiModel`), unknown keys refused,
    strict types (`"5"` is not a number, `true` is not 1), immutable once validated."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class RateLimit(RuleModel):
    """A descriptor the caller enforces (the engine never counts): at most `max` calls per
    `window_seconds` for each session, principal or server."""

    max: int = Field(ge=1, le=MAX_RATE_LIMIT)
    window_seconds: int = Field(ge=1, le=MAX_WINDOW_SECONDS)
    per: RateLimitScope


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """What the engine reads per call, computed once at validation: plain attributes, no
    pydantic machinery on the hot path."""

    action: Action
    matches_tool: GlobMatcher = field(compare=False)
    context_conditions: tuple[Condition, ...]
    args_conditions: tuple[Condition, ...]
    redact_paths: tuple[str, ...]
    result_patterns: tuple[re.Pattern[str], ...]


def _raise_at(errors: list[InitErrorDetails], title: str) -> None:
    """Report several problems at their own locations (pydantic prefixes the field's loc)."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)


class Rule(RuleModel):
    """One rule of a policy (API.md §4.2). See the module docstring for the exact language."""

    tool: str = Field(min_length=1, max_length=MAX_PATTERN_LENGTH)
    action: Action
    conditions: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={
            "description": "path (user, role, metadata.<key>, args.<path>) → literal or "
            "one-operator object (in, notIn, matches, exists, gt, gte, lt, lte)"
        },
    )
    rate_limit: RateLimit | None = None
    redact: list[str | dict[str, str]] | None = Field(default=None, validate_default=True)
    reason: str | None = Field(default=None, max_length=MAX_REASON_LENGTH)

    _compiled: CompiledRule = PrivateAttr()

    @field_validator("tool")
    @classmethod
    def _check_tool(cls, value: str) -> str:
        if not value.strip():
            raise _problem("tool_pattern", "Must not be empty or whitespace.")
        if value != value.strip():
            raise _problem("tool_pattern", "Must not start or end with whitespace.")
        return value

    @field_validator("conditions")
    @classmethod
    def _check_conditions(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if len(value) > MAX_CONDITIONS:
            raise _problem("conditions", f"At most {MAX_CONDITIONS} conditions per rule.")
        errors: list[InitErrorDetails] = []
        for path, expected in value.items():
            try:
                compile_condition(path, expected)
            except PydanticCustomError as exc:
                errors.append({"type": exc, "loc": (path,), "input": None})
        _raise_at(errors, "conditions")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: RateLimit | None, info: ValidationInfo) -> RateLimit | None:
        if value is not None and info.data.get("action") == "deny":
            raise _problem(
                "rate_limit_on_deny",
                "Not allowed on a deny rule: it refuses every call, the limit never applies.",
            )
        return value

    @field_validator("redact", mode="before")
    @classmethod
    def _check_redact(cls, value: object, info: ValidationInfo) -> object:
        action = info.data.get("action")
        if value is None:
            if action == "redact":
                raise _problem(
                    "redact_required",
                    'Required when action is "redact": list args.<path> entries and/or '
                    '{"result": "<regex>"} entries.',
                )
            return None
        if action is not None and action != "redact":
            raise _problem("redact_not_allowed", 'Only allowed when action is "redact".')
        if not isinstance(value, list):
            return value  # the type check reports it
        if not value or len(value) > MAX_REDACT_ITEMS:
            raise _problem(
                "redact_length", f"List between 1 and {MAX_REDACT_ITEMS} entries to mask."
            )
        errors: list[InitErrorDetails] = []
        for index, item in enumerate(value):
            try:
                if isinstance(item, str):
                    parse_argument_path(item)
                elif isinstance(item, dict) and item.keys() == {"result"}:
                    try:
                        compile_result_pattern(item["result"])
                    except PydanticCustomError as exc:
                        errors.append({"type": exc, "loc": (index, "result"), "input": None})
                else:
                    raise _problem(
                        "redact_entry",
                        'Each entry is an "args.<path>" string or {"result": "<regex>"}.',
                    )
            except PydanticCustomError as exc:
                errors.append({"type": exc, "loc": (index,), "input": None})
        _raise_at(errors, "redact")
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Compile once; validation above guarantees every piece compiles."""
        conditions = tuple(
            compile_condition(path, expected) for path, expected in (self.conditions or {}).items()
        )
        paths: list[str] = []
        patterns: list[re.Pattern[str]] = []
        for item in self.redact or ():
            if isinstance(item, str):
                paths.append(item)
            else:
                patterns.append(compile_result_pattern(item["result"]))
        self._compiled = CompiledRule(
            action=self.action,
            matches_tool=compile_glob(self.tool),
            context_conditions=tuple(c for c in conditions if c.source != "args"),
            args_conditions=tuple(c for c in conditions if c.source == "args"),
            redact_paths=tuple(paths),
            result_patterns=tuple(patterns),
        )

    @property
    def compiled(self) -> CompiledRule:
        """The rule's compiled form, for the engine."""
        return self._compiled

    def to_json(self) -> dict[str, Any]:
        """The wire (and storage) form: camelCase, absent options omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Rules = Annotated[list[Rule], Field(min_length=1, max_length=MAX_RULES)]
"""A policy's `rules`: use this type in request schemas so the API and `validate_rules`
report identical errors."""

_RULES_ADAPTER: Final = TypeAdapter(Rules)


class RuleValidationError(ValueError):
    """Rules that failed validation; `details` is API.md §0's `[{field, message}]`, one entry
    per bad field, with wire paths (`rules[0].rateLimit.windowSeconds`) and no submitted
    values in the messages."""

    def __init__(self, details: list[dict[str, str]]) -> None:
        self.details = details
        super().__init__(f"{len(details)} invalid rule field(s)")


def _field_path(prefix: str, location: Sequence[int | str]) -> str:
    out = prefix
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def rule_error_details(error: ValidationError, prefix: str = "rules") -> list[dict[str, str]]:
    """Pydantic errors for a rules list → `[{field, message}]`, input never echoed."""
    details = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        if item["type"] == "extra_forbidden":
            message = "Unknown field."
        elif item["type"] == "missing":
            message = "Required."
        else:
            message = item["msg"]
        details.append({"field": _field_path(prefix, item["loc"]), "message": message})
    return details


def validate_rules(raw: Any) -> list[Rule]:
    """Validate a policy's `rules` (1..1000 rules) from their JSON form.

    Raises RuleValidationError listing every bad field. Used on write by the policies API
    and on read when loading stored policies (a stored rule is re-validated, so a rule the
    current engine cannot run is never evaluated).
    """
    try:
        return _RULES_ADAPTER.validate_python(raw)
    except ValidationError as exc:
        raise RuleValidationError(rule_error_details(exc)) from None


def rules_to_json(rules: Sequence[Rule]) -> list[dict[str, Any]]:
    """The stored form of a rules list (what `validate_rules` reads back)."""
    return [rule.to_json() for rule in rules]
