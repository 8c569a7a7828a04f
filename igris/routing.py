"""API Gateway routing, read from template.yaml: the one source of truth for which function
serves which path, used by `igris serve` and checked by the tests.

HTTP API route selection: an exact route wins; otherwise the route with the most literal
path segments that matches; `{name}` matches one segment and `{proxy+}` one or more.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
_HANDLER = re.compile(r"^functions\.(?P<name>[a-z_]+)\.main\.handler$")


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML, keeping intrinsic functions (`!Ref`, `!Sub`...) as data."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    name = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """template.yaml as plain data."""
    with path.open(encoding="utf-8") as stream:
        data = yaml.load(stream, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True)
class Route:
    """One `HttpApi` event: method (or ANY), path pattern, and the function serving it."""

    method: str
    path: str
    function: str
    logical_id: str

    # Computed once per route: the local gateway matches every request against every route.
    @cached_property
    def segments(self) -> tuple[str, ...]:
        return split_path(self.path)

    @cached_property
    def literal_count(self) -> int:
        return sum(1 for part in self.segments if not part.startswith("{"))

    @property
    def is_exact(self) -> bool:
        return self.literal_count == len(self.segments)

    def matches(self, method: str, parts: tuple[str, ...]) -> bool:
        """Whether this route serves `method` (upper case) at a path split by `split_path`."""
        if self.method not in ("ANY", method):
            return False
        pattern = self.segments
        for index, expected in enumerate(pattern):
            if expected.endswith("+}"):
                return len(parts) > index
            if index >= len(parts):
                return False
            if not expected.startswith("{") and expected != parts[index]:
                return False
        return len(parts) == len(pattern)


def split_path(path: str) -> tuple[str, ...]:
    """A path's non-empty segments."""
    return tuple(part for part in path.split("/") if part)


def function_handlers(template: dict[str, Any] | None = None) -> dict[str, str]:
    """Logical id → handler string of every Lambda function in the template."""
    data = template or load_template()
    globals_ = data.get("Globals", {}).get("Function", {})
    handlers = {}
    for logical_id, resource in data["Resources"].items():
        if resource.get("Type") == "AWS::Serverless::Function":
            properties = resource.get("Properties", {})
            handler = properties.get("Handler", globals_.get("Handler"))
            handlers[logical_id] = str(handler)
    return handlers


@lru_cache(maxsize=1)
def routes() -> tuple[Route, ...]:
    """Every HttpApi route in template.yaml, most specific first."""
    data = load_template()
    found = []
    for logical_id, resource in data["Resources"].items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.get("Properties", {})
        match = _HANDLER.match(str(properties.get("Handler", "")))
        for event in (properties.get("Events") or {}).values():
            if event.get("Type") != "HttpApi" or match is None:
                continue
            spec = event.get("Properties", {})
            found.append(
                Route(
                    method=str(spec.get("Method", "ANY")).upper(),
                    path=str(spec["Path"]),
                    function=match["name"],
                    logical_id=logical_id,
                )
            )
    found.sort(key=lambda route: (not route.is_exact, -route.literal_count, route.path))
    return tuple(found)


def resolve(method: str, path: str) -> Route | None:
    """The route API Gateway would pick for this request, if any."""
    parts = split_path(path)
    method = method.upper()
    for route in routes():
        if route.matches(method, parts):
            return route
    return None


def http_function_names() -> list[str]:
    """The functions that serve HTTP routes, in template order."""
    names: list[str] = []
    for route in routes():
        if route.function not in names:
            names.append(route.function)
    return names


def load_app(function: str) -> Any:
    """The ASGI app of `functions.<function>.main`."""
    return importlib.import_module(f"functions.{function}.main").app
