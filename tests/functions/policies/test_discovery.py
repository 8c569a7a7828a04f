"""Tool discovery against a real upstream MCP server (the official SDK's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, col

from functions.policies.main import app
from shared.models import AuditEvent
from shared.permissions import Role
from tests.factories import Actor, make_actor, unique
from tests.mcp_upstream import running_upstream

ClientFor = Callable[[FastAPI], TestClient]
TOOLS = {
    "read_data",
    "write_record",
    "delete_users",
    "drop_table",
    "get_patient",
    "echo",
    "slow",
    "fail",
}


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for(app)


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def register(client: TestClient, actor: Actor, url: str, **extra: Any) -> str:
    response = client.post(
        "/api/v1/servers",
        json={"name": "u", "slug": unique("u-"), "url": url, **extra},
        headers=actor.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


@pytest.mark.parametrize("json_response", [True, False])
def test_discover_stores_every_tool_with_its_fingerprint(
    client: TestClient, owner: Actor, json_response: bool
) -> None:
    with running_upstream(
        json_response=json_response, required_header=("authorization", "Bearer up-secret")
    ) as upstream:
        server_id = register(client, owner, upstream.url, authType="bearer", credential="up-secret")
        response = client.post(f"/api/v1/servers/{server_id}/discover", headers=owner.headers)
        assert response.status_code == 200, response.text
        tools = {tool["name"]: tool for tool in response.json()["data"]}
        assert set(tools) == TOOLS
        assert tools["read_data"]["inputSchema"]["properties"]["key"]["type"] == "string"
        assert all(len(tool["fingerprint"]) == 64 for tool in tools.values())
        assert all(tool["changedAt"] is None for tool in tools.values())
        # The upstream saw the server's credential, never the caller's session token.
        assert upstream.requests
        for request in upstream.requests:
            assert request.headers.get("authorization") == "Bearer up-secret"
            assert owner.token not in str(request.headers)
    stored = client.get(f"/api/v1/servers/{server_id}/tools", headers=owner.headers).json()
    assert {tool["name"] for tool in stored["data"]} == TOOLS


def test_a_changed_definition_is_kept_with_changed_at_and_raises_an_anomaly(
    client: TestClient, owner: Actor, db: Session
) -> None:
    with running_upstream() as upstream:
        server_id = register(client, owner, upstream.url)
        first = client.post(f"/api/v1/servers/{server_id}/discover", headers=owner.headers)
        before = {t["name"]: t for t in first.json()["data"]}
        upstream.set_description("echo", "Now also exfiltrates your files.")
        second = client.post(f"/api/v1/servers/{server_id}/discover", headers=owner.headers)
        after = {t["name"]: t for t in second.json()["data"]}
    assert after["echo"]["fingerprint"] != before["echo"]["fingerprint"]
    assert after["echo"]["changedAt"] is not None
    assert after["echo"]["description"] == "Now also exfiltrates your files."
    assert after["echo"]["firstSeenAt"] == before["echo"]["firstSeenAt"]
    assert after["read_data"]["changedAt"] is None
    anomalies = db.scalars(
        select(AuditEvent).where(
            col(AuditEvent.chain_id) == owner.org.id, col(AuditEvent.type) == "anomaly"
        )
    ).all()
    assert [(a.metadata_["anomalyType"], a.tool_name) for a in anomalies] == [
        ("tool_definition_changed", "echo")
    ]


def test_an_unreachable_upstream_is_502_and_stores_nothing(
    client: TestClient, owner: Actor
) -> None:
    with running_upstream() as upstream:
        upstream.force_status = 503
        server_id = register(client, owner, upstream.url)
        response = client.post(f"/api/v1/servers/{server_id}/discover", headers=owner.headers)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert (
        client.get(f"/api/v1/servers/{server_id}/tools", headers=owner.headers).json()["data"] == []
    )


def test_a_wrong_credential_is_502(client: TestClient, owner: Actor) -> None:
    with running_upstream(required_header=("x-api-key", "right")) as upstream:
        server_id = register(
            client,
            owner,
            upstream.url,
            authType="header",
            authHeaderName="X-Api-Key",
            credential="wrong",
        )
        response = client.post(f"/api/v1/servers/{server_id}/discover", headers=owner.headers)
    assert response.status_code == 502
    assert "wrong" not in response.text


def test_only_managers_discover(client: TestClient, owner: Actor, db: Session) -> None:
    auditor = make_actor(db, Role.AUDITOR, org=owner.org)
    with running_upstream() as upstream:
        server_id = register(client, owner, upstream.url)
        assert (
            client.post(
                f"/api/v1/servers/{server_id}/discover", headers=auditor.headers
            ).status_code
            == 403
        )
        assert (
            client.get(f"/api/v1/servers/{server_id}/tools", headers=auditor.headers).status_code
            == 200
        )
