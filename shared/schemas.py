"""Base classes for request and response bodies: camelCase on the wire, snake_case in
Python, unknown fields refused (no silent mass assignment), and the `{"data": ...}`
envelopes."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class ApiModel(BaseModel):
    """Request bodies: camelCase names only, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
    )


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
