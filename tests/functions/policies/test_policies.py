"""Policies API (API.md §4.2): validation naming the rule and field, versions, the dry run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlmodel import Session, col

from functions.policies.main import app
from shared.db import get_engine
from shared.models import AuditEvent, Policy, RateLimitCounter
from shared.permissions import Role
from shared.policy_store import load_policies
from tests.factories import Actor, make_actor, make_policy, make_server, unique

ClientFor = Callable[[FastAPI], TestClient]
WORKED_EXAMPLE = [
    {"tool": "delete_*", "action": "deny", "reason": "no deletes"},
    {"tool": "drop_*", "action": "deny"},
    {"tool": "write_*", "action": "alert"},
    {"tool": "*", "action": "allow"},
]


@pytest.fixture
def client(client_for: ClientFor) -> TestClient:
    return client_for(app)


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def create(client: TestClient, actor: Actor, **body: Any) -> dict[str, Any]:
    payload = {"name": unique("p-"), "rules": [{"tool": "*", "action": "allow"}], **body}
    response = client.post("/api/v1/policies", json=payload, headers=actor.headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_worked_example_through_the_dry_run(client: TestClient, owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    policy = create(client, owner, serverId=server.id, rules=WORKED_EXAMPLE)

    def dry_run(tool: str) -> dict[str, Any]:
        response = client.post(
            "/api/v1/policies/evaluate",
            json={"serverId": server.id, "tool": tool},
            headers=owner.headers,
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    denied = dry_run("delete_users")
    assert (
        denied["decision"],
        denied["policyId"],
        denied["policyVersion"],
        denied["ruleIndex"],
        denied["reason"],
    ) == ("deny", policy["id"], 1, 0, "no deletes")
    assert (dry_run("drop_table")["decision"], dry_run("drop_table")["ruleIndex"]) == ("deny", 1)
    assert dry_run("write_record")["decision"] == "alert"
    assert dry_run("read_data")["decision"] == "allow"


def test_no_policies_means_deny(client: TestClient, owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    response = client.post(
        "/api/v1/policies/evaluate",
        json={"serverSlug": server.slug, "tool": "read_data"},
        headers=owner.headers,
    )
    data = response.json()["data"]
    assert (data["decision"], data["policyId"], data["ruleIndex"]) == ("deny", None, None)


def test_dry_run_has_no_side_effects(client: TestClient, owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    create(
        client,
        owner,
        serverId=server.id,
        rules=[
            {
                "tool": "*",
                "action": "allow",
                "rateLimit": {"max": 1, "windowSeconds": 60, "per": "server"},
            },
        ],
    )
    events_before = db.scalar(select(func.count()).select_from(AuditEvent))
    counters_before = db.scalar(select(func.count()).select_from(RateLimitCounter))
    for _ in range(3):
        data = client.post(
            "/api/v1/policies/evaluate",
            json={"serverId": server.id, "tool": "x"},
            headers=owner.headers,
        ).json()["data"]
        assert data["decision"] == "allow"
        assert data["rateLimit"] == {"max": 1, "windowSeconds": 60, "per": "server"}
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == events_before
    assert db.scalar(select(func.count()).select_from(RateLimitCounter)) == counters_before


def test_conditions_use_the_callers_context(client: TestClient, owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    create(
        client,
        owner,
        serverId=server.id,
        rules=[
            {
                "tool": "query",
                "action": "allow",
                "conditions": {
                    "role": {"in": ["owner", "admin"]},
                    "args.limit": {"lte": 100},
                    "metadata.env": "prod",
                    "user": {"matches": "alice*"},
                },
            },
        ],
    )
    base = {
        "serverId": server.id,
        "tool": "query",
        "arguments": {"limit": 10},
        "metadata": {"env": "prod"},
        "user": "alice@example.com",
    }

    def decision(**overrides: Any) -> str:
        response = client.post(
            "/api/v1/policies/evaluate", json={**base, **overrides}, headers=owner.headers
        )
        return str(response.json()["data"]["decision"])

    assert decision() == "allow"
    assert decision(role="developer") == "deny"
    assert decision(arguments={"limit": 1000}) == "deny"
    assert decision(metadata={"env": "dev"}) == "deny"
    assert decision(user="bob") == "deny"


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ([{"tool": "x", "action": "explode"}], "rules[0].action"),
        ([{"tool": "", "action": "allow"}], "rules[0].tool"),
        (
            [
                {"tool": "x", "action": "allow"},
                {"tool": "y", "action": "allow", "conditions": {"args.n": {"near": 3}}},
            ],
            "rules[1].conditions.args.n",
        ),
        (
            [
                {
                    "tool": "x",
                    "action": "allow",
                    "rateLimit": {"max": 0, "windowSeconds": 60, "per": "session"},
                }
            ],
            "rules[0].rateLimit.max",
        ),
        (
            [{"tool": "x", "action": "allow", "conditions": {"secret.x": 1}}],
            "rules[0].conditions.secret.x",
        ),
        ([], "rules"),
    ],
)
def test_bad_rules_are_422_naming_rule_and_field(
    client: TestClient, owner: Actor, db: Session, rules: list[Any], field: str
) -> None:
    name = unique("bad-")
    response = client.post(
        "/api/v1/policies", json={"name": name, "rules": rules}, headers=owner.headers
    )
    assert response.status_code == 422, response.text
    assert field in [detail["field"] for detail in response.json()["error"]["details"]]
    assert db.scalars(select(Policy).where(col(Policy.name) == name)).first() is None


def test_every_change_makes_a_version_and_old_ones_stay(
    client: TestClient, owner: Actor, db: Session
) -> None:
    policy = create(client, owner, rules=[{"tool": "a", "action": "allow"}])
    path = f"/api/v1/policies/{policy['id']}"
    updated = client.patch(
        path, json={"rules": [{"tool": "b", "action": "deny"}]}, headers=owner.headers
    ).json()["data"]
    assert updated["version"] == 2
    assert (
        client.patch(path, json={"active": False}, headers=owner.headers).json()["data"]["version"]
        == 3
    )
    versions = client.get(f"{path}/versions", headers=owner.headers).json()["data"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[2]["snapshot"]["rules"] == [{"tool": "a", "action": "allow"}]
    assert client.delete(path, headers=owner.headers).status_code == 204
    assert client.get(path, headers=owner.headers).status_code == 404
    first = client.get(f"{path}/versions/1", headers=owner.headers)
    assert first.status_code == 200  # an audit event's (policyId, policyVersion) resolves
    assert first.json()["data"]["snapshot"]["rules"][0]["tool"] == "a"
    assert client.get(f"{path}/versions/9", headers=owner.headers).status_code == 404
    operations = db.scalars(
        select(col(AuditEvent.operation))
        .where(col(AuditEvent.chain_id) == owner.org.id)
        .order_by(col(AuditEvent.seq))
    ).all()
    assert operations == ["policy.created", "policy.updated", "policy.updated", "policy.deleted"]


def test_names_are_unique(client: TestClient, owner: Actor) -> None:
    first = create(client, owner)
    clash = client.post(
        "/api/v1/policies",
        json={"name": first["name"], "rules": [{"tool": "*", "action": "deny"}]},
        headers=owner.headers,
    )
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "name_taken")


def test_developers_manage_policies_of_their_own_servers_only(
    client: TestClient, owner: Actor, db: Session
) -> None:
    developer = make_actor(db, Role.DEVELOPER, org=owner.org)
    theirs = make_server(db, owner.org, owner.user)
    mine = make_server(db, owner.org, developer.user)
    rules = [{"tool": "*", "action": "allow"}]
    assert (
        client.post(
            "/api/v1/policies",
            json={"name": unique("p"), "rules": rules},
            headers=developer.headers,
        ).status_code
        == 403
    )  # org-wide
    assert (
        client.post(
            "/api/v1/policies",
            json={"name": unique("p"), "rules": rules, "serverId": theirs.id},
            headers=developer.headers,
        ).status_code
        == 403
    )
    policy = create(client, developer, serverId=mine.id)
    moved = client.patch(
        f"/api/v1/policies/{policy['id']}", json={"serverId": theirs.id}, headers=developer.headers
    )
    assert moved.status_code == 403
    other_org_server = make_server(db, make_actor(db).org)
    hidden = client.post(
        "/api/v1/policies",
        json={"name": unique("p"), "rules": rules, "serverId": other_org_server.id},
        headers=owner.headers,
    )
    assert hidden.status_code == 422  # another organization's server does not exist here


def test_loading_a_servers_policies_is_one_statement(owner: Actor, db: Session) -> None:
    server = make_server(db, owner.org, owner.user)
    mine = make_policy(db, owner.org, server)
    org_wide = make_policy(db, owner.org)
    make_policy(db, owner.org, make_server(db, owner.org))  # another server's
    make_policy(db, owner.org, server, active=False)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    db.flush()
    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        loaded = load_policies(db, owner.org.id, server.id)
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)
    assert {p.id for p in loaded} == {mine.id, org_wide.id}
    assert len(statements) == 1
