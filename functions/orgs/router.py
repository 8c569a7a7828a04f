"""Routes of the orgs function: Better Auth's organization plugin (`/api/auth/organization/*`).

Bodies and responses follow Better Auth (docs/better-auth-compat.md §6, §8) so that its stock
client works unchanged; where API.md differs (roles, 404 for other tenants' ids, 403 for
refusals) API.md wins. Every route acts for a signed-in session user; the rules live in
functions/orgs/service.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from functions.orgs import service
from functions.orgs.repository import MemberFilter
from functions.orgs.schemas import (
    INVITATION_ID,
    ORGANIZATION_ID,
    SLUG_PATTERN,
    USER_ID,
    CheckSlug,
    InvitationCreate,
    InvitationRef,
    MemberRemove,
    MemberRoleUpdate,
    OrganizationCreate,
    OrganizationRef,
    OrganizationUpdate,
    SetActive,
    Text,
    invitation_json,
    member_json,
    organization_json,
)
from shared.auth import Principal, SignedIn, presented_token
from shared.cookies import set_session_cookie
from shared.db import SessionDep
from shared.errors import BadRequest

router = APIRouter(prefix="/api/auth/organization", tags=["organizations"])

MAX_PAGE: Final = 1000
MAX_OFFSET: Final = 1_000_000_000


def session_user(principal: SignedIn) -> Principal:
    """Organization routes act for a signed-in user; an API key is refused (403)."""
    service.session_id_of(principal)
    return principal


Caller = Annotated[Principal, Depends(session_user)]
OrganizationIdQuery = Annotated[str | None, Query(alias="organizationId", pattern=ORGANIZATION_ID)]
OrganizationSlugQuery = Annotated[str | None, Query(alias="organizationSlug", pattern=SLUG_PATTERN)]
MemberField = Literal["id", "userId", "role", "createdAt"]
FilterOperator = Literal[
    "eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "contains", "starts_with", "ends_with"
]
_SET_OPERATORS: Final = {"in", "not_in"}
_ORDER_OPERATORS: Final = {"eq", "ne", "lt", "lte", "gt", "gte"}


# --- organizations


@router.post("/create")
def create_organization(
    body: OrganizationCreate, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Create an organization; the caller becomes its owner and it becomes active."""
    organization, owner = service.create_organization(
        session,
        principal,
        name=body.name,
        slug=body.slug,
        logo=body.logo,
        metadata=body.metadata,
        keep_current_active=body.keep_current_active_organization,
    )
    return {**organization_json(organization), "members": [member_json(owner)]}


@router.post("/check-slug")
def check_slug(body: CheckSlug, principal: Caller, session: SessionDep) -> dict[str, bool]:
    """Whether a slug is still free (400 ORGANIZATION_SLUG_ALREADY_TAKEN when not)."""
    service.check_slug(session, body.slug)
    return {"status": True}


@router.get("/list")
def list_organizations(principal: Caller, session: SessionDep) -> list[dict[str, Any]]:
    """The organizations the caller is a member of."""
    return [organization_json(org) for org in service.list_organizations(session, principal)]


@router.post("/set-active")
def set_active(
    request: Request, principal: Caller, session: SessionDep, body: SetActive | None = None
) -> JSONResponse:
    """Choose the session's active organization (null clears it); re-sets the cookie."""
    body = body or SetActive()
    change = service.set_active(
        session,
        principal,
        organization_id=body.organization_id,
        slug=body.organization_slug,
        clear="organization_id" in body.model_fields_set and body.organization_id is None,
    )
    organization = change.organization
    response = JSONResponse(organization_json(organization) if organization else None)
    token = presented_token(request)
    if change.reset_cookie and token is not None:
        set_session_cookie(response, token, remember=change.session.remember)
    return response


@router.get("/get-full-organization")
def get_full_organization(
    principal: Caller,
    session: SessionDep,
    organization_id: OrganizationIdQuery = None,
    organization_slug: OrganizationSlugQuery = None,
    members_limit: Annotated[int, Query(alias="membersLimit", ge=1, le=MAX_PAGE)] = (
        service.MEMBERS_LIMIT
    ),
) -> dict[str, Any] | None:
    """The organization with its members and invitations (null when none is active)."""
    full = service.get_full_organization(
        session,
        principal,
        organization_id=organization_id,
        slug=organization_slug,
        members_limit=members_limit,
    )
    if full is None:
        return None
    return {
        **organization_json(full.organization),
        "invitations": [invitation_json(invitation) for invitation in full.invitations],
        "members": [member_json(member, user) for member, user in full.members],
    }


@router.post("/update")
def update_organization(
    body: OrganizationUpdate, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Change the organization's name, slug, logo or metadata (owners and admins)."""
    organization = service.update_organization(
        session,
        principal,
        organization_id=body.organization_id,
        changes=body.data.model_dump(exclude_unset=True),
    )
    return organization_json(organization)


@router.post("/delete")
def delete_organization(
    body: OrganizationRef, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Delete the organization with its members, invitations and keys (owners only)."""
    return organization_json(service.delete_organization(session, principal, body.organization_id))


# --- members


def member_filter(
    field: MemberField | None, operator: FilterOperator, value: str | None
) -> MemberFilter | None:
    """Better Auth's `filterField/filterOperator/filterValue` (lists comma-separated)."""
    if field is None:
        return None
    if value is None:
        raise BadRequest("[query.filterValue] Required with filterField", code="validation_error")
    parsed: Any = (
        [item.strip() for item in value.split(",")] if operator in _SET_OPERATORS else value
    )
    if field == "createdAt":
        if operator not in _ORDER_OPERATORS | _SET_OPERATORS:
            raise BadRequest(
                f"[query.filterOperator] {operator} does not apply to createdAt",
                code="validation_error",
            )
        try:
            moments = [_moment(item) for item in ([parsed] if isinstance(parsed, str) else parsed)]
        except ValueError:
            raise BadRequest(
                "[query.filterValue] Invalid ISO 8601 time", code="validation_error"
            ) from None
        parsed = moments[0] if isinstance(parsed, str) else moments
    return MemberFilter(field=field, operator=operator, value=parsed)


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/list-members")
def list_members(
    *,
    principal: Caller,
    session: SessionDep,
    organization_id: OrganizationIdQuery = None,
    organization_slug: OrganizationSlugQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = service.MEMBERS_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    sort_by: Annotated[MemberField, Query(alias="sortBy")] = "createdAt",
    sort_direction: Annotated[Literal["asc", "desc"], Query(alias="sortDirection")] = "asc",
    filter_field: Annotated[MemberField | None, Query(alias="filterField")] = None,
    filter_operator: Annotated[FilterOperator, Query(alias="filterOperator")] = "eq",
    filter_value: Annotated[Text | None, Query(alias="filterValue", max_length=2000)] = None,
) -> dict[str, Any]:
    """A page of the organization's members with their users, and the total count."""
    members, total = service.list_members(
        session,
        principal,
        organization_id=organization_id,
        slug=organization_slug,
        member_filter=member_filter(filter_field, filter_operator, filter_value),
        sort_by=sort_by,
        descending=sort_direction == "desc",
        limit=limit,
        offset=offset,
    )
    return {"members": [member_json(member, user) for member, user in members], "total": total}


@router.post("/update-member-role")
def update_member_role(
    body: MemberRoleUpdate, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Change a member's role (admins: not owners; the last owner cannot be demoted)."""
    member = service.update_member_role(
        session,
        principal,
        organization_id=body.organization_id,
        member_id=body.member_id,
        role=body.role,
    )
    return member_json(member)


@router.post("/remove-member")
def remove_member(body: MemberRemove, principal: Caller, session: SessionDep) -> dict[str, Any]:
    """Remove a member by id or email (admins: not owners; never the last owner)."""
    member, user = service.remove_member(
        session,
        principal,
        organization_id=body.organization_id,
        member_id_or_email=body.member_id_or_email,
    )
    return {"member": member_json(member, user)}


@router.post("/leave")
def leave(body: OrganizationRef, principal: Caller, session: SessionDep) -> dict[str, Any]:
    """Leave an organization (the last owner cannot)."""
    member, user = service.leave(session, principal, body.organization_id)
    return member_json(member, user)


@router.get("/get-active-member")
def get_active_member(principal: Caller, session: SessionDep) -> dict[str, Any]:
    """The caller's membership of the active organization."""
    member, user = service.get_active_member(session, principal)
    return member_json(member, user)


@router.get("/get-active-member-role")
def get_active_member_role(
    principal: Caller,
    session: SessionDep,
    organization_id: OrganizationIdQuery = None,
    organization_slug: OrganizationSlugQuery = None,
    user_id: Annotated[str | None, Query(alias="userId", pattern=USER_ID)] = None,
) -> dict[str, str]:
    """The caller's role (or a fellow member's) in the active or named organization."""
    role = service.get_member_role(
        session,
        principal,
        organization_id=organization_id,
        slug=organization_slug,
        user_id=user_id,
    )
    return {"role": role}


# --- invitations


@router.post("/invite-member")
def invite_member(body: InvitationCreate, principal: Caller, session: SessionDep) -> dict[str, Any]:
    """Invite an email with a role; the invitation expires in 48 hours."""
    invitation = service.invite_member(
        session,
        principal,
        organization_id=body.organization_id,
        email=body.email,
        role=body.role,
        resend=body.resend,
    )
    return invitation_json(invitation)


@router.post("/accept-invitation")
def accept_invitation(
    body: InvitationRef, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Accept an invitation addressed to the caller; its organization becomes active."""
    invitation, member = service.accept_invitation(session, principal, body.invitation_id)
    return {"invitation": invitation_json(invitation), "member": member_json(member)}


@router.post("/reject-invitation")
def reject_invitation(
    body: InvitationRef, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Decline an invitation addressed to the caller."""
    invitation = service.reject_invitation(session, principal, body.invitation_id)
    return {"invitation": invitation_json(invitation), "member": None}


@router.post("/cancel-invitation")
def cancel_invitation(
    body: InvitationRef, principal: Caller, session: SessionDep
) -> dict[str, Any]:
    """Withdraw a pending invitation (owners and admins; owner invitations: owners)."""
    return invitation_json(service.cancel_invitation(session, principal, body.invitation_id))


@router.get("/list-invitations")
def list_invitations(
    principal: Caller, session: SessionDep, organization_id: OrganizationIdQuery = None
) -> list[dict[str, Any]]:
    """Every invitation of the organization, all statuses (owners and admins)."""
    invitations = service.list_invitations(session, principal, organization_id)
    return [invitation_json(invitation) for invitation in invitations]


@router.get("/get-invitation")
def get_invitation(
    principal: Caller,
    session: SessionDep,
    invitation_id: Annotated[str, Query(alias="id", pattern=INVITATION_ID)],
) -> dict[str, Any]:
    """An invitation addressed to the caller, with the organization's name and inviter."""
    details = service.get_invitation(session, principal, invitation_id)
    return {
        **invitation_json(details.invitation),
        "organizationName": details.organization.name,
        "organizationSlug": details.organization.slug,
        "inviterEmail": details.inviter.email if details.inviter else None,
    }
