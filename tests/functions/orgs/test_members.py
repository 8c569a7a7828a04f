"""Members and roles (API.md §1, §2): listing, role changes, removal, leaving, and the
last-owner rules."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col

from shared.models import Member
from shared.permissions import Role
from tests.factories import Actor, make_actor, make_member, make_org, make_user
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

MANAGERS = {Role.OWNER, Role.ADMIN}


@pytest.fixture
def owner(db: Session) -> Actor:
    return make_actor(db, Role.OWNER)


def role_of(db: Session, member: Member) -> str | None:
    db.expire_all()
    row = db.get(Member, member.id)
    return row.role if row else None


# --- reading


@pytest.mark.parametrize("role", list(Role))
def test_every_member_may_read_members(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    body = ok(get(client, caller, "list-members"))
    assert body["total"] == 2
    assert {member["userId"] for member in body["members"]} == {owner.user.id, caller.user.id}
    active = ok(get(client, caller, "get-active-member"))
    assert active["id"] == caller.member.id
    assert active["role"] == role.value
    assert active["user"]["email"] == caller.user.email
    assert ok(get(client, caller, "get-active-member-role")) == {"role": role.value}
    other = ok(get(client, caller, "get-active-member-role", userId=owner.user.id))
    assert other == {"role": "owner"}


def test_list_members_pages_sorts_and_filters(
    client: TestClient, owner: Actor, db: Session
) -> None:
    admins = [make_actor(db, Role.ADMIN, org=owner.org) for _ in range(2)]
    make_actor(db, Role.AUDITOR, org=owner.org)
    page = ok(
        get(
            client,
            owner,
            "list-members",
            limit=1,
            offset=1,
            sortBy="createdAt",
            sortDirection="desc",
        )
    )
    assert page["total"] == 4
    assert len(page["members"]) == 1
    filtered = ok(
        get(
            client,
            owner,
            "list-members",
            filterField="role",
            filterOperator="eq",
            filterValue="admin",
        )
    )
    assert filtered["total"] == 2
    assert {m["id"] for m in filtered["members"]} == {a.member.id for a in admins}
    several = ok(
        get(
            client,
            owner,
            "list-members",
            filterField="role",
            filterOperator="in",
            filterValue="owner,auditor",
        )
    )
    assert sorted(m["role"] for m in several["members"]) == ["auditor", "owner"]
    by_slug = ok(get(client, owner, "list-members", organizationSlug=owner.org.slug, sortBy="role"))
    assert [m["role"] for m in by_slug["members"]] == ["admin", "admin", "auditor", "owner"]
    later = ok(
        get(
            client,
            owner,
            "list-members",
            filterField="createdAt",
            filterOperator="gte",
            filterValue="2000-01-01T00:00:00Z",
        )
    )
    assert later["total"] == 4


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"sortBy": "password"},
        {"filterField": "email", "filterValue": "x"},
        {"filterField": "role"},
        {"filterField": "createdAt", "filterValue": "yesterday"},
        {"filterField": "createdAt", "filterOperator": "contains", "filterValue": "2026"},
        {"organizationId": "not-an-id"},
    ],
)
def test_bad_list_members_queries_are_validation_errors(
    client: TestClient, owner: Actor, params: dict[str, object]
) -> None:
    refused(get(client, owner, "list-members", **params), 400, "VALIDATION_ERROR")


def test_no_active_organization(client: TestClient, db: Session) -> None:
    caller = signed_in(db)
    refused(get(client, caller, "list-members"), 400, "NO_ACTIVE_ORGANIZATION")
    refused(get(client, caller, "get-active-member"), 400, "NO_ACTIVE_ORGANIZATION")
    member_id = "mem_" + "a" * 21
    refused(
        post(client, caller, "update-member-role", memberId=member_id, role="admin"),
        400,
        "NO_ACTIVE_ORGANIZATION",
    )


# --- role changes


@pytest.mark.parametrize("role", list(Role))
def test_role_changes_are_for_owners_and_admins(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    target = make_actor(db, Role.DEVELOPER, org=owner.org)
    response = post(client, caller, "update-member-role", memberId=target.member.id, role="ciso")
    if role in MANAGERS:
        body = ok(response)
        assert body == {
            "id": target.member.id,
            "organizationId": owner.org.id,
            "userId": target.user.id,
            "role": "ciso",
            "createdAt": body["createdAt"],
        }
        [event] = events(db, owner.org.id)
        assert event.operation == "member.role_changed"
        assert event.actor_id == caller.user.id
        assert event.metadata_ == {
            "memberId": target.member.id,
            "userId": target.user.id,
            "oldRole": "developer",
            "newRole": "ciso",
        }
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_UPDATE_THIS_MEMBER")
        assert role_of(db, target.member) == "developer"
        assert events(db, owner.org.id) == []


@pytest.mark.parametrize(("target_role", "new_role"), [("owner", "admin"), ("developer", "owner")])
def test_admins_cannot_touch_owners(
    client: TestClient, owner: Actor, db: Session, target_role: str, new_role: str
) -> None:
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    target = owner if target_role == "owner" else make_actor(db, Role.DEVELOPER, org=owner.org)
    response = post(client, admin, "update-member-role", memberId=target.member.id, role=new_role)
    refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_UPDATE_THIS_MEMBER")
    assert role_of(db, target.member) == target_role
    promote_self = post(client, admin, "update-member-role", memberId=admin.member.id, role="owner")
    refused(promote_self, 403, "YOU_ARE_NOT_ALLOWED_TO_UPDATE_THIS_MEMBER")


def test_owners_promote_and_demote_owners(client: TestClient, owner: Actor, db: Session) -> None:
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    ok(post(client, owner, "update-member-role", memberId=admin.member.id, role="owner"))
    ok(post(client, owner, "update-member-role", memberId=owner.member.id, role="auditor"))
    assert role_of(db, owner.member) == "auditor"
    assert role_of(db, admin.member) == "owner"


@pytest.mark.parametrize(
    "role", ["member", "boss", "Owner", "", ["admin", "ciso"], "admin,ciso", []]
)
def test_unknown_or_multiple_roles_are_refused(
    client: TestClient, owner: Actor, db: Session, role: object
) -> None:
    target = make_actor(db, Role.DEVELOPER, org=owner.org)
    response = post(client, owner, "update-member-role", memberId=target.member.id, role=role)
    refused(response, 400, "ROLE_NOT_FOUND")
    assert role_of(db, target.member) == "developer"


def test_a_single_role_in_a_list_is_accepted(client: TestClient, owner: Actor, db: Session) -> None:
    target = make_actor(db, Role.DEVELOPER, org=owner.org)
    body = ok(post(client, owner, "update-member-role", memberId=target.member.id, role=["ciso"]))
    assert body["role"] == "ciso"


def test_the_last_owner_cannot_be_demoted(client: TestClient, owner: Actor, db: Session) -> None:
    response = post(client, owner, "update-member-role", memberId=owner.member.id, role="admin")
    refused(response, 400, "YOU_CANNOT_LEAVE_THE_ORGANIZATION_WITHOUT_AN_OWNER")
    assert role_of(db, owner.member) == "owner"
    assert events(db, owner.org.id) == []
    same = post(client, owner, "update-member-role", memberId=owner.member.id, role="owner")
    assert ok(same)["role"] == "owner"  # no change, nothing recorded
    assert events(db, owner.org.id) == []


def test_unknown_member_is_404(client: TestClient, owner: Actor) -> None:
    response = post(client, owner, "update-member-role", memberId="mem_" + "x" * 21, role="admin")
    refused(response, 404, "MEMBER_NOT_FOUND")
    refused(
        post(client, owner, "update-member-role", memberId="nope", role="admin"),
        400,
        "VALIDATION_ERROR",
    )


# --- removal and leaving


@pytest.mark.parametrize("role", list(Role))
def test_removal_is_for_owners_and_admins(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    target = make_actor(db, Role.DEVELOPER, org=owner.org)
    response = post(client, caller, "remove-member", memberIdOrEmail=target.member.id)
    if role in MANAGERS:
        member = ok(response)["member"]
        assert member["id"] == target.member.id
        assert "user" not in member  # removed by id: Better Auth leaves the user out
        assert role_of(db, target.member) is None
        assert active_organization(db, target.user) is None
        assert operations(db, owner.org.id) == ["member.removed"]
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_DELETE_THIS_MEMBER")
        assert role_of(db, target.member) == "developer"


def test_remove_by_email_includes_the_user(client: TestClient, owner: Actor, db: Session) -> None:
    target = make_actor(db, Role.CISO, org=owner.org)
    body = ok(post(client, owner, "remove-member", memberIdOrEmail=target.user.email.upper()))
    assert body["member"]["user"]["id"] == target.user.id
    refused(
        post(client, owner, "remove-member", memberIdOrEmail="nobody@example.com"),
        404,
        "MEMBER_NOT_FOUND",
    )
    refused(post(client, owner, "remove-member", memberIdOrEmail="nope"), 400, "VALIDATION_ERROR")


def test_admins_cannot_remove_owners(client: TestClient, owner: Actor, db: Session) -> None:
    make_actor(db, Role.OWNER, org=owner.org)
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    response = post(client, admin, "remove-member", memberIdOrEmail=owner.member.id)
    refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_DELETE_THIS_MEMBER")
    assert role_of(db, owner.member) == "owner"


def test_the_last_owner_cannot_be_removed_or_leave(
    client: TestClient, owner: Actor, db: Session
) -> None:
    response = post(client, owner, "remove-member", memberIdOrEmail=owner.member.id)
    refused(response, 400, "YOU_CANNOT_LEAVE_THE_ORGANIZATION_AS_THE_ONLY_OWNER")
    response = post(client, owner, "leave", organizationId=owner.org.id)
    refused(response, 400, "YOU_CANNOT_LEAVE_THE_ORGANIZATION_AS_THE_ONLY_OWNER")
    assert role_of(db, owner.member) == "owner"
    assert events(db, owner.org.id) == []
    second = make_actor(db, Role.OWNER, org=owner.org)
    left = ok(post(client, owner, "leave", organizationId=owner.org.id))
    assert left["id"] == owner.member.id
    assert left["user"]["id"] == owner.user.id
    assert role_of(db, owner.member) is None
    assert active_organization(db, owner.user) is None
    assert operations(db, owner.org.id) == ["member.left"]
    refused(
        post(client, second, "leave", organizationId=owner.org.id),
        400,
        "YOU_CANNOT_LEAVE_THE_ORGANIZATION_AS_THE_ONLY_OWNER",
    )


@pytest.mark.parametrize("role", list(Role))
def test_every_member_may_leave(client: TestClient, owner: Actor, db: Session, role: Role) -> None:
    caller = make_actor(db, role, org=owner.org)
    ok(post(client, caller, "leave", organizationId=owner.org.id))
    assert count(db, Member, col(Member.organization_id) == owner.org.id) == 1


def test_leaving_an_org_you_are_not_in_is_404(
    client: TestClient, owner: Actor, db: Session
) -> None:
    other = make_org(db)
    make_member(db, other, make_user(db))
    refused(post(client, owner, "leave", organizationId=other.id), 404, "ORGANIZATION_NOT_FOUND")
