"""The backup function and `igris restore`: real pg_dump/pg_restore 17, a real PostgreSQL,
moto's S3 server (with its 5 MiB part minimum lowered so that tiny parts exercise the
multipart path)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from functions.backup import service
from functions.backup.main import handler
from functions.backup.manifest import Manifest, dump_key, manifest_key
from functions.backup.pgtools import libpq_conninfo
from functions.backup.service import (
    BackupError,
    PgDumpTooOld,
    run_backup,
    scheduled_time_of,
)
from functions.migrate.migrator import run_migrations
from igris.lambda_context import LocalLambdaContext
from igris.restore import RestoreError, format_report, restore
from shared.audit import record_event, verify_chain
from shared.config import get_settings
from shared.db import make_engine, session_scope
from shared.models.organization import Organization

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

EVENTS = Path(__file__).resolve().parents[3] / "events"
PREFIX = "backups"
# The recorded event's scheduled time (2026-11-29T03:00:00Z).
WHEN = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
PART_SIZE = 16 * 1024
ORGS = ("org_backuptestA", "org_backuptestB")
EVENTS_PER_ORG = 40
SYSTEM_EVENTS = 5


class InjectedFailure(Exception):
    """Raised by a botocore hook to simulate S3 failing mid-backup."""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", 256)
        server = ThreadedMotoServer(port=0, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        finally:
            server.stop()


@dataclass
class Env:
    """One test's world: a migrated, populated source database and an empty bucket."""

    url: str
    engine: Engine
    s3: S3Client
    bucket: str
    endpoint: str


@pytest.fixture
def env(scratch_database: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    bucket = f"igris-backups-{secrets.token_hex(4)}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", scratch_database)
    monkeypatch.setenv("BACKUP_BUCKET", bucket)
    monkeypatch.setenv("BACKUP_PREFIX", f"/{PREFIX}/")
    monkeypatch.setenv("BACKUP_RETENTION_DAYS", "35")
    monkeypatch.setenv("PATH", os.environ["IGRIS_TEST_PG_BINDIR"] + os.pathsep + os.environ["PATH"])
    get_settings.cache_clear()
    service.default_s3_client.cache_clear()
    run_migrations(scratch_database)
    engine = make_engine(scratch_database)
    populate(engine)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield Env(scratch_database, engine, s3, bucket, s3_endpoint)
    finally:
        engine.dispose()
        monkeypatch.undo()
        get_settings.cache_clear()
        service.default_s3_client.cache_clear()


def populate(engine: Engine) -> None:
    """Two organizations with their audit chains and a few system events; the metadata is
    random hex, so the dump compresses poorly and spans several parts."""
    with session_scope(engine) as session:
        for index, org in enumerate(ORGS):
            session.add(Organization(id=org, name=f"Org {index}", slug=f"org-{index}"))
            for _ in range(EVENTS_PER_ORG):
                record_event(
                    session,
                    organization_id=org,
                    source="proxy",
                    type="tool_call",
                    action="allow",
                    actor_type="user",
                    tool_name="search",
                    metadata={"blob": secrets.token_hex(512)},
                )
        for _ in range(SYSTEM_EVENTS):
            record_event(
                session,
                organization_id=None,
                source="system",
                type="admin",
                action="log",
                actor_type="system",
                operation="test.seed",
            )


@contextmanager
def new_database() -> Iterator[str]:
    """Another empty database owned by igris_owner (scratch_database serves one per test)."""
    admin_url = os.environ["IGRIS_TEST_PG_ADMIN_URL"]
    name = f"restore_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" OWNER igris_owner')
    try:
        direct = make_url(get_settings().direct_url()).set(database=name)
        yield direct.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def object_keys(s3: S3Client, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def open_uploads(s3: S3Client, bucket: str) -> list[str]:
    return [upload["Key"] for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def backup_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, scheduled_for, status, s3_key, size_bytes, sha256, error "
            "FROM backups ORDER BY scheduled_for"
        ).fetchall()


def backup_events(url: str) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT operation, metadata FROM audit_events "
            "WHERE chain_id = 'system' AND operation LIKE 'backup.%' ORDER BY seq"
        ).fetchall()


def fake_pg_dump(folder: Path, script: str) -> Path:
    """A stand-in pg_dump executable (we fake the external binary, not our code)."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "pg_dump"
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return tool


# --------------------------------------------------------------------------- tests


def test_backup_then_restore_reproduces_every_table_and_chain(env: Env) -> None:
    result = run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE)

    key = dump_key(PREFIX, WHEN)
    assert (result.status, result.key) == ("completed", key)
    assert key == "backups/2026/11/29/0300Z.dump"
    assert object_keys(env.s3, env.bucket) == [key, manifest_key(key)]
    dump = env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read()
    raw_manifest = env.s3.get_object(Bucket=env.bucket, Key=manifest_key(key))["Body"].read()
    manifest = Manifest.model_validate_json(raw_manifest)
    assert len(dump) > 4 * PART_SIZE  # the multipart path really ran
    assert (manifest.size_bytes, manifest.sha256) == (len(dump), hashlib.sha256(dump).hexdigest())
    assert (result.size_bytes, result.sha256) == (manifest.size_bytes, manifest.sha256)
    assert manifest.server_version_num >= 170000
    assert manifest.pg_dump_version.startswith("pg_dump (PostgreSQL) 17")
    assert manifest.started_at <= manifest.finished_at
    # Counted in the dump's snapshot: the run's own row is there, its audit event is not.
    assert manifest.tables["organization"] == len(ORGS)
    assert manifest.tables["audit_events"] == len(ORGS) * EVENTS_PER_ORG + SYSTEM_EVENTS
    assert manifest.tables["backups"] == 1
    assert manifest.tables["alembic_version"] == 1
    assert {org: head.seq for org, head in manifest.audit_chains.items()} == {
        **dict.fromkeys(ORGS, EVENTS_PER_ORG),
        "system": SYSTEM_EVENTS,
    }
    [row] = backup_rows(env.url)
    assert row[1:6] == (WHEN, "completed", key, len(dump), manifest.sha256)
    [(operation, metadata)] = backup_events(env.url)
    assert operation == "backup.completed"
    assert metadata["key"] == key
    assert metadata["sha256"] == manifest.sha256
    with session_scope(env.engine) as session:
        assert verify_chain(session, "system").intact

    with new_database() as target:
        report = restore(key, target, s3_client=env.s3)
        text = format_report(report)
        assert report.ok, text
        assert {check.name for check in report.tables} == set(manifest.tables)
        assert {check.chain_id for check in report.chains} == {*ORGS, "system"}
        assert all(check.intact for check in report.chains)
        assert "RESTORE OK" in text
        assert "***" in text
        assert "igris_owner@" not in text
        # The restored database keeps the application role's grants (append-only audit).
        with psycopg.connect(target) as conn:
            granted = conn.execute(
                "SELECT has_table_privilege('igris_app', 'audit_events', 'INSERT'), "
                "has_table_privilege('igris_app', 'audit_events', 'UPDATE'), "
                "has_table_privilege('igris_app', 'policies', 'UPDATE')"
            ).fetchone()
        assert granted == (True, False, True)


def test_restore_from_a_file_reports_every_difference(env: Env, tmp_path: Path) -> None:
    key = run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE).key
    dump = tmp_path / "0300Z.dump"
    dump.write_bytes(env.s3.get_object(Bucket=env.bucket, Key=key)["Body"].read())
    raw = json.loads(env.s3.get_object(Bucket=env.bucket, Key=manifest_key(key))["Body"].read())
    raw["tables"]["organization"] += 1
    raw["audit_chains"]["system"]["seq"] += 1
    (tmp_path / "0300Z.manifest.json").write_text(json.dumps(raw))

    with new_database() as target:
        report = restore(str(dump), target)
    text = format_report(report)
    assert not report.ok
    assert report.dump_ok
    assert [check.name for check in report.tables if not check.ok] == ["organization"]
    assert [check.chain_id for check in report.chains if not check.ok] == ["system"]
    assert "MISMATCH organization: manifest 3, restored 2" in text
    assert "MISMATCH chain system" in text
    assert "RESTORE FAILED: 2 problem(s)" in text


def test_restore_refuses_what_it_cannot_restore(env: Env, tmp_path: Path) -> None:
    key = run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE).key
    with pytest.raises(RestoreError, match="not empty"):
        restore(key, env.url, s3_client=env.s3)
    with new_database() as target:
        lonely = tmp_path / "0300Z.dump"
        lonely.write_bytes(b"PGDMP")
        with pytest.raises(RestoreError, match="no manifest beside the dump"):
            restore(str(lonely), target)
        with pytest.raises(RestoreError, match="could not read the backup"):
            restore("backups/2026/01/01/0300Z.dump", target, s3_client=env.s3)
        with pytest.raises(RestoreError, match="not a backup dump"):
            restore("backups/notes.txt", target, s3_client=env.s3)


def test_the_same_schedule_delivered_twice_makes_one_backup(env: Env) -> None:
    event = json.loads((EVENTS / "backup-scheduled.json").read_text())

    first = handler(event, LocalLambdaContext(timeout_seconds=900))
    second = handler(event, LocalLambdaContext(timeout_seconds=900))

    key = "backups/2026/11/29/0300Z.dump"
    assert (first["status"], first["key"], first["scheduledFor"]) == (
        "completed",
        key,
        "2026-11-29T03:00:00Z",
    )
    assert (second["status"], second["key"], second["sizeBytes"]) == (
        "already_completed",
        key,
        None,
    )
    assert object_keys(env.s3, env.bucket) == [key, manifest_key(key)]
    assert [row[2] for row in backup_rows(env.url)] == ["completed"]
    assert [operation for operation, _ in backup_events(env.url)] == ["backup.completed"]


def test_overlapping_runs_of_one_schedule_write_once(env: Env) -> None:
    def run(_: int) -> str:
        return run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE).status

    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = sorted(pool.map(run, range(3)))

    assert statuses.count("completed") == 1
    assert set(statuses) <= {"completed", "in_progress", "already_completed"}
    key = dump_key(PREFIX, WHEN)
    assert object_keys(env.s3, env.bucket) == [key, manifest_key(key)]
    assert open_uploads(env.s3, env.bucket) == []
    assert [row[2] for row in backup_rows(env.url)] == ["completed"]


@pytest.mark.parametrize(
    ("operation", "failing_call"),
    [("UploadPart", 2), ("CompleteMultipartUpload", 1), ("PutObject", 1)],
    ids=["second-part", "complete", "manifest"],
)
def test_a_failure_mid_upload_leaves_nothing_behind(
    env: Env, operation: str, failing_call: int
) -> None:
    flaky = boto3.client("s3")
    calls = 0

    def fail(**_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise InjectedFailure(f"S3 went away during {operation}")

    flaky.meta.events.register(f"before-call.s3.{operation}", fail)

    with pytest.raises(InjectedFailure):
        run_backup(WHEN, s3_client=flaky, part_size=PART_SIZE)

    assert object_keys(env.s3, env.bucket) == []
    assert open_uploads(env.s3, env.bucket) == []
    [row] = backup_rows(env.url)
    assert row[2] == "failed"
    assert f"InjectedFailure: S3 went away during {operation}" in row[6]
    [(event, metadata)] = backup_events(env.url)
    assert event == "backup.failed"
    assert metadata["key"] == dump_key(PREFIX, WHEN)
    assert "S3 went away" in metadata["error"]

    # Lambda's retry of the same event takes over the failed run and completes it.
    retry = run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE)
    assert retry.status == "completed"
    assert retry.backup_id != row[0]
    assert [r[2] for r in backup_rows(env.url)] == ["completed"]
    assert [event for event, _ in backup_events(env.url)] == ["backup.failed", "backup.completed"]


def test_a_pg_dump_older_than_the_server_is_refused_clearly(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_pg_dump(tmp_path / "bin", 'echo "pg_dump (PostgreSQL) 14.5"\n')
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")

    with pytest.raises(PgDumpTooOld) as refused:
        run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE)

    message = str(refused.value)
    assert str(fake) in message
    assert "is version 14" in message
    assert "pg_dump must be major version 17 or newer" in message
    assert object_keys(env.s3, env.bucket) == []
    assert open_uploads(env.s3, env.bucket) == []
    [row] = backup_rows(env.url)
    assert row[2] == "failed"
    assert "PgDumpTooOld" in row[6]
    assert [event for event, _ in backup_events(env.url)] == ["backup.failed"]


def test_the_password_never_reaches_pg_dumps_command_line(env: Env, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    fake_pg_dump(
        tmp_path / "bin",
        'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 17.10"; exit 0; fi\n'
        f'echo "$@" > "{seen}.argv"\n'
        f'export -p > "{seen}.env"\n'
        'echo "pg_dump: error: connection refused" >&2\n'
        "exit 1\n",
    )

    with pytest.raises(BackupError, match=r"pg_dump failed \(exit status 1\).*connection refused"):
        run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE, bin_dir=tmp_path / "bin")

    argv = Path(f"{seen}.argv").read_text()
    password = make_url(env.url).password
    assert password
    assert "--format=custom" in argv
    assert "--snapshot=" in argv
    assert "password=" not in argv
    assert f":{password}@" not in argv
    child_env = Path(f"{seen}.env").read_text()
    assert f"PGPASSWORD='{password}'" in child_env or f'PGPASSWORD="{password}"' in child_env
    assert "AWS_SECRET_ACCESS_KEY" not in child_env
    assert object_keys(env.s3, env.bucket) == []
    assert open_uploads(env.s3, env.bucket) == []


def test_a_run_out_of_time_stops_pg_dump_and_cleans_up(env: Env, tmp_path: Path) -> None:
    """Lambda kills a run at its timeout; the run stops first, to abort and record why."""
    fake_pg_dump(
        tmp_path / "bin",
        'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 17.10"; exit 0; fi\n'
        "printf PGDMP\n"
        "exec sleep 30\n",
    )

    started = time.monotonic()
    with pytest.raises(BackupError, match="about to exceed its time limit"):
        run_backup(WHEN, s3_client=env.s3, bin_dir=tmp_path / "bin", time_limit=1.0)

    assert time.monotonic() - started < 10
    assert open_uploads(env.s3, env.bucket) == []
    assert object_keys(env.s3, env.bucket) == []
    assert [row[2] for row in backup_rows(env.url)] == ["failed"]
    assert [event for event, _ in backup_events(env.url)] == ["backup.failed"]


def test_retention_deletes_only_old_backups(env: Env) -> None:
    old = [
        "backups/2026/10/01/0300Z.dump",
        "backups/2026/10/01/0300Z.manifest.json",
        "backups/2026/10/24/0259Z.dump",  # 35 days and one minute before the run
    ]
    kept = [
        "backups/2026/10/25/0300Z.dump",  # exactly 35 days: not older than retention
        "backups/2026/11/28/0300Z.dump",
        "backups/2026/10/01/0300Z.dump.bak",
        "backups/2020/13/01/0300Z.dump",  # no such month: not a key we wrote
        "backups/notes.txt",
        "backupsX/2020/01/01/0300Z.dump",
        "other/2020/01/01/0300Z.dump",
    ]
    for key in old + kept:
        env.s3.put_object(Bucket=env.bucket, Key=key, Body=b"x")

    result = run_backup(WHEN, s3_client=env.s3, part_size=PART_SIZE)

    assert sorted(result.pruned) == sorted(old)
    new = [dump_key(PREFIX, WHEN), manifest_key(dump_key(PREFIX, WHEN))]
    assert object_keys(env.s3, env.bucket) == sorted(kept + new)


def test_scheduled_times() -> None:
    assert scheduled_time_of({"time": "2026-11-29T03:00:42.5Z"}) == WHEN
    assert scheduled_time_of({"time": "2026-11-29T05:00:00+02:00"}) == WHEN
    now = datetime.now(UTC)
    assert now - timedelta(minutes=1) <= scheduled_time_of({}) <= now
    with pytest.raises(BackupError, match="no timezone"):
        scheduled_time_of({"time": "2026-11-29T03:00:00"})
    with pytest.raises(BackupError, match="invalid time"):
        scheduled_time_of({"time": "yesterday"})


def test_a_scheduled_time_in_the_future_is_refused(env: Env) -> None:
    """Retention counts back from the scheduled time: a far-future one would prune all."""
    with pytest.raises(BackupError, match="in the future"):
        run_backup(datetime.now(UTC) + timedelta(days=1), s3_client=env.s3)
    assert backup_rows(env.url) == []


def test_the_password_leaves_the_conninfo_and_neon_parameters_stay() -> None:
    url = (
        "postgresql+psycopg://owner:p%40ss%20w@ep-x.us-east-2.aws.neon.tech/neondb"
        "?sslmode=require&channel_binding=require&options=endpoint%3Dep-x"
    )
    conninfo, password = libpq_conninfo(url)
    assert password == "p@ss w"
    assert "p@ss" not in conninfo
    assert conninfo_to_dict(conninfo) == {
        "user": "owner",
        "host": "ep-x.us-east-2.aws.neon.tech",
        "dbname": "neondb",
        "sslmode": "require",
        "channel_binding": "require",
        "options": "endpoint=ep-x",
    }
