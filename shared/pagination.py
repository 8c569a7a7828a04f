"""Keyset (cursor) pagination for every list route: stable under concurrent inserts.

Lists are ordered newest first by a (timestamp, id) or (seq) key; the cursor is the key of
the last item returned, opaque to clients (base64url JSON).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar, TypeVarTuple

from fastapi import Query
from sqlalchemy import Select, and_, or_

from shared.errors import Unprocessable

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

T = TypeVar("T")
_Ts = TypeVarTuple("_Ts")

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (default {DEFAULT_LIMIT}, max 200)")
]
CursorQuery = Annotated[
    str | None, Query(max_length=512, description="`meta.nextCursor` of the previous page")
]


def encode_cursor(key: Sequence[Any]) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    cursor: str | None, parts: Sequence[Callable[[Any], Any]]
) -> tuple[Any, ...] | None:
    """The key inside a cursor, each part converted by its function (`datetime.fromisoformat`,
    `str`, `int`...); 422 naming `cursor` when it is not one of ours."""
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(value, list) or len(value) != len(parts):
            raise ValueError("wrong shape")
        return tuple(convert(item) for convert, item in zip(parts, value, strict=True))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise Unprocessable(
            details=[{"field": "cursor", "message": "Not a valid cursor."}]
        ) from None


def page(
    rows: Sequence[T], limit: int, key: Callable[[T], Sequence[Any]]
) -> tuple[list[T], str | None]:
    """Split `limit + 1` fetched rows into the page and the next cursor (None on the last)."""
    items = list(rows[:limit])
    next_cursor = encode_cursor(key(items[-1])) if len(rows) > limit and items else None
    return items, next_cursor


def newest_first(
    query: Select[*_Ts],
    time_column: Any,
    id_column: Any,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Select[*_Ts]:
    """Order newest first by (time, id), continue after the cursor's key, and fetch
    `limit + 1` rows so that `page` can tell whether another page exists."""
    if after is not None:
        moment, row_id = after
        query = query.where(
            or_(time_column < moment, and_(time_column == moment, id_column < row_id))
        )
    return query.order_by(time_column.desc(), id_column.desc()).limit(limit + 1)
