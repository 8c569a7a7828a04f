"""Fixed-window rate limits kept in PostgreSQL, so that every stateless function instance
shares them. One statement per check, exact under concurrency: the upsert's row lock makes
concurrent hits on one window queue, and its WHERE sees the latest count."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlmodel import Session

from shared.ids import new_id
from shared.models.base import utcnow

_HIT = text(
    """
    INSERT INTO rate_limit_counters (id, bucket, window_start, count, expires_at)
    VALUES (:id, :bucket, :window_start, 1, :expires_at)
    ON CONFLICT (bucket, window_start)
    DO UPDATE SET count = rate_limit_counters.count + 1
    WHERE rate_limit_counters.count < :limit
    RETURNING count
    """
)
_COUNT = text(
    """
    SELECT bucket, count FROM rate_limit_counters
    WHERE bucket = ANY(:buckets) AND window_start = :window_start
    """
)
_ADD = text(
    """
    INSERT INTO rate_limit_counters (id, bucket, window_start, count, expires_at)
    SELECT b.id, b.bucket, :window_start, 1, :expires_at
    FROM unnest(CAST(:ids AS text[]), CAST(:buckets AS text[])) AS b(id, bucket)
    ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_limit_counters.count + 1
    RETURNING bucket, count
    """
)
_PRUNE = text("DELETE FROM rate_limit_counters WHERE expires_at < now()")


@dataclass(frozen=True)
class Window:
    """The fixed window containing `now`."""

    start: datetime
    seconds: int

    @classmethod
    def at(cls, now: datetime, seconds: int) -> Window:
        epoch = int(now.timestamp())
        return cls(datetime.fromtimestamp(epoch - epoch % seconds, tz=UTC), seconds)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def retry_after(self, now: datetime) -> int:
        """Whole seconds until the window ends (at least 1)."""
        return max(1, math.ceil((self.end - now).total_seconds()))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int | None
    retry_after: int


def hit(session: Session, bucket: str, *, limit: int, window_seconds: int) -> Decision:
    """Count one event in `bucket`; refused (and not counted) once `limit` is reached."""
    now = utcnow()
    window = Window.at(now, window_seconds)
    count = session.execute(
        _HIT,
        {
            "id": new_id("rate_limit"),
            "bucket": bucket,
            "window_start": window.start,
            "expires_at": window.end,
            "limit": limit,
        },
    ).scalar()
    return Decision(allowed=count is not None, count=count, retry_after=window.retry_after(now))


def exhausted(
    session: Session, buckets: Sequence[str], *, limit: int, window_seconds: int
) -> int | None:
    """Seconds to wait when any bucket already reached `limit` in this window, else None."""
    now = utcnow()
    window = Window.at(now, window_seconds)
    rows = session.execute(_COUNT, {"buckets": list(buckets), "window_start": window.start})
    if any(count >= limit for _bucket, count in rows):
        return window.retry_after(now)
    return None


def add(
    session: Session, buckets: Sequence[str], *, window_seconds: int, retain_seconds: int = 0
) -> dict[str, int]:
    """Count one event in each bucket without a limit (one statement); returns each bucket's
    count in the current window. `retain_seconds` keeps ended windows that long (for rolling
    averages) before `prune` may delete them."""
    window = Window.at(utcnow(), window_seconds)
    rows = session.execute(
        _ADD,
        {
            "ids": [new_id("rate_limit") for _ in buckets],
            "buckets": list(buckets),
            "window_start": window.start,
            "expires_at": window.end + timedelta(seconds=retain_seconds),
        },
    )
    return {str(bucket): int(count) for bucket, count in rows}


def prune(session: Session) -> int:
    """Delete windows that have ended; returns how many."""
    result = session.execute(_PRUNE)
    return int(getattr(result, "rowcount", 0) or 0)
