"""Base classes for request and response bodies: camelCase on the wire, snake_case in
Python, unknown fields refused (no silent mass assignment), and the `{"data": ...}`
envelopes."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

T = TypeVar("T")


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


class ApiModel(BaseModel):
    """Request bodies: camelCase names only, unknown fields refused, no NUL characters
    (PostgreSQL text cannot hold them: refused here as bad input, not a 500 later)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _contains_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


class ReadModel(BaseModel):
    """Response bodies: built in Python by field name or from ORM rows, sent in camelCase.
    Only the declared fields are read, so a row's secrets (digests, ciphertexts) never leak."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        extra="ignore",
        from_attributes=True,
    )


class Envelope(ReadModel, Generic[T]):
    """`{"data": <object>}`: every single-object success response on /api/v1."""

    data: T


class PageMeta(ReadModel):
    next_cursor: str | None = None


class ListEnvelope(ReadModel, Generic[T]):
    """`{"data": [...], "meta": {"nextCursor": ...}}`: every list response on /api/v1."""

    data: list[T]
    meta: PageMeta
