"""Better Auth's wire forms shared by the auth and orgs functions: dates and the user object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.models import User


def iso(value: datetime | None) -> str | None:
    """`2026-11-29T12:15:31.936Z`: the form Better Auth's client turns back into a Date."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "emailVerified": user.email_verified,
        "image": user.image,
        "createdAt": iso(user.created_at),
        "updatedAt": iso(user.updated_at),
    }


def user_summary(user: User) -> dict[str, Any]:
    """The nested `user` of a member object."""
    return {"id": user.id, "name": user.name, "email": user.email, "image": user.image}
