"""Every function's Lambda handler answers its recorded sample event, as Lambda would call it."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from igris.lambda_context import LocalLambdaContext

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(autouse=True)
def main_thread_event_loop() -> Iterator[None]:
    """Mangum runs the app on the main thread's event loop, as in Lambda; other tests'
    `asyncio.run` calls leave none set, so give each handler call a fresh one."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


HTTP_FUNCTIONS = ["auth", "orgs", "policies", "audit", "compliance", "proxy"]


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_health_event_through_the_handler(function: str, migrated: None) -> None:
    event = json.loads((EVENTS / f"{function}-health.json").read_text())
    handler = importlib.import_module(f"functions.{function}.main").handler
    response = handler(event, LocalLambdaContext(function_name=f"igris-{function}"))
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"status": "ok", "function": function, "database": "ok"}
    headers = {k.lower(): v for k, v in response["headers"].items()}
    assert headers["x-request-id"].startswith("req_")
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_unknown_path_through_the_handler_is_an_envelope(function: str) -> None:
    event = json.loads((EVENTS / f"{function}-health.json").read_text())
    path = event["rawPath"].replace("_health", "_nothing/here")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    handler = importlib.import_module(f"functions.{function}.main").handler
    response = handler(event, LocalLambdaContext())
    assert response["statusCode"] == 404
    body = json.loads(response["body"])
    code = body["code"] if path.startswith("/api/auth/") else body["error"]["code"]
    assert code.lower() == "not_found"
