"""Generated role checks: every route of every function declares exactly one access rule,
and each permission-guarded route refuses every role that lacks the permission (API.md §1).
A route added later is covered the day it is added."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from shared.ids import new_id
from shared.permissions import ROLE_PERMISSIONS, Role
from tests.factories import make_actor
from tests.routes import RouteInfo, all_routes

ROUTES = all_routes()


def concrete_path(info: RouteInfo) -> str:
    return info.path_with({name: new_id(kind) for name, kind in info.id_params.items()})


@pytest.mark.parametrize("info", ROUTES, ids=lambda info: info.label)
def test_every_route_declares_exactly_one_access_rule(info: RouteInfo) -> None:
    assert len(info.guards) == 1, f"{info.label}: guards {info.guards}"


GUARDED = [
    (info, role)
    for info, role in itertools.product(ROUTES, Role)
    if info.guards and info.guards[0].kind in {"permission", "inline"}
]


@pytest.mark.parametrize(
    ("info", "role"), GUARDED, ids=lambda value: getattr(value, "label", str(value))
)
def test_roles_without_the_permission_are_refused(
    info: RouteInfo, role: Role, db: Session, client_for: Callable[[FastAPI], TestClient]
) -> None:
    permission = info.guards[0].permission
    assert permission is not None
    actor = make_actor(db, role)
    client = client_for(info.app)
    response = client.request(info.method, concrete_path(info), headers=actor.headers, json={})
    if permission in ROLE_PERMISSIONS[role]:
        assert response.status_code not in {401, 403}, response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "info",
    [info for info in ROUTES if info.guards and info.guards[0].kind != "public"],
    ids=lambda info: info.label,
)
def test_routes_refuse_anonymous_callers(
    info: RouteInfo, client_for: Callable[[FastAPI], TestClient]
) -> None:
    response = client_for(info.app).request(info.method, concrete_path(info), json={})
    assert response.status_code == 401, response.text
