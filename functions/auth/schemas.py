"""Request and response bodies of the auth function."""

from __future__ import annotations

from datetime import datetime

from pydantic import EmailStr, Field, field_validator

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


# --- Better Auth wire models (/api/auth/*): field names as Better Auth's client sends them.


class SignUpEmail(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    image: str | None = Field(default=None, max_length=2048)
    callback_url: str | None = Field(default=None, alias="callbackURL", max_length=2048)
    remember_me: bool = Field(default=True, alias="rememberMe")


class SignInEmail(ApiModel):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    remember_me: bool = Field(default=True, alias="rememberMe")
    callback_url: str | None = Field(default=None, alias="callbackURL", max_length=2048)


class SignOut(ApiModel):
    callback_url: str | None = Field(default=None, alias="callbackURL", max_length=2048)
    disable_redirect: bool | None = None
    state: str | None = Field(default=None, max_length=2048)


class RevokeSession(ApiModel):
    token: str = Field(min_length=1, max_length=512)


class ChangePassword(ApiModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)
    revoke_other_sessions: bool = False


class UpdateUser(ApiModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    image: str | None = Field(default=None, max_length=2048)
    # Present only so that the documented refusal (EMAIL_CAN_NOT_BE_UPDATED) can be given.
    email: str | None = Field(default=None, max_length=320)

    @field_validator("name")
    @classmethod
    def _name_is_not_null(cls, value: str | None) -> str:
        # Absent means "unchanged"; an explicit null would erase a required field.
        if value is None:
            raise ValueError("Input should be a valid string")
        return value
