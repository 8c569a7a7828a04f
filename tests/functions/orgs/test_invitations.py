"""Invitations (API.md §2): who may invite, expiry after 48 h, acceptance only by the invited
email's user and only once, rejection, cancellation, listing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col

from shared.audit import verify_chain
from shared.models import Invitation, Member
from shared.models.base import utcnow
from shared.permissions import Role
from tests.factories import Actor, expired, make_actor, make_invitation
from tests.functions.orgs.support import (
    SignedIn,
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


@pytest.fixture
def invitee(db: Session) -> SignedIn:
    return signed_in(db)


def status_of(db: Session, invitation_id: str) -> str | None:
    db.expire_all()
    row = db.get(Invitation, invitation_id)
    return row.status if row else None


def members_of(db: Session, organization_id: str) -> int:
    return count(db, Member, col(Member.organization_id) == organization_id)


# --- inviting


@pytest.mark.parametrize("role", list(Role))
def test_inviting_is_for_owners_and_admins(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    response = post(
        client, caller, "invite-member", email="New.Person@Example.com", role="developer"
    )
    if role in MANAGERS:
        body = ok(response)
        assert body["email"] == "new.person@example.com"
        assert body["role"] == "developer"
        assert body["status"] == "pending"
        assert body["organizationId"] == owner.org.id
        assert body["inviterId"] == caller.user.id
        assert body["id"].startswith("inv_")
        lifetime = datetime.fromisoformat(body["expiresAt"]) - datetime.fromisoformat(
            body["createdAt"]
        )
        assert lifetime == timedelta(hours=48)
        [event] = events(db, owner.org.id)
        assert event.operation == "invitation.created"
        assert event.metadata_ == {
            "invitationId": body["id"],
            "email": "new.person@example.com",
            "role": "developer",
        }
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_INVITE_USERS_TO_THIS_ORGANIZATION")
        assert count(db, Invitation, col(Invitation.organization_id) == owner.org.id) == 0


def test_only_owners_invite_owners(client: TestClient, owner: Actor, db: Session) -> None:
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    refused(
        post(client, admin, "invite-member", email="boss@example.com", role="owner"),
        403,
        "YOU_ARE_NOT_ALLOWED_TO_INVITE_USER_WITH_THIS_ROLE",
    )
    assert ok(post(client, owner, "invite-member", email="boss@example.com", role="owner"))


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"email": "x@example.com", "role": "member"}, "ROLE_NOT_FOUND"),
        ({"email": "x@example.com", "role": ["admin", "ciso"]}, "ROLE_NOT_FOUND"),
        ({"email": "not-an-email", "role": "admin"}, "INVALID_EMAIL"),
        ({"email": "x@example.com"}, "VALIDATION_ERROR"),
        ({"email": "x@example.com", "role": "admin", "teamId": "t"}, "VALIDATION_ERROR"),
        (
            {"email": "x@example.com", "role": "admin", "organizationId": "org_1"},
            "VALIDATION_ERROR",
        ),
    ],
)
def test_bad_invitations_are_refused(
    client: TestClient, owner: Actor, db: Session, body: dict[str, object], code: str
) -> None:
    response = client.post("/api/auth/organization/invite-member", json=body, headers=owner.headers)
    refused(response, 400, code)
    assert count(db, Invitation, col(Invitation.organization_id) == owner.org.id) == 0
    assert events(db, owner.org.id) == []


def test_members_and_pending_invitees_are_not_invited_twice(
    client: TestClient, owner: Actor, db: Session
) -> None:
    member = make_actor(db, Role.DEVELOPER, org=owner.org)
    refused(
        post(client, owner, "invite-member", email=member.user.email.upper(), role="admin"),
        400,
        "USER_IS_ALREADY_A_MEMBER_OF_THIS_ORGANIZATION",
    )
    first = ok(post(client, owner, "invite-member", email="twice@example.com", role="ciso"))
    refused(
        post(client, owner, "invite-member", email="TWICE@example.com", role="ciso"),
        400,
        "USER_IS_ALREADY_INVITED_TO_THIS_ORGANIZATION",
    )
    resent = ok(
        post(client, owner, "invite-member", email="twice@example.com", role="ciso", resend=True)
    )
    assert resent["id"] == first["id"]
    assert resent["expiresAt"] >= first["expiresAt"]
    assert operations(db, owner.org.id) == ["invitation.created", "invitation.resent"]


def test_an_expired_invitation_does_not_block_a_new_one(
    client: TestClient, owner: Actor, db: Session
) -> None:
    old = make_invitation(db, owner.org, owner.user, email="late@example.com", expires_at=expired())
    body = ok(post(client, owner, "invite-member", email="late@example.com", role="auditor"))
    assert body["id"] != old.id


# --- answering


def test_accept_joins_and_activates_the_organization(
    client: TestClient, owner: Actor, invitee: SignedIn, db: Session
) -> None:
    invitation = make_invitation(db, owner.org, owner.user, email=invitee.user.email.upper())
    details = ok(get(client, invitee, "get-invitation", id=invitation.id))
    assert details["organizationName"] == owner.org.name
    assert details["organizationSlug"] == owner.org.slug
    assert details["inviterEmail"] == owner.user.email
    assert details["status"] == "pending"

    response = post(client, invitee, "accept-invitation", invitationId=invitation.id)
    body = ok(response)
    assert "set-cookie" not in response.headers  # Better Auth sets the active org in the DB only
    assert body["invitation"]["status"] == "accepted"
    assert body["member"]["role"] == "developer"
    assert body["member"]["userId"] == invitee.user.id
    assert "user" not in body["member"]
    assert status_of(db, invitation.id) == "accepted"
    assert active_organization(db, invitee.user) == owner.org.id
    assert operations(db, owner.org.id) == ["invitation.accepted", "member.added"]
    assert {event.actor_id for event in events(db, owner.org.id)} == {invitee.user.id}
    assert ok(get(client, invitee, "get-active-member"))["role"] == "developer"
    assert verify_chain(db, owner.org.id).intact


def test_an_invitation_is_accepted_once(
    client: TestClient, owner: Actor, invitee: SignedIn, db: Session
) -> None:
    invitation = make_invitation(db, owner.org, owner.user, email=invitee.user.email)
    ok(post(client, invitee, "accept-invitation", invitationId=invitation.id))
    for route in ("accept-invitation", "reject-invitation"):
        refused(
            post(client, invitee, route, invitationId=invitation.id), 400, "INVITATION_NOT_FOUND"
        )
    refused(get(client, invitee, "get-invitation", id=invitation.id), 400, "INVITATION_NOT_FOUND")
    assert members_of(db, owner.org.id) == 2
    assert status_of(db, invitation.id) == "accepted"


def test_expired_invitations_cannot_be_answered(
    client: TestClient, owner: Actor, invitee: SignedIn, db: Session
) -> None:
    invitation = make_invitation(
        db,
        owner.org,
        owner.user,
        email=invitee.user.email,
        expires_at=utcnow() - timedelta(minutes=1),
    )
    for route in ("accept-invitation", "reject-invitation"):
        refused(
            post(client, invitee, route, invitationId=invitation.id), 400, "INVITATION_NOT_FOUND"
        )
    refused(get(client, invitee, "get-invitation", id=invitation.id), 400, "INVITATION_NOT_FOUND")
    assert members_of(db, owner.org.id) == 1
    assert status_of(db, invitation.id) == "pending"
    assert events(db, owner.org.id) == []


@pytest.mark.parametrize("route", ["accept-invitation", "reject-invitation"])
def test_only_the_recipient_answers(
    client: TestClient, owner: Actor, invitee: SignedIn, db: Session, route: str
) -> None:
    invitation = make_invitation(db, owner.org, owner.user, email=invitee.user.email)
    stranger = signed_in(db)
    # Someone with no link to the organization cannot even learn that the invitation exists.
    refused(post(client, stranger, route, invitationId=invitation.id), 404, "INVITATION_NOT_FOUND")
    refused(get(client, stranger, "get-invitation", id=invitation.id), 404, "INVITATION_NOT_FOUND")
    # A member of the organization can see it, but it is not theirs to answer.
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    refused(
        post(client, admin, route, invitationId=invitation.id),
        403,
        "YOU_ARE_NOT_THE_RECIPIENT_OF_THE_INVITATION",
    )
    refused(
        get(client, admin, "get-invitation", id=invitation.id),
        403,
        "YOU_ARE_NOT_THE_RECIPIENT_OF_THE_INVITATION",
    )
    assert status_of(db, invitation.id) == "pending"
    assert members_of(db, owner.org.id) == 2
    assert events(db, owner.org.id) == []


def test_reject(client: TestClient, owner: Actor, invitee: SignedIn, db: Session) -> None:
    invitation = make_invitation(db, owner.org, owner.user, email=invitee.user.email)
    body = ok(post(client, invitee, "reject-invitation", invitationId=invitation.id))
    assert body["invitation"]["status"] == "rejected"
    assert body["member"] is None
    assert members_of(db, owner.org.id) == 1
    assert operations(db, owner.org.id) == ["invitation.rejected"]
    refused(
        post(client, invitee, "accept-invitation", invitationId=invitation.id),
        400,
        "INVITATION_NOT_FOUND",
    )


def test_a_member_cannot_accept_into_the_same_org_again(
    client: TestClient, owner: Actor, db: Session
) -> None:
    developer = make_actor(db, Role.DEVELOPER, org=owner.org)
    invitation = make_invitation(db, owner.org, owner.user, email=developer.user.email)
    refused(
        post(client, developer, "accept-invitation", invitationId=invitation.id),
        400,
        "USER_IS_ALREADY_A_MEMBER_OF_THIS_ORGANIZATION",
    )
    assert status_of(db, invitation.id) == "pending"


def test_malformed_invitation_ids_are_validation_errors(
    client: TestClient, invitee: SignedIn
) -> None:
    refused(
        post(client, invitee, "accept-invitation", invitationId="nope"), 400, "VALIDATION_ERROR"
    )
    refused(get(client, invitee, "get-invitation", id="inv_short"), 400, "VALIDATION_ERROR")
    refused(get(client, invitee, "get-invitation"), 400, "VALIDATION_ERROR")
    unknown = "inv_" + "z" * 21
    refused(
        post(client, invitee, "accept-invitation", invitationId=unknown),
        404,
        "INVITATION_NOT_FOUND",
    )


# --- cancelling and listing


@pytest.mark.parametrize("role", list(Role))
def test_cancelling_is_for_owners_and_admins(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    invitation = make_invitation(db, owner.org, owner.user)
    response = post(client, caller, "cancel-invitation", invitationId=invitation.id)
    if role in MANAGERS:
        assert ok(response)["status"] == "canceled"
        assert operations(db, owner.org.id) == ["invitation.canceled"]
        refused(
            post(client, caller, "cancel-invitation", invitationId=invitation.id),
            400,
            "INVITATION_NOT_FOUND",
        )
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_CANCEL_THIS_INVITATION")
        assert status_of(db, invitation.id) == "pending"


def test_admins_cannot_cancel_owner_invitations(
    client: TestClient, owner: Actor, db: Session
) -> None:
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    invitation = make_invitation(db, owner.org, owner.user, role=Role.OWNER)
    refused(
        post(client, admin, "cancel-invitation", invitationId=invitation.id),
        403,
        "YOU_ARE_NOT_ALLOWED_TO_CANCEL_THIS_INVITATION",
    )
    assert status_of(db, invitation.id) == "pending"


def test_a_canceled_invitation_cannot_be_accepted(
    client: TestClient, owner: Actor, invitee: SignedIn, db: Session
) -> None:
    invitation = make_invitation(db, owner.org, owner.user, email=invitee.user.email)
    ok(post(client, owner, "cancel-invitation", invitationId=invitation.id))
    refused(
        post(client, invitee, "accept-invitation", invitationId=invitation.id),
        400,
        "INVITATION_NOT_FOUND",
    )


@pytest.mark.parametrize("role", list(Role))
def test_listing_invitations_is_for_owners_and_admins(
    client: TestClient, owner: Actor, db: Session, role: Role
) -> None:
    caller = make_actor(db, role, org=owner.org)
    developer_invitation = make_invitation(db, owner.org, owner.user)
    accepted = make_invitation(db, owner.org, owner.user, status="accepted")
    owner_invitation = make_invitation(db, owner.org, owner.user, role=Role.OWNER)
    response = get(client, caller, "list-invitations")
    if role is Role.OWNER:
        listed = {inv["id"] for inv in ok(response)}
        assert listed == {developer_invitation.id, accepted.id, owner_invitation.id}
    elif role is Role.ADMIN:
        listed = {inv["id"] for inv in ok(response)}
        assert listed == {developer_invitation.id, accepted.id}  # owner invitations hidden
    else:
        refused(response, 403, "YOU_ARE_NOT_ALLOWED_TO_LIST_INVITATIONS")


def test_removing_the_inviter_keeps_the_invitation(
    client: TestClient, owner: Actor, invitee: SignedIn, db: Session
) -> None:
    admin = make_actor(db, Role.ADMIN, org=owner.org)
    invitation = make_invitation(db, owner.org, admin.user, email=invitee.user.email)
    ok(post(client, owner, "remove-member", memberIdOrEmail=admin.member.id))
    assert ok(get(client, invitee, "get-invitation", id=invitation.id))["inviterEmail"] == (
        admin.user.email
    )
