"""The backup: `pg_dump --format=custom` of the direct URL, streamed into S3, with a manifest.

Why it is built this way:

- **One backup per scheduled time.** The `backups` row of that time is claimed with a
  single statement (insert it, or take over a failed run or one that outlived the
  function's timeout); a duplicate delivery or an overlapping run finds the row taken and
  returns successfully without dumping. The key is derived from the scheduled time and the
  upload is completed with `If-None-Match: *`, so not even a run that lost its claim can
  overwrite a backup.
- **Constant memory, no local copy.** pg_dump's stdout goes to S3 part by part (one part
  filling while the previous one uploads): a few parts in memory whatever the size of the
  database, nothing on local disk.
- **Consistent manifest.** Row counts and audit chain heads are read in a REPEATABLE READ
  transaction whose snapshot pg_dump imports (`pg_export_snapshot()` + `--snapshot`), so a
  restore of the dump must reproduce them exactly.
- **All or nothing.** Any failure aborts the multipart upload (or deletes what this run
  already completed), marks the row failed and records `backup.failed` in the same
  transaction, then re-raises so the invocation fails and Lambda's retry takes over the
  failed row.
- **No password on a command line.** pg_dump gets a libpq conninfo without the password,
  which travels in `PGPASSWORD` in the child's environment only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

import boto3
from sqlalchemy import Connection, Engine, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import Session

from functions.backup.manifest import (
    ChainHead,
    Manifest,
    backup_time_of,
    dump_key,
    manifest_key,
)
from functions.backup.pgtools import find_pg_tool, libpq_conninfo, tool_env, tool_version
from functions.backup.upload import StreamingUpload
from shared.audit import record_event
from shared.config import get_settings
from shared.db import make_engine, session_scope
from shared.ids import new_id
from shared.logs import logger
from shared.models.audit_event import AuditChainHead
from shared.models.backup import Backup
from shared.models.base import table_of, utcnow

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: S3's minimum size of every part but the last; tests pass smaller parts to a local S3.
DEFAULT_PART_SIZE: Final = 5 * 1024 * 1024
#: How much of pg_dump's output is read at a time (at most a part).
READ_CHUNK: Final = 1024 * 1024
#: A `running` row older than this belongs to a dead run (the function's timeout is 15
#: minutes; Lambda has killed it by then) and may be taken over.
STALE_AFTER: Final = timedelta(minutes=16)
#: Scheduled times later than now plus this are refused: retention counts back from the
#: scheduled time, so a far-future time would prune every real backup.
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
#: Kept free before a time limit to abort the upload and record the failure.
CLEANUP_MARGIN_SECONDS: Final = 30.0
#: pg_dump gives up instead of queueing forever behind an exclusive lock (a migration).
LOCK_WAIT_TIMEOUT: Final = "60s"
_ERROR_MAX: Final = 2000


class BackupError(RuntimeError):
    """A backup could not be made; the message says why (and never holds a password)."""


class PgDumpTooOld(BackupError):
    """pg_dump's major version is older than the server's: it would refuse to dump."""


@dataclass(frozen=True)
class BackupResult:
    """What one invocation did.

    `completed`: this run wrote the backup. `already_completed`: an earlier delivery of
    the same schedule did. `in_progress`: another run holds the schedule right now.
    """

    status: Literal["completed", "already_completed", "in_progress"]
    scheduled_for: datetime
    key: str
    backup_id: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    pruned: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The invocation's JSON result."""
        return {
            "status": self.status,
            "scheduledFor": self.scheduled_for.isoformat().replace("+00:00", "Z"),
            "key": self.key,
            "backupId": self.backup_id,
            "sizeBytes": self.size_bytes,
            "sha256": self.sha256,
            "pruned": list(self.pruned),
        }


# --------------------------------------------------------------------------- the run


def scheduled_time_of(event: Mapping[str, Any]) -> datetime:
    """The schedule an event stands for: its `time` (EventBridge's scheduled time, or a
    direct invoke's), else now; in UTC, to the minute (the key's resolution)."""
    raw = event.get("time")
    if raw is None:
        moment = utcnow()
    else:
        try:
            moment = datetime.fromisoformat(str(raw))
        except ValueError as exc:
            raise BackupError(f"invalid time {raw!r}: expected ISO 8601") from exc
        if moment.tzinfo is None:
            raise BackupError(f"time {raw!r} has no timezone (e.g. 2026-11-29T03:00:00Z)")
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def run_backup(
    scheduled_for: datetime,
    *,
    s3_client: S3Client | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    bin_dir: Path | None = None,
    time_limit: float | None = None,
) -> BackupResult:
    """Back up the database for one schedule, then prune backups past retention.

    `bin_dir` holds pg_dump (default: the Lambda layer's /opt/bin, else PATH).
    `time_limit` is the number of seconds the run may take (the Lambda's remaining time):
    the dump is stopped early enough to clean up and record the failure.
    """
    settings = get_settings()
    if not settings.backup_bucket:
        raise BackupError("BACKUP_BUCKET is not set")
    if scheduled_for.tzinfo is None:
        raise BackupError("the scheduled time must be timezone-aware")
    when = scheduled_for.astimezone(UTC).replace(second=0, microsecond=0)
    if when > utcnow() + MAX_CLOCK_SKEW:
        raise BackupError(f"the scheduled time {when.isoformat()} is in the future")
    deadline = None if time_limit is None else time.monotonic() + time_limit
    bucket, prefix = settings.backup_bucket, settings.backup_prefix
    key = dump_key(prefix, when)
    s3 = s3_client or default_s3_client()
    direct_url = settings.direct_url()
    conninfo, password = libpq_conninfo(direct_url)
    engine = make_engine(direct_url)
    try:
        claim = _claim(engine, when, key)
        if claim is None:
            status = _status_of(engine, when)
            if status != "completed":
                # Normally an overlapping delivery. A run that died without cleaning up
                # (out of memory) also holds the schedule, until STALE_AFTER.
                logger.warning("another run holds this schedule", extra={"key": key})
                return BackupResult("in_progress", when, key)
            logger.info("backup already completed", extra={"key": key})
            pruned = prune_old_backups(s3, bucket, prefix, when, settings.backup_retention_days)
            return BackupResult("already_completed", when, key, pruned=pruned)
        run = _Run(engine, s3, bucket, key, when, claim, conninfo, password)
        try:
            manifest = _dump(run, part_size, bin_dir, deadline)
            _finish(run, manifest)
        except BaseException as exc:
            _fail(run, exc)
            raise
        logger.info(
            "backup completed",
            extra={"key": key, "size_bytes": manifest.size_bytes, "sha256": manifest.sha256},
        )
        pruned = prune_old_backups(s3, bucket, prefix, when, settings.backup_retention_days)
        return BackupResult(
            "completed", when, key, claim, manifest.size_bytes, manifest.sha256, pruned
        )
    finally:
        engine.dispose()


@functools.cache
def default_s3_client() -> S3Client:
    """The process-wide S3 client (created on first use, reused by a warm Lambda)."""
    return boto3.client("s3")


@dataclass
class _Run:
    """One claimed run: where it writes, and what it has put in S3 so far (so that a
    failure takes back exactly that)."""

    engine: Engine
    s3: S3Client
    bucket: str
    key: str
    when: datetime
    claim: str
    conninfo: str
    password: str | None
    upload: StreamingUpload | None = None
    completed_keys: list[str] = field(default_factory=list)


def _dump(run: _Run, part_size: int, bin_dir: Path | None, deadline: float | None) -> Manifest:
    """Stream the dump to the run's key and write its manifest beside it."""
    pg_dump = find_pg_tool("pg_dump", bin_dir)
    pg_dump_version, pg_dump_major = tool_version(pg_dump)
    started_at = utcnow()
    with _exported_snapshot(run.engine) as snapshot:
        server_major = snapshot.server_version_num // 10000
        if pg_dump_major < server_major:
            raise PgDumpTooOld(
                f"{pg_dump} is version {pg_dump_major} ({pg_dump_version!r}) but the server "
                f"runs PostgreSQL {snapshot.server_version}: pg_dump must be major version "
                f"{server_major} or newer (ship a newer pg tools layer)"
            )
        run.upload = StreamingUpload(run.s3, run.bucket, run.key, part_size)
        command = [
            str(pg_dump),
            "--format=custom",
            f"--snapshot={snapshot.snapshot_id}",
            f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
            "--no-password",
            f"--dbname={run.conninfo}",
        ]
        env = tool_env(pg_dump, password=run.password, application_name="igris-backup")
        size, sha256 = _stream(command, env, run.upload, deadline)
    run.upload.complete()
    run.completed_keys.append(run.key)
    manifest = Manifest(
        key=run.key,
        scheduled_for=run.when,
        started_at=started_at,
        finished_at=utcnow(),
        size_bytes=size,
        sha256=sha256,
        server_version=snapshot.server_version,
        server_version_num=snapshot.server_version_num,
        pg_dump_version=pg_dump_version,
        tables=snapshot.tables,
        audit_chains=snapshot.audit_chains,
    )
    run.s3.put_object(
        Bucket=run.bucket,
        Key=manifest_key(run.key),
        Body=manifest.model_dump_json(indent=2).encode(),
        ContentType="application/json",
        IfNoneMatch="*",
    )
    run.completed_keys.append(manifest_key(run.key))
    return manifest


# --------------------------------------------------------------------------- the run row


def _claim(engine: Engine, when: datetime, key: str) -> str | None:
    """Claim the schedule's run in one statement; the claim's id, or None if taken.

    A new row is inserted; an existing one is taken over only when its run failed or has
    been `running` for longer than a run can live. Taking over gives the row a new id,
    which names this attempt: a run that lost its claim can no longer finalize it.
    """
    backups = table_of(Backup)
    row = insert(backups).values(
        id=new_id("backup"), scheduled_for=when, s3_key=key, status="running", manifest={}
    )
    statement = row.on_conflict_do_update(
        index_elements=[backups.c.scheduled_for],
        set_={
            "id": row.excluded.id,
            "s3_key": row.excluded.s3_key,
            "status": "running",
            "started_at": func.now(),
            "finished_at": None,
            "error": None,
            "size_bytes": None,
            "sha256": None,
            "manifest": {},
        },
        where=or_(
            backups.c.status == "failed",
            and_(backups.c.status == "running", backups.c.started_at < func.now() - STALE_AFTER),
        ),
    ).returning(backups.c.id)
    with session_scope(engine) as session:
        claimed: str | None = session.execute(statement).scalar_one_or_none()
    return claimed


def _status_of(engine: Engine, when: datetime) -> str | None:
    backups = table_of(Backup)
    with session_scope(engine) as session:
        status: str | None = session.execute(
            select(backups.c.status).where(backups.c.scheduled_for == when)
        ).scalar_one_or_none()
    return status


def _finish(run: _Run, manifest: Manifest) -> None:
    """Mark the claimed row completed and record `backup.completed`, in one transaction."""
    backups = table_of(Backup)
    with session_scope(run.engine) as session:
        finished = session.execute(
            update(backups)
            .where(backups.c.id == run.claim, backups.c.status == "running")
            .values(
                status="completed",
                size_bytes=manifest.size_bytes,
                sha256=manifest.sha256,
                manifest=manifest.model_dump(mode="json"),
                finished_at=manifest.finished_at,
            )
            .returning(backups.c.id)
        ).scalar_one_or_none()
        if finished is None:
            raise BackupError(f"the run lost its claim on {run.key} to another run")
        _record(
            session,
            run,
            "backup.completed",
            {"sizeBytes": manifest.size_bytes, "sha256": manifest.sha256},
        )


def _fail(run: _Run, exc: BaseException) -> None:
    """Take back this run's S3 writes, mark the row failed and record `backup.failed`.

    Never raises: the caller re-raises the original error. Objects this run completed are
    deleted unless the row turns out not to be this run's any more (a failure after
    `_finish` committed must not delete a backup the database calls completed); when the
    database cannot be reached they are deleted too, since the row stays `running` and
    the run that takes it over needs the key free.
    """
    error = _redact(f"{type(exc).__name__}: {exc}", run.password)[:_ERROR_MAX]
    logger.error("backup failed", extra={"key": run.key, "error": error})
    if run.upload is not None:
        run.upload.abort()
    still_ours = True
    backups = table_of(Backup)
    try:
        with session_scope(run.engine) as session:
            marked = session.execute(
                update(backups)
                .where(backups.c.id == run.claim, backups.c.status == "running")
                .values(status="failed", error=error, finished_at=utcnow())
                .returning(backups.c.id)
            ).scalar_one_or_none()
            still_ours = marked is not None
            if still_ours:
                _record(session, run, "backup.failed", {"error": error})
    except Exception:
        logger.exception("could not record the backup failure", extra={"key": run.key})
    if still_ours and run.completed_keys:
        try:
            run.s3.delete_objects(
                Bucket=run.bucket,
                Delete={"Objects": [{"Key": k} for k in run.completed_keys], "Quiet": True},
            )
        except Exception:
            logger.exception("could not delete a failed backup's objects", extra={"key": run.key})


def _record(session: Session, run: _Run, operation: str, details: dict[str, Any]) -> None:
    """The run's organization-less audit event, in the caller's transaction."""
    record_event(
        session,
        organization_id=None,
        source="system",
        type="admin",
        action="log",
        actor_type="system",
        operation=operation,
        metadata={
            "backupId": run.claim,
            "bucket": run.bucket,
            "key": run.key,
            "scheduledFor": run.when,
            **details,
        },
    )


def _redact(message: str, secret: str | None) -> str:
    return message.replace(secret, "***") if secret else message


# --------------------------------------------------------------------------- the snapshot


@dataclass(frozen=True)
class _Snapshot:
    """An exported snapshot and what the manifest records from it."""

    snapshot_id: str
    server_version: str
    server_version_num: int
    tables: dict[str, int]
    audit_chains: dict[str, ChainHead]


@contextmanager
def _exported_snapshot(engine: Engine) -> Iterator[_Snapshot]:
    """A read-only REPEATABLE READ transaction, open while pg_dump runs in its snapshot.

    The exporting transaction must outlive pg_dump's import of the snapshot; it sits idle
    meanwhile, hence no idle-in-transaction timeout for it.
    """
    with engine.connect() as connection:
        connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with connection.begin():
            connection.execute(text("SET LOCAL idle_in_transaction_session_timeout = 0"))
            snapshot_id, version, version_num = connection.execute(
                text(
                    "SELECT pg_export_snapshot(), current_setting('server_version'), "
                    "current_setting('server_version_num')::int"
                )
            ).one()
            heads = table_of(AuditChainHead)
            chains = {
                str(chain_id): ChainHead(seq=int(seq), hash=str(head))
                for chain_id, seq, head in connection.execute(
                    select(heads.c.chain_id, heads.c.seq, heads.c.hash)
                )
            }
            yield _Snapshot(
                snapshot_id=str(snapshot_id),
                server_version=str(version),
                server_version_num=int(version_num),
                tables=table_row_counts(connection),
                audit_chains=chains,
            )


def table_row_counts(connection: Connection) -> dict[str, int]:
    """Exact `count(*)` of every table of the public schema (partitions via their parent)."""
    names = connection.execute(
        text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY c.relname"
        )
    ).scalars()
    quote = connection.dialect.identifier_preparer.quote_identifier
    return {
        str(name): int(
            connection.execute(text(f"SELECT count(*) FROM public.{quote(name)}")).scalar_one()
        )
        for name in names.all()
    }


# --------------------------------------------------------------------------- pg_dump


def _stream(
    command: list[str], env: dict[str, str], upload: StreamingUpload, deadline: float | None
) -> tuple[int, str]:
    """Run pg_dump into `upload`; `(size, sha256)` of what it wrote.

    stderr goes to a small temporary file (a pipe nobody reads could fill and stall
    pg_dump). pg_dump is killed when the run reaches its deadline, and always before
    this returns or raises.
    """
    digest = hashlib.sha256()
    size = 0
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)

        def stop() -> None:
            timed_out.set()
            process.kill()

        timer = None
        if deadline is not None:
            timer = threading.Timer(
                max(deadline - CLEANUP_MARGIN_SECONDS - time.monotonic(), 0.0), stop
            )
            timer.daemon = True
            timer.start()
        try:
            stdout: IO[bytes] | None = process.stdout
            assert stdout is not None
            while chunk := stdout.read(min(READ_CHUNK, upload.part_size)):
                digest.update(chunk)
                size += len(chunk)
                upload.write(chunk)
            returncode = process.wait()
        finally:
            if timer is not None:
                timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
        if timed_out.is_set():
            raise BackupError("pg_dump was stopped: the run was about to exceed its time limit")
        if returncode != 0:
            errors.seek(0)
            detail = errors.read().decode(errors="replace").strip()[-_ERROR_MAX:]
            raise BackupError(f"pg_dump failed (exit status {returncode}): {detail}")
    return size, digest.hexdigest()


# --------------------------------------------------------------------------- retention


def prune_old_backups(
    s3: S3Client, bucket: str, prefix: str, scheduled_for: datetime, retention_days: int
) -> tuple[str, ...]:
    """Delete the backup objects scheduled more than `retention_days` before this run.

    Age comes from each key's scheduled time; keys that are not exactly a backup's (see
    `backup_time_of`) are never touched, and neither is anything at or after the cutoff
    (the backup just written included).
    """
    cutoff = scheduled_for - timedelta(days=retention_days)
    deleted: list[str] = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
    )
    for page in pages:
        doomed = []
        for item in page.get("Contents", []):
            when = backup_time_of(prefix, item["Key"])
            if when is not None and when < cutoff:
                doomed.append(item["Key"])
        if not doomed:
            continue
        response = s3.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in doomed], "Quiet": True}
        )
        if response.get("Errors"):
            raise BackupError(f"retention could not delete: {json.dumps(response['Errors'])}")
        deleted.extend(doomed)
    if deleted:
        logger.info("pruned old backups", extra={"count": len(deleted), "cutoff": cutoff})
    return tuple(deleted)
