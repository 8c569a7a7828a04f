"""Every query of the auth function. Organization-owned reads always take the org id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlmodel import Session, col

from shared.models import Account, ApiKey, Member, User, Verification
from shared.models import Session as UserSession
from shared.pagination import newest_first


def add(session: Session, row: Any) -> None:
    session.add(row)
    session.flush()


def get_api_key(session: Session, organization_id: str, key_id: str) -> ApiKey | None:
    query = select(ApiKey).where(
        col(ApiKey.id) == key_id,
        col(ApiKey.organization_id) == organization_id,
    )
    return session.scalars(query).first()


def list_api_keys(
    session: Session,
    organization_id: str,
    *,
    created_by: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[ApiKey]:
    """Newest first; `limit + 1` rows so the caller can tell whether a next page exists."""
    query = select(ApiKey).where(col(ApiKey.organization_id) == organization_id)
    if created_by is not None:
        query = query.where(col(ApiKey.created_by) == created_by)
    query = newest_first(query, col(ApiKey.created_at), col(ApiKey.id), after, limit)
    return list(session.scalars(query))


def find_user_by_email(session: Session, email: str) -> User | None:
    query = select(User).where(func.lower(col(User.email)) == email.lower())
    return session.scalars(query).first()


def credential_account(session: Session, user_id: str) -> Account | None:
    query = select(Account).where(
        col(Account.user_id) == user_id,
        col(Account.provider_id) == "credential",
    )
    return session.scalars(query).first()


def session_with_user(session: Session, digest: str) -> tuple[UserSession, User] | None:
    """A live session by token digest, with its user (one query)."""
    query = (
        select(UserSession, User)
        .join(User, col(User.id) == col(UserSession.user_id))
        .where(
            col(UserSession.token_hash) == digest,
            col(UserSession.expires_at) > func.now(),
        )
    )
    row = session.execute(query).first()
    return (row[0], row[1]) if row else None


def live_sessions(session: Session, user_id: str) -> list[UserSession]:
    query = (
        select(UserSession)
        .where(
            col(UserSession.user_id) == user_id,
            col(UserSession.expires_at) > func.now(),
        )
        .order_by(col(UserSession.created_at).desc())
    )
    return list(session.scalars(query))


def delete_sessions(
    session: Session, user_id: str, *, only: str | None = None, keep: str | None = None
) -> int:
    """Delete the user's sessions (all, only one id, or all but one id); returns how many."""
    statement = delete(UserSession).where(col(UserSession.user_id) == user_id)
    if only is not None:
        statement = statement.where(col(UserSession.id) == only)
    if keep is not None:
        statement = statement.where(col(UserSession.id) != keep)
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


def organizations_of(session: Session, user_id: str) -> list[str]:
    query = select(col(Member.organization_id)).where(col(Member.user_id) == user_id)
    return list(session.scalars(query))


def get_user(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


# --- Social sign-in (functions/auth/social.py)


def account_with_user(
    session: Session, provider_id: str, account_id: str
) -> tuple[Account, User] | None:
    """The account a provider identity is linked to, with its user (one query)."""
    query = (
        select(Account, User)
        .join(User, col(User.id) == col(Account.user_id))
        .where(
            col(Account.provider_id) == provider_id,
            col(Account.account_id) == account_id,
        )
    )
    row = session.execute(query).first()
    return (row[0], row[1]) if row else None


def find_verification(session: Session, identifier: str) -> Verification | None:
    query = select(Verification).where(col(Verification.identifier) == identifier)
    return session.scalars(query).first()


def delete_verification(session: Session, verification_id: str) -> bool:
    """Delete one verification; False when it was already gone (used by a concurrent
    request: the row lock makes exactly one of them win)."""
    statement = (
        delete(Verification)
        .where(col(Verification.id) == verification_id)
        .returning(col(Verification.id))
    )
    return session.execute(statement).first() is not None


def delete_expired_verifications(session: Session, prefix: str, *, limit: int) -> int:
    """Sweep up to `limit` expired verifications whose identifier starts with `prefix`."""
    expired = (
        select(col(Verification.id))
        .where(
            col(Verification.expires_at) < func.now(),
            col(Verification.identifier).startswith(prefix, autoescape=True),
        )
        .limit(limit)
        .scalar_subquery()
    )
    statement = (
        delete(Verification)
        .where(col(Verification.id).in_(expired))
        .execution_options(synchronize_session=False)
    )
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)
