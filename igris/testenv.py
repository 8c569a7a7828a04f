"""Run a command against a throwaway PostgreSQL 17 (+ PgBouncer) stack.

Usage::

    python -m igris.testenv [--no-pooler] -- <command...>

Starts a fresh cluster in a temporary directory (no fsync, free ports), creates the
database ``igris`` owned by ``igris_owner``, starts PgBouncer in transaction pooling mode
in front of it (unless ``--no-pooler``) and runs the command with:

- ``DATABASE_URL``: ``igris_app_user`` to ``igris`` through PgBouncer (direct with
  ``--no-pooler``), as the deployed functions connect to Neon's pooled endpoint;
- ``DATABASE_URL_UNPOOLED``: ``igris_owner`` to ``igris``, direct (migrations);
- ``IGRIS_TEST_PG_ADMIN_URL``: the ``postgres`` superuser to ``postgres``, direct;
- ``IGRIS_TEST_PG_BINDIR``: the directory of the PostgreSQL 17 executables.

Exits with the command's exit code (128+N when it died of signal N). PgBouncer and
PostgreSQL are stopped and the directory removed in every case, Ctrl-C and SIGTERM
included.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from igris.localdb import (
    APP_ROLE,
    OWNER_ROLE,
    SUPERUSER,
    LocalDatabaseError,
    LocalPostgres,
    give_to_service_user,
)
from igris.pgbouncer import LocalPgBouncer

__all__ = ["DB_NAME", "ThrowawayStack", "free_port", "main", "throwaway_stack"]

#: The application database created in the throwaway cluster.
DB_NAME = "igris"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Interrupted(Exception):
    """A forwarded signal arrived before the command was started."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ThrowawayStack:
    """The running throwaway stack: the cluster and, unless disabled, PgBouncer."""

    postgres: LocalPostgres
    pgbouncer: LocalPgBouncer | None

    def environ(self) -> dict[str, str]:
        """The variables exported to the command."""
        pg = self.postgres
        pooled = self.pgbouncer.url(APP_ROLE, DB_NAME) if self.pgbouncer else None
        return {
            "DATABASE_URL": pooled or pg.url(APP_ROLE, DB_NAME),
            "DATABASE_URL_UNPOOLED": pg.url(OWNER_ROLE, DB_NAME),
            "IGRIS_TEST_PG_ADMIN_URL": pg.url(SUPERUSER, "postgres"),
            "IGRIS_TEST_PG_BINDIR": str(pg.bin_dir),
        }

    def describe(self) -> str:
        """One line saying what runs where."""
        pg = self.postgres
        text = f"PostgreSQL 17 on {pg.host}:{pg.port}"
        if self.pgbouncer:
            text += f", PgBouncer ({self.pgbouncer.pool_mode} pooling) on "
            text += f"{self.pgbouncer.host}:{self.pgbouncer.port}"
        return f"{text}, database {DB_NAME!r}, in {pg.data_dir.parent}"


@contextmanager
def throwaway_stack(*, pooler: bool = True) -> Iterator[ThrowawayStack]:
    """Start a throwaway stack; stop it and delete its directory on exit."""
    root = Path(tempfile.mkdtemp(prefix="igris-testenv-"))
    pg: LocalPostgres | None = None
    bouncer: LocalPgBouncer | None = None
    try:
        give_to_service_user(root)
        pg = LocalPostgres(root / "pgdata", port=free_port(), durable=False)
        pg.ensure_started()
        pg.create_database(DB_NAME)
        if pooler:
            bouncer = LocalPgBouncer(pg, root / "pgbouncer", port=free_port())
            bouncer.start()
        yield ThrowawayStack(pg, bouncer)
    finally:
        try:
            if bouncer is not None:
                bouncer.stop()
        finally:
            try:
                if pg is not None:
                    pg.stop()
            finally:
                shutil.rmtree(root, ignore_errors=True)


def _run_forwarding_signals(command: Sequence[str], env: dict[str, str]) -> int:
    """Run ``command``; forward SIGTERM/SIGHUP (and SIGINT not sent by the terminal)."""
    proc = subprocess.Popen(command, env=env)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if signum == signal.SIGINT:
            count = received.count(signal.SIGINT)
            if count == 1 and _terminal_signals_child():
                return  # Ctrl-C already reached the command (same foreground process group)
            if count > 2:
                proc.kill()
                return
        proc.send_signal(signum)

    _set_handlers(forward)
    code = proc.wait()
    return 128 - code if code < 0 else code


def _terminal_signals_child() -> bool:
    """True when we are in the terminal's foreground process group, so a Ctrl-C
    reached the command (which shares our group) as well as us."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _set_handlers(handler: Callable[[int, FrameType | None], None] | signal.Handlers) -> None:
    """Install ``handler`` for SIGINT/SIGTERM/SIGHUP, except those we inherited ignored
    (e.g. SIGINT in a background job of a non-interactive shell)."""
    for signum in _FORWARDED:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m igris.testenv``."""
    parser = argparse.ArgumentParser(
        prog="python -m igris.testenv",
        description="Run a command against a throwaway PostgreSQL 17 + PgBouncer stack.",
    )
    parser.add_argument(
        "--no-pooler",
        action="store_true",
        help="no PgBouncer: DATABASE_URL points straight at PostgreSQL",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command [args...]")
    args = parser.parse_args(argv)
    command: list[str] = args.command
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("no command given (python -m igris.testenv -- <command...>)")

    # While the stack starts, a first signal is held until it is up (so that it is then
    # torn down in order); a second one interrupts at once. Cleanup always runs.
    pending: list[int] = []

    def defer(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)
        if len(pending) > 1:
            raise _Interrupted(signum)
        os.write(2, b"igris.testenv: signal received, stopping once the stack is up\n")

    _set_handlers(defer)
    try:
        with throwaway_stack(pooler=not args.no_pooler) as stack:
            try:
                if pending:
                    return 128 + pending[0]
                print(f"igris.testenv: started {stack.describe()}", file=sys.stderr, flush=True)
                env = {**os.environ, **stack.environ()}
                return _run_forwarding_signals(command, env)
            except OSError as exc:
                print(f"igris.testenv: cannot run {command[0]!r}: {exc}", file=sys.stderr)
                return 127
            finally:
                # Cleanup must not be cut short by a further signal.
                _set_handlers(signal.SIG_IGN)
    except LocalDatabaseError as exc:
        print(f"igris.testenv: {exc}", file=sys.stderr)
        return 1
    except _Interrupted as exc:
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
