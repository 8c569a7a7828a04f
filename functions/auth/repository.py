"""Every query of the auth function. Organization-owned reads always take the org id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlmodel import Session

from shared.models import ApiKey


def add(session: Session, row: Any) -> None:
    session.add(row)
    session.flush()


def get_api_key(session: Session, organization_id: str, key_id: str) -> ApiKey | None:
    query = select(ApiKey).where(
        ApiKey.id == key_id,  # type: ignore[arg-type]
        ApiKey.organization_id == organization_id,  # type: ignore[arg-type]
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
    query = select(ApiKey).where(ApiKey.organization_id == organization_id)  # type: ignore[arg-type]
    if created_by is not None:
        query = query.where(ApiKey.created_by == created_by)  # type: ignore[arg-type]
    if after is not None:
        created_at, key_id = after
        query = query.where(
            or_(
                ApiKey.created_at < created_at,  # type: ignore[arg-type]
                and_(ApiKey.created_at == created_at, ApiKey.id < key_id),  # type: ignore[arg-type]
            )
        )
    query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).limit(limit + 1)  # type: ignore[attr-defined]
    return list(session.scalars(query))
