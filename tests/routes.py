"""Walks every route of every HTTP function, for the generated security tests."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from shared.auth import Guard
from shared.ids import PREFIXES

HTTP_FUNCTIONS = ["auth", "orgs", "policies", "audit", "compliance", "proxy"]
_KIND_BY_PREFIX = {prefix: kind for kind, prefix in PREFIXES.items()}


@dataclass(frozen=True)
class RouteInfo:
    function: str
    app: FastAPI
    route: APIRoute
    method: str
    guards: tuple[Guard, ...]

    @property
    def label(self) -> str:
        return f"{self.function} {self.method} {self.route.path}"

    @property
    def id_params(self) -> dict[str, str]:
        """Path parameter → ID kind, read from the parameter's `<prefix>_…` pattern."""
        kinds: dict[str, str] = {}
        for param in self.route.dependant.path_params:
            for meta in getattr(param.field_info, "metadata", []):
                pattern = getattr(meta, "pattern", None)
                match = re.match(r"\^([a-z]+)_", pattern or "")
                if match:
                    kinds[param.name] = _KIND_BY_PREFIX[match.group(1)]
        return kinds

    def path_with(self, ids: dict[str, str]) -> str:
        """The route's path with the given IDs, and a plausible value for other parameters
        (integers 1, strings "abc"), so that a call reaches the route's own logic."""
        path = self.route.path
        for param in self.route.dependant.path_params:
            if param.name in ids:
                value = ids[param.name]
            elif param.field_info.annotation is int:
                value = "1"
            else:
                value = "abc"
            path = path.replace("{" + param.name + "}", value)
        return path


def guards_of(dependant: Dependant) -> Iterator[Guard]:
    if isinstance(dependant.call, Guard):
        yield dependant.call
    for sub in dependant.dependencies:
        yield from guards_of(sub)


def app_of(function: str) -> FastAPI:
    app: FastAPI = importlib.import_module(f"functions.{function}.main").app
    return app


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, including those of included routers (FastAPI ≥ 0.16x keeps an included
    router as one entry; our routers carry their full prefix, so paths are complete)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def all_routes() -> list[RouteInfo]:
    found = []
    for function in HTTP_FUNCTIONS:
        app = app_of(function)
        for route in api_routes(app.routes):
            for method in sorted(route.methods or ()):
                found.append(
                    RouteInfo(function, app, route, method, tuple(guards_of(route.dependant)))
                )
    return found
