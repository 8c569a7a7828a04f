"""Request bodies of the orgs function and the Better Auth wire shapes of its responses.

Field names are the ones Better Auth's organization client sends; unknown fields are refused
(400 VALIDATION_ERROR), as everywhere in Igris. Roles are taken as sent (a string, or Better
Auth's list form) and checked by the service, so that an unknown one gets ROLE_NOT_FOUND.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final

from pydantic import AfterValidator, Field, field_validator

from shared.better_auth import iso, user_summary
from shared.ids import id_pattern
from shared.models import Invitation, Member, Organization, User
from shared.schemas import ApiModel

SLUG_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{1,63}$"  # the organization table's CHECK
ORGANIZATION_ID: Final = id_pattern("organization")
MEMBER_ID: Final = id_pattern("member")
INVITATION_ID: Final = id_pattern("invitation")
USER_ID: Final = id_pattern("user")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _no_nul(value: Any) -> Any:
    """PostgreSQL text and JSONB hold neither U+0000 nor NaN: refuse them as bad input."""
    if _has_nul(value):
        raise ValueError("must not contain NUL characters")
    json.dumps(value, allow_nan=False)  # ValueError for NaN and infinities
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Metadata = Annotated[dict[str, Any], AfterValidator(_no_nul)]
RoleName = Annotated[Text, Field(max_length=64)]
# Better Auth also takes a list of roles; Igris takes one, so a longer list is refused later.
RoleInput = RoleName | Annotated[list[RoleName], Field(max_length=8)]
Name = Annotated[Text, Field(min_length=1, max_length=200)]
Slug = Annotated[str, Field(pattern=SLUG_PATTERN)]
Logo = Annotated[Text, Field(max_length=2048)]


class OrganizationCreate(ApiModel):
    name: Name
    slug: Slug
    logo: Logo | None = None
    metadata: Metadata | None = None
    keep_current_active_organization: bool = False


class CheckSlug(ApiModel):
    slug: Slug


class SetActive(ApiModel):
    """`organizationId: null` clears the active organization; neither field re-reads it."""

    organization_id: str | None = Field(default=None, pattern=ORGANIZATION_ID)
    organization_slug: Slug | None = None


class OrganizationChanges(ApiModel):
    """Only the fields present change; `logo` and `metadata` may be cleared with null."""

    name: Name | None = None
    slug: Slug | None = None
    logo: Logo | None = None
    metadata: Metadata | None = None

    @field_validator("name", "slug")
    @classmethod
    def _not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("must not be null")
        return value


class OrganizationUpdate(ApiModel):
    data: OrganizationChanges
    organization_id: str | None = Field(default=None, pattern=ORGANIZATION_ID)


class OrganizationRef(ApiModel):
    organization_id: str = Field(pattern=ORGANIZATION_ID)


class MemberRoleUpdate(ApiModel):
    member_id: str = Field(pattern=MEMBER_ID)
    role: RoleInput
    organization_id: str | None = Field(default=None, pattern=ORGANIZATION_ID)


class MemberRemove(ApiModel):
    """A value containing `@` is an email (Better Auth's rule), anything else a member id."""

    member_id_or_email: Text = Field(min_length=1, max_length=320)
    organization_id: str | None = Field(default=None, pattern=ORGANIZATION_ID)

    @field_validator("member_id_or_email")
    @classmethod
    def _id_or_email(cls, value: str) -> str:
        if "@" not in value and not re.fullmatch(MEMBER_ID, value):
            raise ValueError("must be a member id (mem_…) or an email")
        return value


class InvitationCreate(ApiModel):
    email: Text = Field(min_length=1, max_length=320)
    role: RoleInput
    organization_id: str | None = Field(default=None, pattern=ORGANIZATION_ID)
    resend: bool = False


class InvitationRef(ApiModel):
    invitation_id: str = Field(pattern=INVITATION_ID)


# --- Response shapes (docs/better-auth-compat.md §6). `metadata` is always an object or null
# (Better Auth returns a JSON string from some routes; Igris never does).


def organization_json(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "slug": org.slug,
        "logo": org.logo,
        "metadata": org.metadata_ or None,
        "createdAt": iso(org.created_at),
    }


def member_json(member: Member, user: User | None = None) -> dict[str, Any]:
    """A member; with `user`, the nested `{id, name, email, image}` Better Auth adds."""
    body: dict[str, Any] = {
        "id": member.id,
        "organizationId": member.organization_id,
        "userId": member.user_id,
        "role": member.role,
        "createdAt": iso(member.created_at),
    }
    if user is not None:
        body["user"] = user_summary(user)
    return body


def invitation_json(invitation: Invitation) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "organizationId": invitation.organization_id,
        "email": invitation.email,
        "role": invitation.role,
        "status": invitation.status,
        "expiresAt": iso(invitation.expires_at),
        "createdAt": iso(invitation.created_at),
        "inviterId": invitation.inviter_id,
    }
