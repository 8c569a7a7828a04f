"""Rate limits in PostgreSQL: exact under concurrency, through PgBouncer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import Engine, text
from sqlmodel import Session

from shared.config import get_settings
from shared.db import make_engine, session_scope
from shared.ids import new_id
from shared.ratelimit import Window, add, exhausted, hit, prune


def test_windows_are_aligned() -> None:
    now = datetime(2026, 11, 29, 10, 0, 42, tzinfo=UTC)
    window = Window.at(now, 60)
    assert window.start == datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    assert window.retry_after(now) == 18


def test_limit_refuses_after_n(db: Session) -> None:
    bucket = new_id("request")
    decisions = [hit(db, bucket, limit=3, window_seconds=60) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert [d.count for d in decisions[:3]] == [1, 2, 3]
    assert 1 <= decisions[-1].retry_after <= 60


def test_exactly_n_pass_under_concurrency(engine: Engine) -> None:
    """40 parallel hits at a limit of 7 through PgBouncer: exactly 7 allowed."""
    bucket = new_id("request")
    url = get_settings().pooled_url()
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        own = make_engine(url)
        try:
            barrier.wait()
            for _ in range(5):
                with session_scope(own) as session:
                    allowed = hit(session, bucket, limit=7, window_seconds=3600).allowed
                with lock:
                    results.append(allowed)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40
    assert results.count(True) == 7


def test_counting_without_limit_and_checking(db: Session) -> None:
    email, ip = new_id("request"), new_id("request")
    assert exhausted(db, [email, ip], limit=2, window_seconds=900) is None
    add(db, [email, ip], window_seconds=900)
    assert exhausted(db, [email, ip], limit=2, window_seconds=900) is None
    add(db, [email], window_seconds=900)
    retry = exhausted(db, [email, ip], limit=2, window_seconds=900)
    assert retry is not None
    assert 1 <= retry <= 900
    assert exhausted(db, [ip], limit=2, window_seconds=900) is None


def test_prune_deletes_only_ended_windows(db: Session) -> None:
    bucket = new_id("request")
    hit(db, bucket, limit=5, window_seconds=3600)
    db.execute(
        text(
            "INSERT INTO rate_limit_counters (id, bucket, window_start, count, expires_at) "
            "VALUES (:id, :b, now() - interval '2 hours', 3, now() - interval '1 hour')"
        ),
        {"id": new_id("rate_limit"), "b": bucket},
    )
    assert prune(db) >= 1
    assert hit(db, bucket, limit=5, window_seconds=3600).count == 2
