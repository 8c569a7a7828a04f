"""Run alembic migrations serialized by a PostgreSQL advisory lock.

The lock is a session-level advisory lock on a direct (unpooled) connection: concurrent
runs queue behind it and find the schema already at head. Never use this through the
pooler (session state does not survive PgBouncer's transaction mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.engine import make_url

from shared.config import get_settings
from shared.db import sqlalchemy_url
from shared.logs import logger

# An arbitrary, fixed 64-bit key for pg_advisory_lock: "igris migrations".
MIGRATION_LOCK_KEY = 0x1617_1A5E_0001
APP_ROLE = "igris_app"
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


@dataclass(frozen=True)
class MigrationResult:
    """What one run did: the revision before and after, and whether it changed anything."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_dict(self) -> dict[str, str | bool | None]:
        return {"before": self.before, "after": self.after, "changed": self.changed}


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configured in code (no alembic.ini needed at runtime)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision in migrations/versions."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def run_migrations(
    url: str | None = None, *, revision: str = "head", downgrade: bool = False
) -> MigrationResult:
    """Upgrade the database at `url` to `revision` (or downgrade to it) under the lock."""
    settings = get_settings()
    target = url or settings.direct_url()
    engine = create_engine(
        sqlalchemy_url(target),
        poolclass=pool.NullPool,
        connect_args={"prepare_threshold": None, "application_name": "igris-migrate"},
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                before = current_revision(connection)
                connection.commit()
                config = alembic_config(connection)
                if downgrade:
                    command.downgrade(config, revision)
                else:
                    command.upgrade(config, revision)
                after = current_revision(connection)
                if after is not None and settings.database_url is not None:
                    pooled = settings.database_url.get_secret_value()
                    _grant_app_role_to_pooled_user(connection, pooled, target)
                connection.commit()
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
    finally:
        engine.dispose()
    result = MigrationResult(before=before, after=after)
    logger.info("migrations finished", extra=result.as_dict())
    return result


def _grant_app_role_to_pooled_user(
    connection: Connection, pooled_url: str, direct_url: str
) -> None:
    """Let the pooled URL's login role act as `igris_app` (when it is a different role)."""
    user = make_url(pooled_url).username
    owner = make_url(direct_url).username
    if not user or user == owner:
        return
    exists = connection.execute(
        text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": user}
    ).first()
    if exists is None:
        raise RuntimeError(f"the pooled URL's role {user!r} does not exist in the database")
    quoted = connection.dialect.identifier_preparer.quote(user)
    connection.execute(text(f"GRANT {APP_ROLE} TO {quoted}"))
