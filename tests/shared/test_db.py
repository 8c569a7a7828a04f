"""The engine behind the pooler: no prepared statements, pool of one, and recovery when the
database goes away and comes back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from psycopg import OperationalError
from sqlalchemy import Engine, QueuePool, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from shared import db
from shared.config import get_settings
from shared.db import SessionDep, get_session, make_engine, session_scope, sqlalchemy_url
from shared.ids import new_id
from shared.web import create_app
from tests.tcp_relay import TcpRelay


def test_url_normalization() -> None:
    assert sqlalchemy_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert sqlalchemy_url("postgresql+psycopg://u:p@h/db").drivername == "postgresql+psycopg"


def test_engine_is_pooler_safe(engine: Engine) -> None:
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.size() == 1
    assert pool._pre_ping
    with engine.connect() as connection:
        raw = connection.connection.dbapi_connection
        assert raw is not None
        assert raw.prepare_threshold is None


def test_many_threads_through_pgbouncer_never_clash_on_prepared_statements() -> None:
    """20 threads x 50 transactions through PgBouncer (pool of 3 server connections)."""
    url = get_settings().pooled_url()
    failures: list[BaseException] = []

    def work() -> None:
        own = make_engine(url)
        try:
            for i in range(50):
                with session_scope(own) as session:
                    value = session.execute(
                        text("SELECT count(*) FROM organization WHERE slug = :s"), {"s": f"x{i}"}
                    ).scalar_one()
                    assert value == 0
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=work) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_commit_happens_before_the_response_is_sent(engine: Engine) -> None:
    """The request's transaction is committed by the time the client has its answer."""
    router = APIRouter()
    slug = f"commit-{new_id('request')[-8:].lower()}"

    @router.post("/api/v1/commit-check", status_code=201)
    def create(session: SessionDep) -> dict[str, str]:
        """Insert an organization."""
        session.execute(
            text("INSERT INTO organization (id, name, slug) VALUES (:id, 'x', :slug)"),
            {"id": new_id("organization"), "slug": slug},
        )
        return {"slug": slug}

    app = create_app("commit", routers=[router], health_path="/api/v1/commit/_health")
    with TestClient(app) as client:
        assert client.post("/api/v1/commit-check").status_code == 201
    with session_scope(engine) as session:
        found = session.execute(
            text("SELECT count(*) FROM organization WHERE slug = :s"), {"s": slug}
        ).scalar_one()
        session.execute(text("DELETE FROM organization WHERE slug = :s"), {"s": slug})
    assert found == 1


@pytest.fixture
def relayed_app() -> Iterator[tuple[FastAPI, TcpRelay]]:
    """An app whose database connection runs through a relay the test can cut."""
    pooled = make_url(get_settings().pooled_url())
    with TcpRelay(pooled.host or "127.0.0.1", pooled.port or 5432) as relay:
        url = pooled.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        engine = make_engine(url)
        app = create_app("relayed", health_path="/api/v1/relayed/_health")

        def relayed_session() -> Iterator[Session]:
            with session_scope(engine) as session:
                yield session

        app.dependency_overrides[get_session] = relayed_session
        yield app, relay
        engine.dispose()


def test_database_down_is_503_and_recovers_without_restart(
    relayed_app: tuple[FastAPI, TcpRelay],
) -> None:
    app, relay = relayed_app
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/api/v1/relayed/_health").status_code == 200

    relay.cut()
    for _ in range(2):
        down = client.get("/api/v1/relayed/_health")
        assert down.status_code == 503
        body = down.json()
        assert body["error"]["code"] == "database_unavailable"
        assert "Traceback" not in down.text
        assert "password" not in down.text

    relay.restore()
    assert client.get("/api/v1/relayed/_health").status_code == 200


@pytest.fixture
def relayed_autocommit(monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpRelay]:
    """The proxy's autocommit connections, running through a relay the test can cut (and an
    idle list of this test's own, so no relayed connection outlives it)."""
    pooled = make_url(get_settings().pooled_url())
    with TcpRelay(pooled.host or "127.0.0.1", pooled.port or 5432) as relay:
        url = pooled.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setattr(db, "_idle_connections", [])
        get_settings.cache_clear()
        try:
            yield relay
        finally:
            for connection in db._idle_connections:
                connection.close()
            monkeypatch.undo()
            get_settings.cache_clear()


def backend_pid(connection: Any) -> int:
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_autocommit_connections_are_reused_and_a_dead_one_is_replaced(
    relayed_autocommit: TcpRelay,
) -> None:
    taken: list[Any] = []

    def take() -> None:
        with db.autocommit_connection() as connection:
            backend_pid(connection)
            taken.append(connection)

    for _ in range(3):  # one after the other, each on a new thread, as Mangum's invocations
        worker = threading.Thread(target=take)
        worker.start()
        worker.join()
    assert len(taken) == 3
    assert taken[0] is taken[1] is taken[2]
    with db.autocommit_connection() as one, db.autocommit_connection() as two:
        assert one is not two  # taken at once: two, and both are kept afterwards
    with db.autocommit_connection() as a, db.autocommit_connection() as b:
        assert {id(a), id(b)} == {id(one), id(two)}

    # The database goes away and comes back: the dead connection raises and is discarded,
    # and a fresh one (what the proxy's one retry asks for) skips the other dead idle one.
    relayed_autocommit.cut()
    relayed_autocommit.restore()
    with pytest.raises(OperationalError), db.autocommit_connection() as dead:
        backend_pid(dead)
    assert dead.closed
    with db.autocommit_connection(fresh=True) as fresh:
        backend_pid(fresh)
    assert fresh not in (one, two)
