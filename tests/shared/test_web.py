"""The app factory's behaviour on bad input: one envelope, request ids, size limits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from shared.errors import NotFound
from shared.ids import PolicyId, new_id
from shared.schemas import ApiModel, Envelope, ReadModel
from shared.web import create_app


class ThingCreate(ApiModel):
    name: str
    max_count: int
    password: str | None = None


class ThingRead(ReadModel):
    name: str
    max_count: int


router = APIRouter()


@router.post("/api/v1/things", status_code=201, response_model=Envelope[ThingRead])
def create_thing(body: ThingCreate) -> dict[str, Any]:
    """Create a thing."""
    return {"data": ThingRead(name=body.name, max_count=body.max_count)}


@router.get("/api/v1/things/{thing_id}")
def read_thing(thing_id: PolicyId) -> dict[str, Any]:
    """Read a thing."""
    raise NotFound("No such thing.")


@router.get("/api/v1/boom")
def boom() -> None:
    """Fail unexpectedly."""
    raise RuntimeError("secret internals /etc/passwd")


@router.post("/api/auth/things")
def auth_thing(body: ThingCreate) -> dict[str, str]:
    """A Better Auth-style route."""
    return {"ok": body.name}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app("testing", routers=[router], health_path="/api/v1/testing/_health")


@pytest.fixture
def client(app: FastAPI, client_for: Callable[[FastAPI], TestClient]) -> TestClient:
    return client_for(app)


def assert_envelope(body: dict[str, Any], code: str) -> None:
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["requestId"]


def test_success_uses_camel_case(client: TestClient) -> None:
    response = client.post("/api/v1/things", json={"name": "a", "maxCount": 3})
    assert response.status_code == 201
    assert response.json() == {"data": {"name": "a", "maxCount": 3}}


def test_unknown_field_is_422_naming_it(client: TestClient) -> None:
    response = client.post("/api/v1/things", json={"name": "a", "maxCount": 3, "isAdmin": True})
    assert response.status_code == 422
    body = response.json()
    assert_envelope(body, "validation_error")
    assert {"field": "isAdmin", "message": "Unknown field."} in body["error"]["details"]


def test_snake_case_field_is_not_accepted(client: TestClient) -> None:
    response = client.post("/api/v1/things", json={"name": "a", "max_count": 3})
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["error"]["details"]}
    assert fields == {"maxCount", "max_count"}  # maxCount missing, max_count unknown


def test_validation_error_never_echoes_input(client: TestClient) -> None:
    response = client.post(
        "/api/v1/things", json={"name": "a", "maxCount": "lots", "password": ["hunter2-secret"]}
    )
    assert response.status_code == 422
    assert "hunter2-secret" not in response.text
    assert "lots" not in response.text


def test_malformed_json_is_400_envelope(client: TestClient) -> None:
    response = client.post(
        "/api/v1/things", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert_envelope(response.json(), "invalid_json")


def test_bad_id_format_is_422(client: TestClient) -> None:
    response = client.get("/api/v1/things/srv_notapolicy")
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "thing_id"


def test_well_formed_unknown_id_is_404(client: TestClient) -> None:
    response = client.get(f"/api/v1/things/{new_id('policy')}")
    assert response.status_code == 404
    assert_envelope(response.json(), "not_found")


def test_unknown_route_and_method_use_the_envelope(client: TestClient) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert_envelope(missing.json(), "not_found")
    wrong_method = client.delete("/api/v1/things")
    assert wrong_method.status_code == 405
    assert_envelope(wrong_method.json(), "method_not_allowed")


def test_unexpected_error_is_generic_500(client: TestClient) -> None:
    response = client.get("/api/v1/boom")
    assert response.status_code == 500
    assert_envelope(response.json(), "internal_error")
    assert "passwd" not in response.text
    assert "Traceback" not in response.text


def test_better_auth_paths_use_better_auth_error_shape(client: TestClient) -> None:
    response = client.post("/api/auth/things", json={"name": "a"})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    assert body["message"] == "[body.maxCount] Field required"
    assert "error" not in body


def test_request_id_is_generated_and_echoed(client: TestClient) -> None:
    generated = client.get("/api/v1/testing/_health").headers["x-request-id"]
    assert generated.startswith("req_")
    echoed = client.get("/api/v1/testing/_health", headers={"X-Request-Id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    rejected = client.get("/api/v1/testing/_health", headers={"X-Request-Id": "bad id;<script>"})
    assert rejected.headers["x-request-id"].startswith("req_")


def test_error_request_id_matches_header(client: TestClient) -> None:
    response = client.get("/api/v1/boom", headers={"X-Request-Id": "trace-me"})
    assert response.json()["error"]["requestId"] == "trace-me"
    assert response.headers["x-request-id"] == "trace-me"


def test_body_over_limit_is_413_by_content_length(client: TestClient) -> None:
    big = json.dumps({"name": "x" * (1024 * 1024), "maxCount": 1})
    response = client.post(
        "/api/v1/things", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert_envelope(response.json(), "payload_too_large")


def test_body_over_limit_is_413_when_streamed(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'", "maxCount": 1}'

    response = client.post(
        "/api/v1/things", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert_envelope(response.json(), "payload_too_large")


def test_body_just_under_limit_is_accepted(client: TestClient) -> None:
    filler = "x" * (1024 * 1024 - 100)
    response = client.post("/api/v1/things", json={"name": filler, "maxCount": 1})
    assert response.status_code == 201


def test_health_touches_the_database(client: TestClient) -> None:
    response = client.get("/api/v1/testing/_health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "function": "testing", "database": "ok"}
