"""Sign-in latency with the chosen argon2id parameters, and API-key verification cost.

Runs in-process against the database in DATABASE_URL (scripts/bench starts a throwaway
PostgreSQL behind PgBouncer): each sign-in is a full request through the auth function's
app (argon2id verify, session insert, audit event, commit); each API-key verification is
`shared.auth.resolve_api_key` on a fresh transaction, with its SQL statements counted.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event

SIGN_INS = 60
VERIFICATIONS = 2000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def sign_in_latencies(email: str, password: str) -> list[float]:
    from fastapi.testclient import TestClient

    from functions.auth.main import app

    client = TestClient(app)
    latencies = []
    for _ in range(SIGN_INS):
        client.cookies.clear()
        started = time.perf_counter()
        response = client.post(
            "/api/auth/sign-in/email", json={"email": email, "password": password}
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return latencies


def make_key(user_id: str) -> str:
    from shared.db import session_scope
    from shared.ids import new_id
    from shared.models import ApiKey, Member, Organization
    from shared.models.base import utcnow
    from shared.security import API_KEY_START_LENGTH, new_api_key, token_digest

    key = new_api_key()
    with session_scope() as session:
        org = Organization(name="bench", slug=f"bench-{new_id('request')[-8:].lower()}")
        session.add(org)
        session.flush()
        session.add(Member(organization_id=org.id, user_id=user_id, role="owner"))
        session.flush()
        session.add(
            ApiKey(
                organization_id=org.id,
                name="bench",
                role="developer",
                start=key[:API_KEY_START_LENGTH],
                key_hash=token_digest(key),
                created_by=user_id,
                last_used_at=utcnow(),
            )
        )
    return key


def main() -> None:
    os.environ.setdefault("IGRIS_ENV", "test")
    os.environ.setdefault("IGRIS_SECRET", "bench-secret-" + "x" * 40)
    from fastapi.testclient import TestClient

    from functions.auth.main import app
    from functions.migrate.migrator import run_migrations
    from shared.auth import resolve_api_key
    from shared.config import get_settings
    from shared.db import get_engine, session_scope
    from shared.ids import new_id

    get_settings.cache_clear()
    run_migrations()
    email = f"bench-{new_id('request')[-8:].lower()}@example.com"
    password = "bench-password-123"
    signed_up = TestClient(app).post(
        "/api/auth/sign-up/email", json={"name": "Bench", "email": email, "password": password}
    )
    latencies = sign_in_latencies(email, password)
    key = make_key(signed_up.json()["user"]["id"])

    engine = get_engine()
    timings = []
    with counting(engine) as statements:
        for _ in range(VERIFICATIONS):
            started = time.perf_counter()
            with session_scope() as session:
                principal = resolve_api_key(session, key)
            timings.append((time.perf_counter() - started) * 1000)
            assert principal is not None
        per_verification = len(statements) / VERIFICATIONS
    with counting(engine) as malformed_statements, session_scope() as session:
        assert resolve_api_key(session, "ig_not-a-key") is None

    print(f"sign-in (argon2id m=19 MiB, t=2, p=1), {SIGN_INS} requests through the auth app:")
    median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    print(f"  median {median:7.1f} ms   p95 {p95:7.1f} ms")
    print(f"API-key verification, {VERIFICATIONS} verifications (each its own transaction):")
    median, p95 = statistics.median(timings), percentile(timings, 0.95)
    print(
        f"  median {median:7.3f} ms   p95 {p95:7.3f} ms   SQL statements per verification:"
        f" {per_verification:.2f} (lastUsedAt written at most once a minute)"
    )
    print(f"  malformed key: {len(malformed_statements)} SQL statements")


if __name__ == "__main__":
    main()
