"""Every query of the orgs function. Reads of an organization's members and invitations always
take the organization id; an organization is reached only through the caller's membership."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlmodel import Session, col

from shared.models import Invitation, Member, Organization, User
from shared.models import Session as UserSession

# Reads that must see what other transactions committed since this session first loaded the
# row (after a lock, for instance) bypass the identity map's cached attributes.
FRESH: Final = {"populate_existing": True}


def add(session: Session, row: Any) -> None:
    session.add(row)
    session.flush()


def membership(
    session: Session,
    user_id: str,
    *,
    organization_id: str | None = None,
    slug: str | None = None,
) -> tuple[Organization, Member] | None:
    """The organization (by id or slug) and the user's membership of it, or None when the
    organization does not exist or the user is not a member: callers cannot tell the two
    apart."""
    query = (
        select(Organization, Member)
        .join(Member, col(Member.organization_id) == col(Organization.id))
        .where(col(Member.user_id) == user_id)
        .execution_options(**FRESH)
    )
    if organization_id is not None:
        query = query.where(col(Organization.id) == organization_id)
    if slug is not None:
        query = query.where(col(Organization.slug) == slug)
    row = session.execute(query).first()
    return (row[0], row[1]) if row else None


def get_organization(session: Session, organization_id: str) -> Organization | None:
    return session.get(Organization, organization_id)


def lock_organization(session: Session, organization_id: str) -> bool:
    """Take the organization row's lock (held until the transaction ends); False when the
    organization is gone. Every change to an organization's members, invitations or settings
    takes this lock first, so that they all lock in one order (no deadlocks) and run one
    after the other."""
    query = select(col(Organization.id)).where(col(Organization.id) == organization_id)
    return session.scalars(query.with_for_update()).first() is not None


def organizations_of(session: Session, user_id: str) -> list[Organization]:
    query = (
        select(Organization)
        .join(Member, col(Member.organization_id) == col(Organization.id))
        .where(col(Member.user_id) == user_id)
        .order_by(col(Organization.created_at), col(Organization.id))
    )
    return list(session.scalars(query))


def slug_taken(session: Session, slug: str) -> bool:
    query = select(col(Organization.id)).where(col(Organization.slug) == slug)
    return session.scalars(query).first() is not None


def delete_organization(session: Session, organization_id: str) -> None:
    """Members, invitations, API keys and every governed object go with it (FK cascades);
    sessions that had it active lose it (SET NULL). Audit events have no FK and stay."""
    session.execute(delete(Organization).where(col(Organization.id) == organization_id))


def member_of(session: Session, organization_id: str, user_id: str) -> Member | None:
    query = (
        select(Member)
        .where(col(Member.organization_id) == organization_id, col(Member.user_id) == user_id)
        .execution_options(**FRESH)
    )
    return session.scalars(query).first()


def get_member(session: Session, organization_id: str, member_id: str) -> Member | None:
    query = (
        select(Member)
        .where(col(Member.organization_id) == organization_id, col(Member.id) == member_id)
        .execution_options(**FRESH)
    )
    return session.scalars(query).first()


def member_by_email(
    session: Session, organization_id: str, email: str
) -> tuple[Member, User] | None:
    query = (
        select(Member, User)
        .join(User, col(User.id) == col(Member.user_id))
        .where(
            col(Member.organization_id) == organization_id,
            func.lower(col(User.email)) == email.lower(),
        )
        .execution_options(**FRESH)
    )
    row = session.execute(query).first()
    return (row[0], row[1]) if row else None


def count_owners(session: Session, organization_id: str) -> int:
    query = select(func.count()).where(
        col(Member.organization_id) == organization_id, col(Member.role) == "owner"
    )
    return int(session.scalar(query) or 0)


def delete_member(session: Session, member: Member) -> None:
    session.execute(delete(Member).where(col(Member.id) == member.id))


@dataclass(frozen=True)
class MemberFilter:
    """A list-members filter: a member column, a Better Auth operator and its value(s)."""

    field: str
    operator: str
    value: Any


_MEMBER_COLUMNS: Final = {
    "id": Member.id,
    "userId": Member.user_id,
    "role": Member.role,
    "createdAt": Member.created_at,
}


def _condition(member_filter: MemberFilter) -> ColumnElement[bool]:
    column: Any = col(_MEMBER_COLUMNS[member_filter.field])
    value = member_filter.value
    conditions: dict[str, Any] = {
        "eq": lambda: column == value,
        "ne": lambda: column != value,
        "lt": lambda: column < value,
        "lte": lambda: column <= value,
        "gt": lambda: column > value,
        "gte": lambda: column >= value,
        "in": lambda: column.in_(value),
        "not_in": lambda: column.not_in(value),
        "contains": lambda: column.contains(value, autoescape=True),
        "starts_with": lambda: column.startswith(value, autoescape=True),
        "ends_with": lambda: column.endswith(value, autoescape=True),
    }
    condition: ColumnElement[bool] = conditions[member_filter.operator]()
    return condition


def list_members(
    session: Session,
    organization_id: str,
    *,
    member_filter: MemberFilter | None = None,
    sort_by: str = "createdAt",
    descending: bool = False,
    limit: int,
    offset: int = 0,
) -> tuple[list[tuple[Member, User]], int]:
    """A page of members with their users, and how many match the filter in all."""
    where: list[ColumnElement[bool]] = [col(Member.organization_id) == organization_id]
    if member_filter is not None:
        where.append(_condition(member_filter))
    sort_column: Any = col(_MEMBER_COLUMNS[sort_by])
    id_column = col(Member.id)
    order = (sort_column.desc(), id_column.desc()) if descending else (sort_column, id_column)
    query = (
        select(Member, User)
        .join(User, col(User.id) == col(Member.user_id))
        .where(*where)
        .order_by(*order)
        .limit(limit)
        .offset(offset)
    )
    rows = [(row[0], row[1]) for row in session.execute(query)]
    total = session.scalar(select(func.count()).select_from(Member).where(*where))
    return rows, int(total or 0)


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def get_invitation(
    session: Session, invitation_id: str, *, lock: bool = False
) -> Invitation | None:
    """Any organization's invitation by id: the service decides who may see it."""
    query = select(Invitation).where(col(Invitation.id) == invitation_id).execution_options(**FRESH)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def pending_invitation(
    session: Session, organization_id: str, email: str, now: datetime
) -> Invitation | None:
    """The live (pending, unexpired) invitation of `email` to the organization, if any."""
    query = (
        select(Invitation)
        .where(
            col(Invitation.organization_id) == organization_id,
            func.lower(col(Invitation.email)) == email.lower(),
            col(Invitation.status) == "pending",
            col(Invitation.expires_at) > now,
        )
        .order_by(col(Invitation.created_at).desc())
        .execution_options(**FRESH)
    )
    return session.scalars(query).first()


def count_pending_invitations(session: Session, organization_id: str, now: datetime) -> int:
    query = select(func.count()).where(
        col(Invitation.organization_id) == organization_id,
        col(Invitation.status) == "pending",
        col(Invitation.expires_at) > now,
    )
    return int(session.scalar(query) or 0)


def list_invitations(
    session: Session, organization_id: str, *, roles: Sequence[str] | None = None
) -> list[Invitation]:
    """Every invitation of the organization, all statuses, newest first (optionally only
    those for the given roles)."""
    query = select(Invitation).where(col(Invitation.organization_id) == organization_id)
    if roles is not None:
        query = query.where(col(Invitation.role).in_(roles))
    query = query.order_by(col(Invitation.created_at).desc(), col(Invitation.id).desc())
    return list(session.scalars(query))


def get_session_row(session: Session, session_id: str) -> UserSession | None:
    query = select(UserSession).where(col(UserSession.id) == session_id).execution_options(**FRESH)
    return session.scalars(query).first()


def set_active_organization(session: Session, session_id: str, organization_id: str | None) -> None:
    """The session's active organization (the database only; the cookie is the router's)."""
    session.execute(
        update(UserSession)
        .where(col(UserSession.id) == session_id)
        .values(active_organization_id=organization_id)
        .execution_options(synchronize_session=False)
    )


def clear_active_organization(session: Session, user_id: str, organization_id: str) -> None:
    """Sessions of a user who left an organization stop naming it as their active one."""
    session.execute(
        update(UserSession)
        .where(
            col(UserSession.user_id) == user_id,
            col(UserSession.active_organization_id) == organization_id,
        )
        .values(active_organization_id=None)
        .execution_options(synchronize_session=False)
    )
