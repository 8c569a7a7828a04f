"""Tenant isolation of the organization routes (API.md §0, §2).

Two organizations, each with an owner, a developer and a pending invitation. The owner of the
first calls every orgs route that takes an organization, member, invitation or user id (or an
organization slug, or a member's email) with the second organization's: every call answers
404 with a Better Auth-shaped body and nothing changes, neither rows nor audit events, nor
the caller's active organization (no Better Auth-style reset).

The ids in these routes travel in bodies and query strings, so tests/test_isolation.py (which
walks path ids) cannot see them. Instead, `test_every_route_taking_an_id_has_a_case` reads
the orgs function's OpenAPI document and fails when a route that accepts an id has no case
here, so a route added later is covered the day it is added.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, col

from functions.orgs.main import app
from shared.models import AuditEvent, Invitation, Member, Organization
from shared.models import Session as UserSession
from shared.permissions import Role
from tests.factories import Actor, make_actor, make_invitation
from tests.functions.orgs.support import BASE, refused


@dataclass
class World:
    mine: Actor  # the caller: owner of their own organization
    theirs: Actor  # the other organization's owner
    their_developer: Actor
    their_invitation: Invitation
    my_invitation: Invitation


@pytest.fixture
def world(db: Session) -> World:
    mine = make_actor(db, Role.OWNER)
    make_actor(db, Role.DEVELOPER, org=mine.org)
    theirs = make_actor(db, Role.OWNER)
    their_developer = make_actor(db, Role.DEVELOPER, org=theirs.org)
    return World(
        mine=mine,
        theirs=theirs,
        their_developer=their_developer,
        their_invitation=make_invitation(db, theirs.org, theirs.user),
        my_invitation=make_invitation(db, mine.org, mine.user),
    )


@dataclass(frozen=True)
class Case:
    method: str
    route: str
    code: str
    build: Callable[[World], dict[str, Any]]  # the body (POST) or query (GET)
    label: str

    def call(self, client: TestClient, world: World) -> Any:
        client.cookies.clear()
        payload = self.build(world)
        url = f"{BASE}/{self.route}"
        if self.method == "GET":
            return client.get(url, params=payload, headers=world.mine.headers)
        return client.post(url, json=payload, headers=world.mine.headers)


ORG = "ORGANIZATION_NOT_FOUND"
MEMBER = "MEMBER_NOT_FOUND"
INVITATION = "INVITATION_NOT_FOUND"


def case(method: str, route: str, code: str, label: str, build: Callable[[World], Any]) -> Case:
    return Case(method, route, code, build, label)


CASES = [
    case("POST", "set-active", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case("POST", "set-active", ORG, "slug", lambda w: {"organizationSlug": w.theirs.org.slug}),
    case("GET", "get-full-organization", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case(
        "GET",
        "get-full-organization",
        ORG,
        "slug",
        lambda w: {"organizationSlug": w.theirs.org.slug},
    ),
    case(
        "POST",
        "update",
        ORG,
        "id",
        lambda w: {"organizationId": w.theirs.org.id, "data": {"name": "pwned"}},
    ),
    case("POST", "delete", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case("GET", "list-members", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case("GET", "list-members", ORG, "slug", lambda w: {"organizationSlug": w.theirs.org.slug}),
    case(
        "POST",
        "update-member-role",
        MEMBER,
        "member in my org",
        lambda w: {"memberId": w.their_developer.member.id, "role": "admin"},
    ),
    case(
        "POST",
        "update-member-role",
        MEMBER,
        "their owner",
        lambda w: {"memberId": w.theirs.member.id, "role": "developer"},
    ),
    case(
        "POST",
        "update-member-role",
        ORG,
        "their org",
        lambda w: {
            "memberId": w.their_developer.member.id,
            "role": "admin",
            "organizationId": w.theirs.org.id,
        },
    ),
    case(
        "POST",
        "remove-member",
        MEMBER,
        "id",
        lambda w: {"memberIdOrEmail": w.their_developer.member.id},
    ),
    case(
        "POST",
        "remove-member",
        MEMBER,
        "email",
        lambda w: {"memberIdOrEmail": w.their_developer.user.email},
    ),
    case(
        "POST",
        "remove-member",
        ORG,
        "their org",
        lambda w: {
            "memberIdOrEmail": w.their_developer.member.id,
            "organizationId": w.theirs.org.id,
        },
    ),
    case("POST", "leave", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case("GET", "get-active-member-role", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case(
        "GET",
        "get-active-member-role",
        ORG,
        "slug",
        lambda w: {"organizationSlug": w.theirs.org.slug},
    ),
    case(
        "GET",
        "get-active-member-role",
        MEMBER,
        "their user",
        lambda w: {"userId": w.theirs.user.id},
    ),
    case(
        "POST",
        "invite-member",
        ORG,
        "their org",
        lambda w: {
            "email": "someone@example.com",
            "role": "admin",
            "organizationId": w.theirs.org.id,
        },
    ),
    case(
        "POST",
        "accept-invitation",
        INVITATION,
        "id",
        lambda w: {"invitationId": w.their_invitation.id},
    ),
    case(
        "POST",
        "reject-invitation",
        INVITATION,
        "id",
        lambda w: {"invitationId": w.their_invitation.id},
    ),
    case(
        "POST",
        "cancel-invitation",
        INVITATION,
        "id",
        lambda w: {"invitationId": w.their_invitation.id},
    ),
    case("GET", "list-invitations", ORG, "id", lambda w: {"organizationId": w.theirs.org.id}),
    case("GET", "get-invitation", INVITATION, "id", lambda w: {"id": w.their_invitation.id}),
]


def snapshot(db: Session, world: World) -> dict[str, Any]:
    """Everything a cross-tenant call could touch, as committed."""
    db.expire_all()
    org_ids = [world.mine.org.id, world.theirs.org.id]
    users = [world.mine.user.id, world.theirs.user.id, world.their_developer.user.id]

    def rows(model: Any, *where: Any) -> list[dict[str, Any]]:
        query = select(model).where(*where).order_by(col(model.id))
        return [row.model_dump() for row in db.scalars(query)]

    return {
        "organizations": rows(Organization, col(Organization.id).in_(org_ids)),
        "members": rows(Member, col(Member.organization_id).in_(org_ids)),
        "invitations": rows(Invitation, col(Invitation.organization_id).in_(org_ids)),
        "sessions": rows(UserSession, col(UserSession.user_id).in_(users)),
        "events": rows(AuditEvent, col(AuditEvent.chain_id).in_(org_ids)),
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.route} ({c.label})")
def test_another_organizations_ids_are_404_and_change_nothing(
    case: Case, world: World, client: TestClient, db: Session
) -> None:
    before = snapshot(db, world)
    response = case.call(client, world)
    refused(response, 404, case.code)
    assert "set-cookie" not in response.headers
    assert snapshot(db, world) == before


def test_the_same_calls_succeed_on_the_callers_own_objects(
    world: World, client: TestClient, db: Session
) -> None:
    """The matrix above is meaningful: with the caller's own ids, the same routes work."""
    mine = world.mine
    client.cookies.clear()
    response = client.post(
        f"{BASE}/cancel-invitation",
        json={"invitationId": world.my_invitation.id},
        headers=mine.headers,
    )
    assert response.status_code == 200, response.text
    response = client.get(
        f"{BASE}/list-members", params={"organizationId": mine.org.id}, headers=mine.headers
    )
    assert response.json()["total"] == 2


_ID_PATTERN = re.compile(r"^\^(org|mem|inv|usr)_")
_ID_FIELDS = {"organizationSlug", "memberIdOrEmail"}


def _takes_an_id(schema: Any, components: dict[str, Any], name: str = "") -> bool:
    if name in _ID_FIELDS:
        return True
    if isinstance(schema, list):
        return any(_takes_an_id(item, components) for item in schema)
    if not isinstance(schema, dict):
        return False
    if "$ref" in schema:
        return _takes_an_id(components[schema["$ref"].rsplit("/", 1)[1]], components)
    if _ID_PATTERN.match(str(schema.get("pattern", ""))):
        return True
    nested = [
        _takes_an_id(value, components, key) for key, value in schema.get("properties", {}).items()
    ]
    return any(nested) or any(
        _takes_an_id(schema[key], components)
        for key in ("anyOf", "oneOf", "allOf", "items")
        if key in schema
    )


def routes_taking_ids() -> set[tuple[str, str]]:
    document = app.openapi()
    components = document.get("components", {}).get("schemas", {})
    found = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            parameters = operation.get("parameters", [])
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if any(
                _takes_an_id(parameter["schema"], components, parameter["name"])
                for parameter in parameters
            ) or _takes_an_id(body.get("schema", {}), components):
                found.add((method.upper(), path.removeprefix(f"{BASE}/")))
    return found


def test_every_route_taking_an_id_has_a_case() -> None:
    taking = routes_taking_ids()
    assert len(taking) >= 15, taking  # the detection itself works
    covered = {(case.method, case.route) for case in CASES}
    assert taking <= covered, f"add isolation cases for {sorted(taking - covered)}"
