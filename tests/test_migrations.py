"""Migrations: up from empty, down to base and up again, and no drift from the models."""

from __future__ import annotations

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool

import shared.models
from functions.migrate.migrator import head_revision, run_migrations
from shared.db import sqlalchemy_url

EXPECTED_TABLES = {
    "user",
    "account",
    "session",
    "organization",
    "member",
    "mcp_servers",
    "policies",
    "agent_sessions",
    "audit_events",
    "baa",
    "ai_systems",
    "api_keys",
    "invitation",
    "verification",
    "approvals",
    "server_tools",
    "policy_versions",
    "audit_chain_heads",
    "backups",
    "rate_limit_counters",
}


def tables(url: str) -> set[str]:
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_builds_every_table(scratch_database: str) -> None:
    assert tables(scratch_database) == set()
    result = run_migrations(scratch_database)
    assert result.before is None
    assert result.after == head_revision()
    assert tables(scratch_database) == EXPECTED_TABLES


def test_upgrade_at_head_is_a_no_op(scratch_database: str) -> None:
    run_migrations(scratch_database)
    again = run_migrations(scratch_database)
    assert not again.changed


def test_downgrade_to_base_and_up_again(scratch_database: str) -> None:
    run_migrations(scratch_database)
    down = run_migrations(scratch_database, revision="base", downgrade=True)
    assert down.after is None
    assert tables(scratch_database) == set()
    up = run_migrations(scratch_database)
    assert up.after == head_revision()
    assert tables(scratch_database) == EXPECTED_TABLES


def test_models_and_migrations_do_not_drift(scratch_database: str) -> None:
    run_migrations(scratch_database)
    engine = create_engine(sqlalchemy_url(scratch_database), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            diff = compare_metadata(context, shared.models.metadata)
    finally:
        engine.dispose()
    assert diff == []


def privileges(url: str, role: str, table: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) p "
            "WHERE has_table_privilege(%s, %s, p)",
            (role, table),
        ).fetchall()
    return {row[0] for row in rows}


def test_application_role_grants(scratch_database: str) -> None:
    run_migrations(scratch_database)
    assert privileges(scratch_database, "igris_app", "audit_events") == {"SELECT", "INSERT"}
    assert privileges(scratch_database, "igris_app", "policies") == {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
    }
    assert privileges(scratch_database, "igris_app", "alembic_version") == {"SELECT"}
    # Tables of later revisions get the defaults too.
    assert privileges(scratch_database, "igris_app", "rate_limit_counters") == {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
    }


def test_pooled_login_role_is_granted_the_application_role(scratch_database: str) -> None:
    run_migrations(scratch_database)
    with psycopg.connect(scratch_database) as conn:
        member = conn.execute(
            "SELECT pg_has_role('igris_app_user', 'igris_app', 'MEMBER')"
        ).fetchone()
    assert member == (True,)


@pytest.mark.parametrize("table", sorted(EXPECTED_TABLES))
def test_every_table_has_a_text_primary_key(scratch_database: str, table: str) -> None:
    run_migrations(scratch_database)
    engine = create_engine(sqlalchemy_url(scratch_database), poolclass=pool.NullPool)
    try:
        inspector = inspect(engine)
        primary = inspector.get_pk_constraint(table)["constrained_columns"]
        columns = {column["name"]: column for column in inspector.get_columns(table)}
        foreign_keys = inspector.get_foreign_keys(table)
        indexed = {tuple(index["column_names"]) for index in inspector.get_indexes(table)} | {
            tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
        }
    finally:
        engine.dispose()
    assert len(primary) == 1
    assert str(columns[primary[0]]["type"]).startswith("VARCHAR")
    for fk in foreign_keys:  # every foreign key is the leading column of some index
        column = fk["constrained_columns"][0]
        assert any(index[0] == column for index in indexed), (table, column)
