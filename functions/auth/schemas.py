"""Request and response bodies of the auth function."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from shared.permissions import Role
from shared.schemas import ApiModel, ReadModel


class ApiKeyCreate(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    role: Role | None = None
    expires_at: datetime | None = None


class ApiKeyRead(ReadModel):
    id: str
    name: str
    role: Role
    start: str
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_by: str


class ApiKeyCreated(ReadModel):
    """The one response that carries the full key."""

    id: str
    name: str
    role: Role
    start: str
    key: str
    expires_at: datetime | None
    created_at: datetime
