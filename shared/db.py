"""The database engine and the transaction-per-request session.

Neon's pooled endpoint is PgBouncer in transaction mode, so: no server-side prepared
statements (`prepare_threshold=None`), no session state, nothing held across requests but
one idle connection. The engine is created lazily on first use so that importing a
function's module costs no connection (and no settings) at cold start.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlmodel import Session

from shared.config import get_settings

if TYPE_CHECKING:  # psycopg is imported on first use: it is not needed to import a function
    import psycopg


def sqlalchemy_url(url: str) -> URL:
    """`postgres://` / `postgresql://` URLs → the psycopg 3 dialect."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str, *, pool_size: int = 1) -> Engine:
    """An engine safe behind PgBouncer in transaction mode.

    One Lambda environment serves one request at a time, hence a pool of one. Pre-ping
    replaces a connection that died while the function was frozen; a connection that
    breaks mid-request is invalidated by SQLAlchemy and the next checkout reconnects.
    """
    settings = get_settings()
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=0,
        pool_pre_ping=True,
        pool_timeout=settings.db_connect_timeout_seconds,
        connect_args={
            "prepare_threshold": None,
            "connect_timeout": settings.db_connect_timeout_seconds,
            "application_name": "igris",
        },
    )


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine on the pooled URL, created on first use."""
    return make_engine(get_settings().pooled_url())


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commits when the block ends, rolls back if it raises."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def get_session() -> Iterator[Session]:
    """FastAPI dependency: the request's transaction.

    Declared with `scope="function"` (see `SessionDep`), so the commit runs when the
    endpoint returns and before the response is sent: a client never sees a success that
    was not committed, and a failed commit becomes an error response.
    """
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]

Transactions = Callable[[], AbstractContextManager[Session]]


def get_transactions() -> Transactions:
    """FastAPI dependency for routes that run several short transactions of their own (the
    proxy: decide and commit, forward with no connection held, record the outcome)."""
    return session_scope


TransactionsDep = Annotated[Transactions, Depends(get_transactions)]


_idle_connections: list[psycopg.Connection[Any]] = []
_idle_lock = threading.Lock()


@contextmanager
def autocommit_connection(*, fresh: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection on the pooled URL, for the proxy's hot path: each
    statement is its own transaction (one round trip, no BEGIN/COMMIT), no server-side
    prepared statements, no per-checkout ping.

    Connections are the process's, not a thread's: one is taken from the idle ones (opened
    when there is none) and given back at the end of the block, so the process keeps as many
    as it ever used at once. (Under Mangum every invocation runs its sync work on a fresh
    worker thread, since anyio stops a loop's workers when the invocation's task ends: a
    per-thread connection meant a new connection per call.) A connection that is closed or
    left in any state but idle (a dead one raises OperationalError) is discarded, and the
    caller's one retry, asking for a `fresh` connection, does not meet another idle one that
    the same restart killed."""
    connection = None
    if not fresh:
        with _idle_lock:
            connection = _idle_connections.pop() if _idle_connections else None
    if connection is None or connection.closed:
        connection = _connect_autocommit()
    try:
        yield connection
    finally:
        import psycopg

        if (
            connection.closed
            or connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        ):
            with contextlib.suppress(Exception):
                connection.close()
        else:
            with _idle_lock:
                _idle_connections.append(connection)


def _connect_autocommit() -> psycopg.Connection[Any]:
    import psycopg

    settings = get_settings()
    url = sqlalchemy_url(settings.pooled_url()).set(drivername="postgresql")
    return psycopg.connect(
        url.render_as_string(hide_password=False),
        autocommit=True,
        prepare_threshold=None,
        connect_timeout=settings.db_connect_timeout_seconds,
        application_name="igris-proxy",
    )
