"""Test fixtures: a real PostgreSQL (through a real PgBouncer in transaction mode), the
schema built by the migrations, and one rolled-back transaction per test.

`scripts/test` starts the database stack and sets DATABASE_URL (PgBouncer, application
role) and DATABASE_URL_UNPOOLED (direct, owner). Run plain `pytest` and this conftest starts
a throwaway stack itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine
from sqlmodel import Session

_stack = ExitStack()
if not os.environ.get("DATABASE_URL"):
    from igris.testenv import throwaway_stack

    os.environ.update(_stack.enter_context(throwaway_stack(pooler=True)).environ())

os.environ.setdefault("IGRIS_ENV", "test")
os.environ.setdefault("IGRIS_SECRET", "test-secret-" + "x" * 40)
os.environ.setdefault("IGRIS_ENCRYPTION_KEY", "test:aWdyaXMtdGVzdC1lbmNyeXB0aW9uLWtleS0zMmJ5dGU")
os.environ.setdefault("IGRIS_ALLOW_PRIVATE_UPSTREAMS", "1")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

from shared.config import get_settings  # noqa: E402 - after the environment is set
from shared.db import get_engine, get_session, get_transactions  # noqa: E402

get_settings.cache_clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _stack.close()


@pytest.fixture(scope="session")
def migrated() -> None:
    """The test database at the newest revision (built by the migrations, not create_all)."""
    from functions.migrate.migrator import run_migrations

    run_migrations()


@pytest.fixture(scope="session")
def engine(migrated: None) -> Engine:
    """The application's engine: pooled URL, application role."""
    return get_engine()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


@pytest.fixture
def db(connection: Connection) -> Iterator[Session]:
    """A session joined to the test's transaction: its commits only release savepoints."""
    with Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    ) as session:
        yield session


@pytest.fixture
def route_into_db(db: Session) -> Iterator[Callable[[FastAPI], None]]:
    """`route_into_db(app)`: the app's requests (and the proxy's own short transactions) run
    in the test's transaction, so they see its rows and leave nothing behind."""
    overridden: list[FastAPI] = []

    def request_session() -> Iterator[Session]:
        db.commit()  # what the test set up is "committed" before the request, as in real life
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    @contextmanager
    def transaction() -> Iterator[Session]:
        db.commit()
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def install(app: FastAPI) -> None:
        app.dependency_overrides[get_session] = request_session
        app.dependency_overrides[get_transactions] = lambda: transaction
        overridden.append(app)

    yield install
    for app in overridden:
        app.dependency_overrides.pop(get_session, None)
        app.dependency_overrides.pop(get_transactions, None)


@pytest.fixture
def client_for(route_into_db: Callable[[FastAPI], None]) -> Callable[[FastAPI], TestClient]:
    """`client_for(app)`: a TestClient whose requests run in the test's transaction."""

    def make(app: FastAPI, **kwargs: Any) -> TestClient:
        route_into_db(app)
        return TestClient(app, raise_server_exceptions=False, **kwargs)

    return make


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """A new, empty database owned by the owner role; its direct URL. Dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    from shared.ids import new_id

    admin_url = os.environ["IGRIS_TEST_PG_ADMIN_URL"]
    name = new_id("request").lower().replace("req_", "scratch_")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER igris_owner')
    direct = make_url(get_settings().direct_url()).set(database=name)
    try:
        yield direct.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
