"""Property-based API fuzzing (schemathesis, in-process) over every function's OpenAPI
schema: whatever the input, no server error, and every error uses the documented shape.
New routes are covered as soon as a function's app declares them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from sqlmodel import Session

from shared.permissions import Role
from tests.factories import make_actor

HTTP_FUNCTIONS = ["auth", "orgs", "policies", "audit", "compliance", "proxy"]
BETTER_AUTH = "/api/auth/"


def app_of(function: str) -> FastAPI:
    app: FastAPI = importlib.import_module(f"functions.{function}.main").app
    return app


@pytest.fixture
def rolled_back(db: Session, route_into_db: Callable[[FastAPI], None]) -> dict[str, str]:
    """Route every function's requests into the test's rolled-back transaction; the headers
    of an organization owner, so that the fuzzing reaches past authentication."""
    for function in HTTP_FUNCTIONS:
        route_into_db(app_of(function))
    return make_actor(db, Role.OWNER).headers


def header(response: Any, name: str) -> str:
    values = response.headers.get(name) or [""]
    return str(values[0])


def check_response(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and header(response, "content-type").startswith(
        "application/json"
    ):
        body = response.json()
        path = response.request.url
        if BETTER_AUTH in str(path):
            assert isinstance(body.get("code"), str), body
            assert body.get("message"), body
        else:
            error = body["error"]
            assert error["code"], body
            assert error["message"], body
            assert error["requestId"], body
    assert header(response, "x-request-id")


def make_fuzz_test(function: str) -> Callable[..., None]:
    app = app_of(function)
    schema = schemathesis.openapi.from_asgi(app.openapi_url or "/openapi.json", app)

    @schema.parametrize()
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def test(case: Any, rolled_back: dict[str, str]) -> None:
        check_response(case.call(headers=rolled_back))

    wrapped: Callable[..., None] = test
    return wrapped


for _function in HTTP_FUNCTIONS:
    globals()[f"test_fuzz_{_function}"] = make_fuzz_test(_function)
