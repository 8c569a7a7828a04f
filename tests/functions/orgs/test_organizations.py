"""Organizations (API.md §2, Better Auth's organization plugin): create, list, set-active,
get-full-organization, update, delete, check-slug."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col

from shared.cookies import SESSION_COOKIE, sign
from shared.models import ApiKey, Invitation, Member, Organization
from shared.permissions import Role
from tests.factories import (
    Actor,
    make_actor,
    make_api_key,
    make_invitation,
    make_member,
    make_org,
    unique,
)
from tests.functions.orgs.support import (
    active_organization,
    count,
    events,
    get,
    ok,
    operations,
    post,
    refused,
    signed_in,
)


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def test_create_makes_the_caller_owner_and_the_org_active(client: TestClient, db: Session) -> None:
    caller = signed_in(db)
    slug = unique("acme-")
    body = ok(post(client, caller, "create", name="Acme", slug=slug, metadata={"plan": "pro"}))
    assert body["name"] == "Acme"
    assert body["slug"] == slug
    assert body["logo"] is None
    assert body["metadata"] == {"plan": "pro"}
    assert body["id"].startswith("org_")
    assert body["createdAt"].endswith("Z")
    [member] = body["members"]
    assert member["role"] == "owner"
    assert member["userId"] == caller.user.id
    assert member["organizationId"] == body["id"]
    assert "user" not in member
    assert active_organization(db, caller.user) == body["id"]
    assert operations(db, body["id"]) == ["organization.created"]


def test_create_can_keep_the_current_active_organization(
    client: TestClient, owner: Actor, db: Session
) -> None:
    body = ok(
        post(
            client,
            owner,
            "create",
            name="Second",
            slug=unique("second-"),
            keepCurrentActiveOrganization=True,
        )
    )
    assert active_organization(db, owner.user) == owner.org.id
    assert body["members"][0]["role"] == "owner"


def test_create_sets_no_cookie(client: TestClient, owner: Actor) -> None:
    response = post(client, owner, "create", name="X", slug=unique("x-"))
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert "set-auth-token" not in response.headers


def test_taken_slug_is_refused(client: TestClient, owner: Actor, db: Session) -> None:
    before = count(db, Organization)
    refused(
        post(client, owner, "create", name="X", slug=owner.org.slug),
        400,
        "ORGANIZATION_ALREADY_EXISTS",
    )
    assert count(db, Organization) == before
    refused(
        post(client, owner, "check-slug", slug=owner.org.slug),
        400,
        "ORGANIZATION_SLUG_ALREADY_TAKEN",
    )
    assert ok(post(client, owner, "check-slug", slug=unique("free-"))) == {"status": True}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "X", "slug": "Upper"},
        {"name": "X", "slug": "-dash-first"},
        {"name": "X", "slug": "a"},
        {"name": "X", "slug": "x" * 65},
        {"name": "X"},
        {"name": "", "slug": "fine-slug"},
        {"name": "X", "slug": "fine-slug", "metadata": "not an object"},
        {"name": "X", "slug": "fine-slug", "userId": "usr_x"},
        {"name": "X\u0000", "slug": "fine-slug"},
        {"name": "X", "slug": "fine-slug", "metadata": {"k": "\u0000"}},
    ],
)
def test_bad_create_bodies_are_validation_errors(
    client: TestClient, owner: Actor, db: Session, body: dict[str, object]
) -> None:
    before = count(db, Organization)
    response = client.post("/api/auth/organization/create", json=body, headers=owner.headers)
    refused(response, 400, "VALIDATION_ERROR")
    assert response.json()["message"].startswith("[body")
    assert count(db, Organization) == before


def test_list_shows_only_the_callers_organizations(
    client: TestClient, owner: Actor, db: Session
) -> None:
    other = make_org(db, metadata_={"tier": 1})
    make_member(db, other, owner.user, Role.AUDITOR)
    make_org(db)  # not a member
    listed = ok(get(client, owner, "list"))
    assert {org["id"] for org in listed} == {owner.org.id, other.id}
    by_id = {org["id"]: org for org in listed}
    assert by_id[other.id]["metadata"] == {"tier": 1}  # an object, never a JSON string
    assert by_id[owner.org.id]["metadata"] is None


def test_set_active_resets_the_cookie_and_bearer_token(
    client: TestClient, owner: Actor, db: Session
) -> None:
    other = make_org(db)
    make_member(db, other, owner.user, Role.DEVELOPER)
    response = post(client, owner, "set-active", organizationId=other.id)
    body = ok(response)
    assert body["id"] == other.id
    assert body["metadata"] is None
    assert response.headers["set-auth-token"] == sign(owner.token)
    assert "set-auth-token" in response.headers["access-control-expose-headers"]
    cookie = response.cookies.get(SESSION_COOKIE)
    assert cookie is not None
    assert unquote(cookie) == sign(owner.token)
    assert active_organization(db, owner.user) == other.id


def test_set_active_by_slug_and_current(client: TestClient, owner: Actor, db: Session) -> None:
    assert (
        ok(post(client, owner, "set-active", organizationSlug=owner.org.slug))["id"] == owner.org.id
    )
    client.cookies.clear()
    response = client.post("/api/auth/organization/set-active", headers=owner.headers)
    assert ok(response)["id"] == owner.org.id
    assert "set-auth-token" in response.headers


def test_set_active_null_clears_it(client: TestClient, owner: Actor, db: Session) -> None:
    response = post(client, owner, "set-active", organizationId=None)
    assert ok(response) is None
    assert "set-auth-token" in response.headers  # an organization was active
    assert active_organization(db, owner.user) is None
    again = post(client, owner, "set-active", organizationId=None)
    assert ok(again) is None
    assert "set-auth-token" not in again.headers
    assert ok(post(client, owner, "set-active")) is None


def test_set_active_on_a_foreign_org_is_404_and_keeps_the_active_one(
    client: TestClient, owner: Actor, db: Session
) -> None:
    foreign = make_org(db)
    refused(
        post(client, owner, "set-active", organizationId=foreign.id), 404, "ORGANIZATION_NOT_FOUND"
    )
    refused(
        post(client, owner, "set-active", organizationSlug=foreign.slug),
        404,
        "ORGANIZATION_NOT_FOUND",
    )
    assert active_organization(db, owner.user) == owner.org.id  # no Better Auth-style reset


def test_full_organization(client: TestClient, owner: Actor, db: Session) -> None:
    developer = make_actor(db, Role.DEVELOPER, org=owner.org)
    invitation = make_invitation(db, owner.org, owner.user)
    owner_invitation = make_invitation(db, owner.org, owner.user, role=Role.OWNER)
    admin = make_actor(db, Role.ADMIN, org=owner.org)

    body = ok(get(client, owner, "get-full-organization"))
    assert body["id"] == owner.org.id
    members = {member["userId"]: member for member in body["members"]}
    assert set(members) == {owner.user.id, developer.user.id, admin.user.id}
    assert members[developer.user.id]["user"] == {
        "id": developer.user.id,
        "name": developer.user.name,
        "email": developer.user.email,
        "image": None,
    }
    assert {inv["id"] for inv in body["invitations"]} == {invitation.id, owner_invitation.id}
    [shown] = [inv for inv in body["invitations"] if inv["id"] == invitation.id]
    assert shown == {
        "id": invitation.id,
        "organizationId": owner.org.id,
        "email": invitation.email,
        "role": "developer",
        "status": "pending",
        "expiresAt": shown["expiresAt"],
        "createdAt": shown["createdAt"],
        "inviterId": owner.user.id,
    }

    seen_by_admin = ok(get(client, admin, "get-full-organization", organizationId=owner.org.id))
    assert [inv["id"] for inv in seen_by_admin["invitations"]] == [invitation.id]
    assert ok(get(client, developer, "get-full-organization"))["invitations"] == []
    limited = ok(
        get(client, owner, "get-full-organization", organizationSlug=owner.org.slug, membersLimit=1)
    )
    assert len(limited["members"]) == 1


def test_full_organization_is_null_without_an_active_one(client: TestClient, db: Session) -> None:
    caller = signed_in(db)
    response = get(client, caller, "get-full-organization")
    assert response.status_code == 200
    assert response.text == "null"


@pytest.mark.parametrize("role", list(Role))
def test_update_is_for_owners_and_admins(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    response = post(client, caller, "update", data={"name": "Renamed", "metadata": {"a": 1}})
    if role in {Role.OWNER, Role.ADMIN}:
        body = ok(response)
        assert body["name"] == "Renamed"
        assert body["metadata"] == {"a": 1}
        assert operations(db, owner.org.id) == ["organization.updated"]
        db.expire_all()
        assert db.get(Organization, owner.org.id).name == "Renamed"  # type: ignore[union-attr]
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_UPDATE_THIS_ORGANIZATION")
        assert operations(db, owner.org.id) == []


def test_update_slug(client: TestClient, owner: Actor, db: Session) -> None:
    taken = make_org(db)
    refused(
        post(client, owner, "update", data={"slug": taken.slug}),
        400,
        "ORGANIZATION_SLUG_ALREADY_TAKEN",
    )
    refused(post(client, owner, "update", data={"slug": "Bad Slug"}), 400, "VALIDATION_ERROR")
    refused(post(client, owner, "update", data={"name": None}), 400, "VALIDATION_ERROR")
    fresh = unique("renamed-")
    body = ok(
        post(
            client,
            owner,
            "update",
            organizationId=owner.org.id,
            data={"slug": fresh, "logo": "https://x/l.png"},
        )
    )
    assert body["slug"] == fresh
    assert body["logo"] == "https://x/l.png"
    assert ok(post(client, owner, "update", data={"logo": None, "metadata": None}))["logo"] is None
    [first, second] = [event.metadata_ for event in events(db, owner.org.id)]
    assert first == {"fields": ["logo", "slug"]}
    assert second == {"fields": ["logo"]}
    ok(post(client, owner, "update", data={}))  # nothing changes, nothing is recorded
    assert len(events(db, owner.org.id)) == 2


@pytest.mark.parametrize("role", list(Role))
def test_delete_is_for_owners_only(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    response = post(client, caller, "delete", organizationId=owner.org.id)
    if role is Role.OWNER:
        assert ok(response)["id"] == owner.org.id
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_DELETE_THIS_ORGANIZATION")
        db.expire_all()
        assert db.get(Organization, owner.org.id) is not None


def test_delete_cascades_and_keeps_the_audit_trail(
    client: TestClient, owner: Actor, db: Session
) -> None:
    org_id = owner.org.id
    make_api_key(db, owner.org, owner.user)
    make_invitation(db, owner.org, owner.user)
    make_actor(db, Role.DEVELOPER, org=owner.org)
    ok(post(client, owner, "update", data={"name": "Going"}))
    body = ok(post(client, owner, "delete", organizationId=org_id))
    assert body["name"] == "Going"
    db.expire_all()
    assert db.get(Organization, org_id) is None
    assert count(db, Member, col(Member.organization_id) == org_id) == 0
    assert count(db, Invitation, col(Invitation.organization_id) == org_id) == 0
    assert count(db, ApiKey, col(ApiKey.organization_id) == org_id) == 0
    assert active_organization(db, owner.user) is None
    assert operations(db, org_id) == ["organization.updated", "organization.deleted"]


def test_api_keys_cannot_use_organization_routes(
    client: TestClient, owner: Actor, db: Session
) -> None:
    _, key = make_api_key(db, owner.org, owner.user, Role.OWNER)
    response = client.get("/api/auth/organization/list", headers={"Authorization": f"Bearer {key}"})
    refused(response, 403, "SESSION_REQUIRED")


def test_anonymous_callers_get_401(client: TestClient) -> None:
    refused(get(client, None, "list"), 401, "UNAUTHORIZED")
    refused(post(client, None, "create", name="X", slug="xx"), 401, "UNAUTHORIZED")
