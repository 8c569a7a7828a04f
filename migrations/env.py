"""Alembic environment: the models' metadata, the direct URL, or a connection handed in.

`functions/migrate/migrator.py` passes the connection that holds the migration advisory
lock through `config.attributes["connection"]`; otherwise the direct URL from settings is
used (alembic's own CLI).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

import shared.models
from shared.config import get_settings
from shared.db import sqlalchemy_url

target_metadata = shared.models.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only our schema (not objects other tools keep in the database)."""
    return not (type_ == "table" and name == "alembic_version")


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = context.config.attributes.get("connection")
    if given is not None:
        run_with(given)
        return
    engine = create_engine(
        sqlalchemy_url(get_settings().direct_url()),
        poolclass=pool.NullPool,
        connect_args={"prepare_threshold": None},
    )
    with engine.connect() as connection:
        run_with(connection)


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `igris migrate`")
run_migrations_online()
