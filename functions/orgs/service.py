"""Organizations, members, roles and invitations: Better Auth's organization plugin with
Igris's roles and rules (API.md §1, §2). Raises domain errors, writes audit events, never
commits.

Tenant isolation: an organization is only ever reached through the caller's membership, and
a member or invitation only through its organization, so another tenant's id answers exactly
like an unknown one (404). Membership changes take the organization row's lock first and
re-read what they check afterwards, so concurrent changes cannot leave an organization
without an owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import email_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from functions.orgs import repository
from functions.orgs.repository import MemberFilter
from shared.audit import record_event
from shared.auth import Principal
from shared.errors import BadRequest, Forbidden, NotFound
from shared.models import Invitation, Member, Organization, User
from shared.models import Session as UserSession
from shared.models.base import utcnow
from shared.permissions import Permission, Role, has_permission

INVITATION_TTL: Final = timedelta(hours=48)
PENDING_INVITATION_LIMIT: Final = 100  # Better Auth's default invitationLimit
MEMBERS_LIMIT: Final = 100  # Better Auth's default membershipLimit, the default page size


class OrganizationNotFound(NotFound):
    code = "organization_not_found"
    default_message = "Organization not found"


class MemberNotFound(NotFound):
    code = "member_not_found"
    default_message = "Member not found"


class InvitationNotFound(NotFound):
    code = "invitation_not_found"
    default_message = "Invitation not found"


class InvitationNotPending(BadRequest):
    """Better Auth's answer for an invitation that expired or was already answered."""

    code = "invitation_not_found"
    default_message = "Invitation not found, expired or already answered"


class NoActiveOrganization(BadRequest):
    code = "no_active_organization"
    default_message = "No active organization"


class OrganizationAlreadyExists(BadRequest):
    code = "organization_already_exists"
    default_message = "Organization already exists"


class SlugTaken(BadRequest):
    code = "organization_slug_already_taken"
    default_message = "Organization slug already taken"


class RoleNotFound(BadRequest):
    code = "role_not_found"
    default_message = "Role not found. Roles are: owner, admin, developer, ciso, auditor."


class InvalidEmail(BadRequest):
    code = "invalid_email"
    default_message = "Invalid email"


class UserAlreadyMember(BadRequest):
    code = "user_is_already_a_member_of_this_organization"
    default_message = "User is already a member of this organization"


class UserAlreadyInvited(BadRequest):
    code = "user_is_already_invited_to_this_organization"
    default_message = "User is already invited to this organization"


class OnlyOwner(BadRequest):
    """The last owner leaving or being removed."""

    code = "you_cannot_leave_the_organization_as_the_only_owner"
    default_message = "You cannot leave the organization as the only owner"


class NoOwnerLeft(BadRequest):
    """The last owner being demoted."""

    code = "you_cannot_leave_the_organization_without_an_owner"
    default_message = "You cannot leave the organization without an owner"


class NotRecipient(Forbidden):
    code = "you_are_not_the_recipient_of_the_invitation"
    default_message = "You are not the recipient of the invitation"


class InvitationLimitReached(Forbidden):
    code = "invitation_limit_reached"
    default_message = "Invitation limit reached"


class SessionRequired(Forbidden):
    code = "session_required"
    default_message = "Organization routes need a signed-in session, not an API key."


# Better Auth's refusals: code → message.
NOT_ALLOWED: Final = {
    "you_are_not_allowed_to_access_this_organization": (
        "You are not allowed to access this organization"
    ),
    "you_are_not_allowed_to_update_this_organization": (
        "You are not allowed to update this organization"
    ),
    "you_are_not_allowed_to_delete_this_organization": (
        "You are not allowed to delete this organization"
    ),
    "you_are_not_allowed_to_update_this_member": "You are not allowed to update this member",
    "you_are_not_allowed_to_delete_this_member": "You are not allowed to delete this member",
    "you_are_not_allowed_to_invite_users_to_this_organization": (
        "You are not allowed to invite users to this organization"
    ),
    "you_are_not_allowed_to_invite_user_with_this_role": (
        "You are not allowed to invite a user with this role"
    ),
    "you_are_not_allowed_to_cancel_this_invitation": (
        "You are not allowed to cancel this invitation"
    ),
    "you_are_not_allowed_to_list_invitations": (
        "You are not allowed to list invitations for this organization"
    ),
}


# --- helpers


def _can(member: Member, permission: Permission) -> bool:
    return has_permission(Role(member.role), permission)


def _require(member: Member, permission: Permission, refusal: str) -> None:
    """403 with Better Auth's code `refusal` unless the member's role holds `permission`."""
    if not _can(member, permission):
        raise Forbidden(NOT_ALLOWED[refusal], code=refusal)


def parse_role(value: str | list[str]) -> Role:
    """One Igris role. Better Auth's list and comma forms name several: not supported."""
    names = [value] if isinstance(value, str) else value
    if len(names) != 1 or "," in names[0]:
        raise RoleNotFound("Only one role per member is supported.")
    try:
        return Role(names[0].strip())
    except ValueError:
        raise RoleNotFound() from None


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    try:
        email_validator.validate_email(email, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise InvalidEmail() from None
    return email


def session_id_of(principal: Principal) -> str:
    if principal.kind != "user" or principal.session_id is None:
        raise SessionRequired()
    return principal.session_id


def _audit(
    session: Session, organization_id: str, principal: Principal, operation: str, **metadata: Any
) -> None:
    record_event(
        session,
        organization_id=organization_id,
        source="api",
        type="admin",
        action="log",
        actor_type="user",
        actor_id=principal.user_id,
        operation=operation,
        metadata=metadata,
    )


def _membership(
    session: Session,
    principal: Principal,
    organization_id: str | None = None,
    slug: str | None = None,
) -> tuple[Organization, Member]:
    """The organization named by id or slug (default: the active one) and the caller's
    membership of it; 404 whether it does not exist or the caller is not a member."""
    if organization_id is None and slug is None:
        organization_id = principal.organization_id
        if organization_id is None:
            raise NoActiveOrganization()
    found = repository.membership(
        session, principal.user_id, organization_id=organization_id, slug=slug
    )
    if found is None:
        raise OrganizationNotFound()
    return found


def _locked_membership(
    session: Session, principal: Principal, organization_id: str | None
) -> tuple[Organization, Member]:
    """As `_membership`, then the organization's lock (held until the transaction ends), then
    the organization and the caller's membership re-read: another change may have committed
    while this one waited. Every change to members, invitations or the organization goes
    through here or `_locked_invitation`, so they lock in one order and see each other's
    outcome."""
    organization, _ = _membership(session, principal, organization_id)
    repository.lock_organization(session, organization.id)
    fresh = repository.membership(session, principal.user_id, organization_id=organization.id)
    if fresh is None:
        raise OrganizationNotFound()
    return fresh


def _visible_invitation(session: Session, user: User, invitation_id: str) -> Invitation:
    """An invitation the caller may know about: addressed to them, or of an organization
    they belong to. Anyone else's is indistinguishable from an unknown id."""
    invitation = repository.get_invitation(session, invitation_id)
    if invitation is None:
        raise InvitationNotFound()
    if _is_recipient(invitation, user):
        return invitation
    if repository.member_of(session, invitation.organization_id, user.id) is None:
        raise InvitationNotFound()
    return invitation


def _locked_invitation(session: Session, invitation: Invitation) -> Invitation:
    """The invitation re-read under its organization's lock, then its own."""
    if not repository.lock_organization(session, invitation.organization_id):
        raise InvitationNotFound()
    locked = repository.get_invitation(session, invitation.id, lock=True)
    if locked is None:
        raise InvitationNotFound()
    return locked


def _is_recipient(invitation: Invitation, user: User) -> bool:
    return invitation.email.lower() == user.email.lower()


def _is_live(invitation: Invitation) -> bool:
    return invitation.status == "pending" and invitation.expires_at > utcnow()


def _visible_roles(member: Member) -> list[str] | None:
    """Invitations for the owner role are shown only to members who may grant it."""
    if _can(member, Permission.MEMBERS_MANAGE_OWNERS):
        return None
    return [role.value for role in Role if role is not Role.OWNER]


def _user(session: Session, user_id: str) -> User:
    user = repository.get_user(session, user_id)
    if user is None:  # the guard resolved this user in this very transaction
        raise OrganizationNotFound()
    return user


# --- organizations


def create_organization(
    session: Session,
    principal: Principal,
    *,
    name: str,
    slug: str,
    logo: str | None,
    metadata: dict[str, Any] | None,
    keep_current_active: bool,
) -> tuple[Organization, Member]:
    """A new organization owned by the caller, made the session's active one."""
    session_id = session_id_of(principal)
    if repository.slug_taken(session, slug):
        raise OrganizationAlreadyExists()
    organization = Organization(name=name, slug=slug, logo=logo, metadata_=metadata or {})
    try:
        with session.begin_nested():  # a concurrent create with the same slug loses here
            repository.add(session, organization)
    except IntegrityError:
        raise OrganizationAlreadyExists() from None
    owner = Member(
        organization_id=organization.id, user_id=principal.user_id, role=Role.OWNER.value
    )
    repository.add(session, owner)
    if not keep_current_active:
        repository.set_active_organization(session, session_id, organization.id)
    _audit(session, organization.id, principal, "organization.created", name=name, slug=slug)
    return organization, owner


def check_slug(session: Session, slug: str) -> None:
    if repository.slug_taken(session, slug):
        raise SlugTaken()


def list_organizations(session: Session, principal: Principal) -> list[Organization]:
    return repository.organizations_of(session, principal.user_id)


@dataclass(frozen=True)
class ActiveChange:
    """The outcome of set-active: the organization (or None) and whether Better Auth would
    re-set the session cookie."""

    organization: Organization | None
    session: UserSession
    reset_cookie: bool


def set_active(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    slug: str | None,
    clear: bool,
) -> ActiveChange:
    """Make an organization the session's active one; `clear` unsets it; neither an id nor a
    slug re-selects the current one (or answers None when there is none)."""
    row = repository.get_session_row(session, session_id_of(principal))
    if row is None:
        raise SessionRequired()
    if clear:
        if row.active_organization_id is None:
            return ActiveChange(None, row, reset_cookie=False)
        repository.set_active_organization(session, row.id, None)
        return ActiveChange(None, row, reset_cookie=True)
    if organization_id is None and slug is None:
        if principal.organization_id is None:
            return ActiveChange(None, row, reset_cookie=False)
        organization_id = principal.organization_id
    organization, _ = _membership(
        session, principal, organization_id, slug if organization_id is None else None
    )
    repository.set_active_organization(session, row.id, organization.id)
    return ActiveChange(organization, row, reset_cookie=True)


@dataclass(frozen=True)
class FullOrganization:
    organization: Organization
    members: list[tuple[Member, User]]
    invitations: list[Invitation]


def get_full_organization(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    slug: str | None,
    members_limit: int,
) -> FullOrganization | None:
    """The organization with its members and (for those who manage them) invitations; None
    when none is named and none is active."""
    if organization_id is None and slug is None and principal.organization_id is None:
        return None
    organization, caller = _membership(session, principal, None if slug else organization_id, slug)
    _require(
        caller, Permission.ORGANIZATION_READ, "you_are_not_allowed_to_access_this_organization"
    )
    members, _ = repository.list_members(session, organization.id, limit=members_limit)
    invitations: list[Invitation] = []
    if _can(caller, Permission.MEMBERS_MANAGE):
        invitations = repository.list_invitations(
            session, organization.id, roles=_visible_roles(caller)
        )
    return FullOrganization(organization, members, invitations)


def update_organization(
    session: Session, principal: Principal, *, organization_id: str | None, changes: dict[str, Any]
) -> Organization:
    """Change name, slug, logo or metadata (owners and admins)."""
    organization, caller = _locked_membership(session, principal, organization_id)
    _require(
        caller, Permission.ORGANIZATION_UPDATE, "you_are_not_allowed_to_update_this_organization"
    )
    changes = _changes(changes)
    slug = changes.get("slug")
    if slug is not None and slug != organization.slug and repository.slug_taken(session, slug):
        raise SlugTaken()
    changed = sorted(key for key, value in changes.items() if _current(organization, key) != value)
    if not changed:
        return organization
    for key in changed:
        if key == "metadata":
            organization.metadata_ = changes[key] or {}
        else:
            setattr(organization, key, changes[key])
    organization.updated_at = utcnow()
    try:
        with session.begin_nested():
            repository.add(session, organization)
    except IntegrityError:
        raise SlugTaken() from None
    _audit(session, organization.id, principal, "organization.updated", fields=changed)
    return organization


def _current(organization: Organization, key: str) -> Any:
    if key == "metadata":
        return organization.metadata_ or None
    return getattr(organization, key)


def _changes(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: (v or None) if k == "metadata" else v for k, v in changes.items()}


def delete_organization(
    session: Session, principal: Principal, organization_id: str
) -> Organization:
    """Delete an organization (owners only) with its members, invitations and API keys; its
    audit trail stays."""
    organization, caller = _locked_membership(session, principal, organization_id)
    _require(
        caller, Permission.ORGANIZATION_DELETE, "you_are_not_allowed_to_delete_this_organization"
    )
    _audit(
        session,
        organization.id,
        principal,
        "organization.deleted",
        name=organization.name,
        slug=organization.slug,
    )
    repository.delete_organization(session, organization.id)
    return organization


# --- members


def list_members(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    slug: str | None,
    member_filter: MemberFilter | None,
    sort_by: str,
    descending: bool,
    limit: int,
    offset: int,
) -> tuple[list[tuple[Member, User]], int]:
    organization, caller = _membership(session, principal, None if slug else organization_id, slug)
    _require(
        caller, Permission.ORGANIZATION_READ, "you_are_not_allowed_to_access_this_organization"
    )
    return repository.list_members(
        session,
        organization.id,
        member_filter=member_filter,
        sort_by=sort_by,
        descending=descending,
        limit=limit,
        offset=offset,
    )


def get_active_member(session: Session, principal: Principal) -> tuple[Member, User]:
    if principal.organization_id is None:
        raise NoActiveOrganization()
    _, member = _membership(session, principal, principal.organization_id)
    return member, _user(session, principal.user_id)


def get_member_role(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    slug: str | None,
    user_id: str | None,
) -> str:
    """The caller's role in an organization, or (for any member) another member's."""
    organization, caller = _membership(session, principal, None if slug else organization_id, slug)
    if user_id is None or user_id == principal.user_id:
        return caller.role
    other = repository.member_of(session, organization.id, user_id)
    if other is None:
        raise MemberNotFound()
    return other.role


def update_member_role(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    member_id: str,
    role: str | list[str],
) -> Member:
    """Change a member's role: admins manage everyone but owners, owners everyone; the last
    owner cannot be demoted."""
    new_role = parse_role(role)
    organization, caller = _locked_membership(session, principal, organization_id)
    target = repository.get_member(session, organization.id, member_id)
    if target is None:
        raise MemberNotFound()
    _require(caller, Permission.MEMBERS_MANAGE, "you_are_not_allowed_to_update_this_member")
    if Role.OWNER in (target.role, new_role):
        _require(
            caller, Permission.MEMBERS_MANAGE_OWNERS, "you_are_not_allowed_to_update_this_member"
        )
    old_role = target.role
    if old_role == new_role:
        return target
    if old_role == Role.OWNER and repository.count_owners(session, organization.id) <= 1:
        raise NoOwnerLeft()
    target.role = new_role.value
    repository.add(session, target)
    _audit(
        session,
        organization.id,
        principal,
        "member.role_changed",
        memberId=target.id,
        userId=target.user_id,
        oldRole=old_role,
        newRole=new_role.value,
    )
    return target


def remove_member(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    member_id_or_email: str,
) -> tuple[Member, User | None]:
    """Remove a member by id or email; the user is returned when named by email (as Better
    Auth does). The last owner cannot be removed."""
    organization, caller = _locked_membership(session, principal, organization_id)
    user: User | None = None
    if "@" in member_id_or_email:
        found = repository.member_by_email(session, organization.id, member_id_or_email)
        target, user = found if found else (None, None)
    else:
        target = repository.get_member(session, organization.id, member_id_or_email)
    if target is None:
        raise MemberNotFound()
    _require(caller, Permission.MEMBERS_MANAGE, "you_are_not_allowed_to_delete_this_member")
    if target.role == Role.OWNER:
        _require(
            caller, Permission.MEMBERS_MANAGE_OWNERS, "you_are_not_allowed_to_delete_this_member"
        )
        if repository.count_owners(session, organization.id) <= 1:
            raise OnlyOwner()
    repository.delete_member(session, target)
    repository.clear_active_organization(session, target.user_id, organization.id)
    _audit(
        session,
        organization.id,
        principal,
        "member.removed",
        memberId=target.id,
        userId=target.user_id,
        role=target.role,
    )
    return target, user


def leave(session: Session, principal: Principal, organization_id: str) -> tuple[Member, User]:
    """Leave an organization; the last owner cannot."""
    organization, caller = _locked_membership(session, principal, organization_id)
    if caller.role == Role.OWNER and repository.count_owners(session, organization.id) <= 1:
        raise OnlyOwner()
    repository.delete_member(session, caller)
    repository.clear_active_organization(session, principal.user_id, organization.id)
    _audit(session, organization.id, principal, "member.left", memberId=caller.id, role=caller.role)
    return caller, _user(session, principal.user_id)


# --- invitations


def invite_member(
    session: Session,
    principal: Principal,
    *,
    organization_id: str | None,
    email: str,
    role: str | list[str],
    resend: bool,
) -> Invitation:
    """Invite an email with a role for 48 hours; `resend` extends a pending invitation."""
    new_role = parse_role(role)
    email = normalize_email(email)
    # The lock serializes invitations to one organization: no duplicate pending ones.
    organization, caller = _locked_membership(session, principal, organization_id)
    _require(
        caller,
        Permission.MEMBERS_MANAGE,
        "you_are_not_allowed_to_invite_users_to_this_organization",
    )
    if new_role == Role.OWNER:
        _require(
            caller,
            Permission.MEMBERS_MANAGE_OWNERS,
            "you_are_not_allowed_to_invite_user_with_this_role",
        )
    if repository.member_by_email(session, organization.id, email) is not None:
        raise UserAlreadyMember()
    now = utcnow()
    existing = repository.pending_invitation(session, organization.id, email, now)
    if existing is not None:
        if not resend:
            raise UserAlreadyInvited()
        if existing.role == Role.OWNER:
            _require(
                caller,
                Permission.MEMBERS_MANAGE_OWNERS,
                "you_are_not_allowed_to_invite_user_with_this_role",
            )
        existing.expires_at = now + INVITATION_TTL
        repository.add(session, existing)
        _audit(
            session,
            organization.id,
            principal,
            "invitation.resent",
            invitationId=existing.id,
            email=email,
            role=existing.role,
        )
        return existing
    if repository.count_pending_invitations(session, organization.id, now) >= (
        PENDING_INVITATION_LIMIT
    ):
        raise InvitationLimitReached()
    invitation = Invitation(
        organization_id=organization.id,
        email=email,
        role=new_role.value,
        status="pending",
        inviter_id=principal.user_id,
        expires_at=now + INVITATION_TTL,
        created_at=now,
    )
    repository.add(session, invitation)
    _audit(
        session,
        organization.id,
        principal,
        "invitation.created",
        invitationId=invitation.id,
        email=email,
        role=new_role.value,
    )
    return invitation


def _answerable(session: Session, principal: Principal, invitation_id: str) -> Invitation:
    """The caller's own live invitation, locked: answered once, whatever the concurrency."""
    user = _user(session, principal.user_id)
    visible = _visible_invitation(session, user, invitation_id)
    invitation = _locked_invitation(session, visible)
    if not _is_recipient(invitation, user):
        raise NotRecipient()
    if not _is_live(invitation):
        raise InvitationNotPending()
    return invitation


def accept_invitation(
    session: Session, principal: Principal, invitation_id: str
) -> tuple[Invitation, Member]:
    """Join the organization with the invited role and make it the session's active one."""
    session_id = session_id_of(principal)
    invitation = _answerable(session, principal, invitation_id)
    if repository.member_of(session, invitation.organization_id, principal.user_id) is not None:
        raise UserAlreadyMember()
    member = Member(
        organization_id=invitation.organization_id,
        user_id=principal.user_id,
        role=invitation.role,
    )
    try:
        with session.begin_nested():  # joined by other means meanwhile
            repository.add(session, member)
    except IntegrityError:
        raise UserAlreadyMember() from None
    invitation.status = "accepted"
    repository.add(session, invitation)
    repository.set_active_organization(session, session_id, invitation.organization_id)
    _audit(
        session,
        invitation.organization_id,
        principal,
        "invitation.accepted",
        invitationId=invitation.id,
        email=invitation.email,
        role=invitation.role,
    )
    _audit(
        session,
        invitation.organization_id,
        principal,
        "member.added",
        memberId=member.id,
        userId=member.user_id,
        role=member.role,
        invitationId=invitation.id,
    )
    return invitation, member


def reject_invitation(session: Session, principal: Principal, invitation_id: str) -> Invitation:
    invitation = _answerable(session, principal, invitation_id)
    invitation.status = "rejected"
    repository.add(session, invitation)
    _audit(
        session,
        invitation.organization_id,
        principal,
        "invitation.rejected",
        invitationId=invitation.id,
        email=invitation.email,
        role=invitation.role,
    )
    return invitation


def cancel_invitation(session: Session, principal: Principal, invitation_id: str) -> Invitation:
    """Withdraw a pending invitation (those who manage members; owner invitations: owners)."""
    invitation = repository.get_invitation(session, invitation_id)
    caller = (
        repository.member_of(session, invitation.organization_id, principal.user_id)
        if invitation
        else None
    )
    if invitation is None or caller is None:
        raise InvitationNotFound()
    _require(caller, Permission.MEMBERS_MANAGE, "you_are_not_allowed_to_cancel_this_invitation")
    if invitation.role == Role.OWNER:
        _require(
            caller,
            Permission.MEMBERS_MANAGE_OWNERS,
            "you_are_not_allowed_to_cancel_this_invitation",
        )
    invitation = _locked_invitation(session, invitation)
    if invitation.status != "pending":
        raise InvitationNotPending()
    invitation.status = "canceled"
    repository.add(session, invitation)
    _audit(
        session,
        invitation.organization_id,
        principal,
        "invitation.canceled",
        invitationId=invitation.id,
        email=invitation.email,
        role=invitation.role,
    )
    return invitation


def list_invitations(
    session: Session, principal: Principal, organization_id: str | None
) -> list[Invitation]:
    organization, caller = _membership(session, principal, organization_id)
    _require(caller, Permission.MEMBERS_MANAGE, "you_are_not_allowed_to_list_invitations")
    return repository.list_invitations(session, organization.id, roles=_visible_roles(caller))


@dataclass(frozen=True)
class InvitationDetails:
    invitation: Invitation
    organization: Organization
    inviter: User | None


def get_invitation(session: Session, principal: Principal, invitation_id: str) -> InvitationDetails:
    """The caller's own live invitation, with what the acceptance page shows."""
    user = _user(session, principal.user_id)
    invitation = _visible_invitation(session, user, invitation_id)
    if not _is_recipient(invitation, user):
        raise NotRecipient()
    if not _is_live(invitation):
        raise InvitationNotPending()
    organization = repository.get_organization(session, invitation.organization_id)
    if organization is None:
        raise InvitationNotFound()
    return InvitationDetails(
        invitation, organization, repository.get_user(session, invitation.inviter_id)
    )
