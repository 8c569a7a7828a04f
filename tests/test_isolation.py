"""Generated tenant isolation matrix: every route that takes an ID in its path is called, for
every method, with another organization's owner credentials and that organization's object;
all answer 404 and nothing changes (API.md §0). Routes added later are covered automatically
once their object kind has a factory below (a test fails until it does)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from shared.models import AgentSession, ApiKey, Approval, AuditEvent, McpServer, Policy
from shared.permissions import Role
from tests.factories import (
    Actor,
    make_actor,
    make_agent_session,
    make_api_key,
    make_approval,
    make_policy,
    make_server,
)
from tests.routes import RouteInfo, all_routes

# ID kind → (model, factory making one such object owned by the actor's organization).
Factory = Callable[[Session, Actor], str]
OBJECTS: dict[str, tuple[type[SQLModel], Factory]] = {
    "api_key": (ApiKey, lambda db, owner: make_api_key(db, owner.org, owner.user)[0].id),
    "mcp_server": (McpServer, lambda db, owner: make_server(db, owner.org, owner.user).id),
    "agent_session": (
        AgentSession,
        lambda db, owner: make_agent_session(db, make_server(db, owner.org, owner.user)).id,
    ),
    "policy": (Policy, lambda db, owner: make_policy(db, owner.org).id),
    "approval": (
        Approval,
        lambda db, owner: make_approval(db, make_server(db, owner.org, owner.user)).id,
    ),
}

# A valid body for every request model a route with an ID takes, so that the call reaches
# the lookup (validation runs first and would answer 422 whoever owns the object).
SAMPLE_BODIES: dict[str, dict[str, object]] = {
    "ServerUpdate": {"name": "renamed"},
    "SuspendBody": {"reason": "isolation test"},
    "DecisionBody": {"reason": "isolation test"},
    "PolicyUpdate": {"priority": 5},
}


def sample_body(info: RouteInfo) -> dict[str, object]:
    body = info.route.body_field
    if body is None:
        return {}
    name = getattr(body.field_info.annotation, "__name__", str(body.field_info.annotation))
    name = name.removeprefix("Optional[").removesuffix("]")
    for key, sample in SAMPLE_BODIES.items():
        if key in name:
            return sample
    raise AssertionError(f"{info.label}: add a sample body for {name} to SAMPLE_BODIES")


ID_ROUTES = [info for info in all_routes() if info.id_params]


def test_every_id_kind_in_a_route_has_a_factory() -> None:
    kinds = {kind for info in ID_ROUTES for kind in info.id_params.values()}
    assert kinds <= set(OBJECTS), f"add factories for {sorted(kinds - set(OBJECTS))}"


@pytest.mark.parametrize("info", ID_ROUTES, ids=lambda info: info.label)
def test_another_organizations_object_is_404_and_untouched(
    info: RouteInfo, db: Session, client_for: Callable[[FastAPI], TestClient]
) -> None:
    intruder = make_actor(db, Role.OWNER)
    victim = make_actor(db, Role.OWNER)
    targets: list[tuple[type[SQLModel], str]] = []
    ids: dict[str, str] = {}
    for name, kind in info.id_params.items():
        model, factory = OBJECTS[kind]
        ids[name] = factory(db, victim)
        targets.append((model, ids[name]))
    path = info.path_with(ids)
    before = [db.get(model, object_id).model_dump() for model, object_id in targets]  # type: ignore[union-attr]
    events_before = db.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.chain_id == victim.org.id)  # type: ignore[arg-type]
    )

    response = client_for(info.app).request(
        info.method, path, headers=intruder.headers, json=sample_body(info)
    )

    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"
    db.expire_all()
    after = [db.get(model, object_id).model_dump() for model, object_id in targets]  # type: ignore[union-attr]
    assert after == before
    events_after = db.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.chain_id == victim.org.id)  # type: ignore[arg-type]
    )
    assert events_after == events_before
