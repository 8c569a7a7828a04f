"""Backup of a database with ~100 MB, then ~1 GB, of audit events: time, MB/s, peak memory.

Runs against the database in DATABASE_URL_UNPOOLED (scripts/bench starts a throwaway
PostgreSQL 17), migrated first. For each size in turn, audit_events is grown to that size
(`pg_total_relation_size`: heap, TOAST and indexes) with `INSERT ... SELECT
generate_series` as the owner role and vacuumed, then backed up by `run_backup` (the
backup function's code path: pg_dump 17 from IGRIS_TEST_PG_BINDIR streamed into a
multipart upload in 5 MiB parts) in a fresh Python process, so that its peak RSS is the
backup's own. S3 is a moto server in a process of its own: its memory is not counted, but
it shares the CPUs (and its CompleteMultipartUpload copies the whole object in memory).

The rows are synthetic: realistic widths, but hashes that do not form a valid chain (and
no chain head) -- fine for a size benchmark, not for a restore check.

Memory: the child's RSS right after importing the backup function (the baseline), its
peak RSS over the whole process (VmHWM: imports and S3 client included), and pg_dump's
peak RSS (its VmHWM, sampled every 10 ms) -- not ru_maxrss, which after exec still counts
the pages of the parent a process was spawned from. Streaming means the peak does not grow
with the database. Targets: the same peak memory at every size (within a few MB), and
~1 GB backed up well within half of Lambda's 15-minute limit (450 s).

Sizes in MB (2**20 bytes), comma-separated, from IGRIS_BENCH_BACKUP_MB (default
"100,1000"). A step is skipped when the disk holding the cluster has less than 5 MB free
per MB of the size (5 GB for 1 GB). The rows stay in the database (audit_events refuses
DELETE and TRUNCATE), so this benchmark runs last.

Run: `scripts/bench backup` (quick: `IGRIS_BENCH_BACKUP_MB=20,100 scripts/bench backup`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import boto3
import psycopg

ROOT = Path(__file__).resolve().parents[1]
SIZES_VARIABLE = "IGRIS_BENCH_BACKUP_MB"
DEFAULT_SIZES = "100,1000"
MIB = 1024 * 1024
#: Free disk a step needs per MB of table (the table, its WAL, moto's copy of the dump).
FREE_BYTES_PER_MB = 5_000_000
TARGET_SECONDS = 450.0  # half of Lambda's 15-minute limit
MEMORY_TOLERANCE_MB = 5.0
CHAIN = "org_bench_backup"
BUCKET = "igris-bench-backups"
FIRST_BATCH = 20_000
MAX_BATCH = 400_000
CHILD_TIMEOUT = 1800
MARKER = "@@IGRIS-BENCH@@"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

FILL: LiteralString = """
INSERT INTO audit_events (
    id, chain_id, organization_id, seq, occurred_at, recorded_at, source, type, action,
    operation, tool_name, server_id, session_id, actor_type, actor_id, trace_id,
    latency_ms, outcome, metadata, prev_hash, hash
)
SELECT
    'evt_bench_' || g, %(chain)s, %(chain)s, g,
    now() - make_interval(secs => (%(last)s - g) / 10.0), now(),
    'proxy', 'tool_call', (ARRAY['allow', 'deny', 'redact', 'log'])[1 + g %% 4],
    'tools/call', 'search_docs_' || (g %% 37), 'srv_bench_' || (g %% 5),
    'ses_bench_' || (g / 50), 'api_key', 'key_bench_' || (g %% 11), md5('trace' || g),
    g %% 900, 'ok',
    jsonb_build_object(
        'arguments', jsonb_build_object(
            'query', 'customer record ' || (g %% 9973), 'limit', g %% 50),
        'client', 'bench-agent/1.0',
        'note', md5(random()::text) || md5(random()::text)
    ),
    md5((g - 1)::text) || md5((g - 1)::text), md5(g::text) || md5(g::text)
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g
"""

# Runs in the fresh child: imports what the Lambda runtime imports, then backs up once.
# Peaks are VmHWM from /proc (the Python process's own; pg_dump's sampled while it runs),
# not ru_maxrss: after exec, a process's ru_maxrss (and so RUSAGE_CHILDREN) still counts
# the pages of the process it was spawned from.
CHILD = r"""
import json, subprocess, sys, threading, time
from datetime import datetime
from pathlib import Path

import functions.backup.main
from functions.backup.service import run_backup

def status_mb(field, pid="self"):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

baseline = status_mb("VmRSS:")
spawned, peaks, done = [], {}, threading.Event()

class Watched(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        spawned.append(self)

def watch():
    while not done.wait(0.01):
        for process in [p for p in spawned if p.returncode is None]:
            try:
                with open(f"/proc/{process.pid}/status") as status:
                    fields = dict(line.split(":", 1) for line in status if ":" in line)
            except OSError:
                continue
            if fields.get("Name", "").strip() == "pg_dump" and "VmHWM" in fields:
                kib = int(fields["VmHWM"].split()[0])
                peaks[process.pid] = max(peaks.get(process.pid, 0), kib)

subprocess.Popen = Watched
watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
started = time.perf_counter()
result = run_backup(datetime.fromisoformat(sys.argv[1]), bin_dir=Path(sys.argv[2]))
seconds = time.perf_counter() - started
done.set()
watcher.join()
report = {
    "status": result.status,
    "size_bytes": result.size_bytes,
    "seconds": seconds,
    "baseline_mb": baseline,
    "peak_mb": status_mb("VmHWM:"),
    "pg_dump_mb": max(peaks.values(), default=0) / 1024,
}
sys.stdout.write("\n" + sys.argv[3] + json.dumps(report) + "\n")
"""


@dataclass(frozen=True)
class Measurement:
    """One backup of audit_events at one size (MB are 2**20 bytes)."""

    target_mb: int
    table_mb: float
    database_mb: float
    rows: int
    dump_mb: float
    seconds: float
    baseline_mb: float
    peak_mb: float
    pg_dump_mb: float

    @property
    def mb_per_second(self) -> float:
        return self.table_mb / self.seconds


def requested_sizes() -> list[int]:
    raw = os.environ.get(SIZES_VARIABLE, DEFAULT_SIZES)
    try:
        sizes = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] <= 0:
        raise SystemExit(f"{SIZES_VARIABLE}={raw!r}: expected MB sizes such as 100,1000")
    return sizes


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL (`postgresql+psycopg://...`) as libpq takes it."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def scalar(conn: psycopg.Connection[Any], query: LiteralString, *params: object) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def table_bytes(conn: psycopg.Connection[Any]) -> int:
    return int(scalar(conn, "SELECT pg_total_relation_size('audit_events')"))


def data_directory(conn: psycopg.Connection[Any]) -> Path:
    """The cluster's directory (a superuser setting), else the temporary directory."""
    admin_url = os.environ.get("IGRIS_TEST_PG_ADMIN_URL")
    try:
        if admin_url:
            with psycopg.connect(libpq_url(admin_url), autocommit=True) as admin:
                return Path(str(scalar(admin, "SHOW data_directory")))
        return Path(str(scalar(conn, "SHOW data_directory")))
    except psycopg.Error:
        return Path(tempfile.gettempdir())


def grow(conn: psycopg.Connection[Any], target_bytes: int) -> int:
    """Insert synthetic rows until audit_events takes `target_bytes`; the rows inserted."""
    last = int(
        scalar(conn, "SELECT coalesce(max(seq), 0) FROM audit_events WHERE chain_id = %s", CHAIN)
    )
    size, inserted, per_row = table_bytes(conn), 0, 0.0
    while size < target_bytes:
        batch = FIRST_BATCH
        if per_row > 0:
            batch = max(1_000, min(MAX_BATCH, math.ceil((target_bytes - size) / per_row * 1.01)))
        conn.execute(FILL, {"chain": CHAIN, "first": last + 1, "last": last + batch})
        last, inserted = last + batch, inserted + batch
        after = table_bytes(conn)
        if after > size:
            per_row = (after - size) / batch
        size = after
    conn.execute("VACUUM (ANALYZE) audit_events")
    return inserted


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in its own process; its endpoint URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    script = Path(sys.executable).parent / "moto_server"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]
    process = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def backup_in_child(endpoint: str, when: datetime, bin_dir: str) -> dict[str, Any]:
    """Run one backup in a fresh Python process; its report."""
    env = {
        **os.environ,
        **S3_CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "BACKUP_BUCKET": BUCKET,
        "BACKUP_PREFIX": "bench",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, when.isoformat(), bin_dir, MARKER],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0 or MARKER not in completed.stdout:
        detail = (completed.stderr or completed.stdout).strip()[-3000:]
        raise RuntimeError(f"the backup failed (exit status {completed.returncode}):\n{detail}")
    report: dict[str, Any] = json.loads(completed.stdout.rsplit(MARKER, 1)[1])
    if report["status"] != "completed":
        raise RuntimeError(f"the backup did not run: {report['status']}")
    return report


def measure(
    conn: psycopg.Connection[Any], endpoint: str, bin_dir: str, size_mb: int, when: datetime
) -> Measurement:
    started = time.perf_counter()
    inserted = grow(conn, size_mb * MIB)
    rows = int(scalar(conn, "SELECT count(*) FROM audit_events"))
    print(
        f"  filled audit_events to {size_mb} MB: +{inserted:,} rows ({rows:,} in all) "
        f"in {time.perf_counter() - started:.0f} s; backing up...",
        flush=True,
    )
    report = backup_in_child(endpoint, when, bin_dir)
    return Measurement(
        target_mb=size_mb,
        table_mb=table_bytes(conn) / MIB,
        database_mb=int(scalar(conn, "SELECT pg_database_size(current_database())")) / MIB,
        rows=rows,
        dump_mb=int(report["size_bytes"]) / MIB,
        seconds=float(report["seconds"]),
        baseline_mb=float(report["baseline_mb"]),
        peak_mb=float(report["peak_mb"]),
        pg_dump_mb=float(report["pg_dump_mb"]),
    )


def print_table(results: list[Measurement]) -> None:
    print(
        f"  {'table MB':>9} {'db MB':>7} {'rows':>10} {'dump MB':>8} {'wall s':>7} "
        f"{'MB/s':>6} {'py base MB':>10} {'py peak MB':>10} {'(+)':>6} {'pg_dump MB':>10}"
    )
    for m in results:
        print(
            f"  {m.table_mb:9.1f} {m.database_mb:7.1f} {m.rows:10,} {m.dump_mb:8.1f} "
            f"{m.seconds:7.1f} {m.mb_per_second:6.1f} {m.baseline_mb:10.1f} {m.peak_mb:10.1f} "
            f"{m.peak_mb - m.baseline_mb:+6.1f} {m.pg_dump_mb:10.1f}"
        )


def print_verdict(results: list[Measurement]) -> None:
    small, large = results[0], results[-1]
    if len(results) > 1:
        python_delta = large.peak_mb - small.peak_mb
        dump_delta = large.pg_dump_mb - small.pg_dump_mb
        same = max(abs(python_delta), abs(dump_delta)) <= MEMORY_TOLERANCE_MB
        print(
            f"  memory, {small.table_mb:.0f} MB -> {large.table_mb:.0f} MB: Python peak "
            f"{python_delta:+.1f} MB, pg_dump peak {dump_delta:+.1f} MB -> "
            f"{'constant (streaming): target met' if same else 'grows: target MISSED'} "
            f"(tolerance {MEMORY_TOLERANCE_MB:.0f} MB)"
        )
    if large.target_mb == 1000:
        seconds, how = large.seconds, "measured"
    else:
        seconds = 1000 / large.mb_per_second
        how = f"extrapolated from {large.target_mb} MB at {large.mb_per_second:.1f} MB/s"
    verdict = "target met" if seconds <= TARGET_SECONDS else "target MISSED"
    print(
        f"  time for ~1 GB ({how}): {seconds:.0f} s vs target {TARGET_SECONDS:.0f} s "
        f"(half of Lambda's 900 s limit) -> {verdict}"
    )


def main() -> None:
    url = os.environ.get("DATABASE_URL_UNPOOLED")
    bin_dir = os.environ.get("IGRIS_TEST_PG_BINDIR")
    if not url or not bin_dir:
        print("backup: needs DATABASE_URL_UNPOOLED and IGRIS_TEST_PG_BINDIR (scripts/bench)")
        return
    sizes = requested_sizes()
    from functions.migrate.migrator import run_migrations

    run_migrations(url)
    print(
        f"backup of audit_events (synthetic rows, not a valid hash chain) with run_backup in "
        f"a fresh Python {sys.version.split()[0]} process, pg_dump 17 into moto S3 "
        f"(5 MiB parts); sizes {', '.join(map(str, sizes))} MB (${SIZES_VARIABLE})"
    )
    results: list[Measurement] = []
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with moto_server() as endpoint, psycopg.connect(libpq_url(url), autocommit=True) as conn:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket=BUCKET)
        disk = data_directory(conn)
        for index, size_mb in enumerate(sizes):
            free = shutil.disk_usage(disk).free
            if free < size_mb * FREE_BYTES_PER_MB:
                print(
                    f"  skipped {size_mb} MB: {free / 1e9:.1f} GB free on {disk}, "
                    f"{size_mb * FREE_BYTES_PER_MB / 1e9:.1f} GB needed"
                )
                continue
            when = now - timedelta(minutes=len(sizes) - index)
            try:
                results.append(measure(conn, endpoint, bin_dir, size_mb, when))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"  {size_mb} MB failed: {exc}")
                break
    if results:
        print_table(results)
        print_verdict(results)


if __name__ == "__main__":
    main()
