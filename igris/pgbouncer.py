"""A local PgBouncer in transaction pooling mode, like Neon's pooled endpoint.

`LocalPgBouncer` writes a config, an auth file, a log and a pid file into its work
directory and runs ``pgbouncer -d`` in front of a `LocalPostgres`. Every database of
the server is reachable through it (``* = host=... port=...``); the admin console is the
database ``pgbouncer`` for the user ``postgres``.

PgBouncer refuses to run as root: as root it runs as the same OS user as the server
(`igris.localdb.service_user`). When it is missing and we are root, Debian's package is
installed with ``apt-get`` without letting it start the system service (which would
listen on port 6432).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import psycopg
from psycopg.rows import TupleRow

from igris.localdb import (
    APP_ROLE,
    ROLE_PASSWORDS,
    SUPERUSER,
    LocalDatabaseError,
    LocalPostgres,
    as_service_user,
    give_to_service_user,
    service_user,
)

__all__ = ["ADMIN_DB", "LocalPgBouncer", "ensure_pgbouncer_installed", "find_pgbouncer"]

#: The virtual database of PgBouncer's admin console.
ADMIN_DB: Final = "pgbouncer"
_START_TIMEOUT_S: Final = 20
_STOP_TIMEOUT_S: Final = 10
_APT_ENV: Final = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "l"}
_POLICY_RC_D: Final = Path("/usr/sbin/policy-rc.d")

_INSTALL_HINT: Final = (
    "PgBouncer is not installed. Install it with `sudo apt-get install -y pgbouncer` "
    "(Debian/Ubuntu), `sudo dnf install pgbouncer` (Fedora/RHEL) or `brew install "
    "pgbouncer` (macOS); or run `python -m igris.testenv --no-pooler` to test without it."
)


def find_pgbouncer() -> Path | None:
    """The ``pgbouncer`` executable on PATH or in /usr/sbin, or None."""
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    for candidate in (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_pgbouncer_installed() -> Path:
    """Find ``pgbouncer``; when it is missing and we are root, install Debian's package.

    Raises `LocalDatabaseError` with installation instructions when it is missing and
    we are not root (or not on a Debian-like system).
    """
    found = find_pgbouncer()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise LocalDatabaseError(_INSTALL_HINT)
    _apt_install_pgbouncer()
    found = find_pgbouncer()
    if found is None:
        raise LocalDatabaseError("apt-get installed pgbouncer but no executable was found")
    return found


def _apt_install_pgbouncer() -> None:
    env = {**os.environ, **_APT_ENV}
    install = [
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        "pgbouncer",
    ]
    # Keep the package's maintainer scripts from starting the system service
    # (the standard policy-rc.d mechanism; only if no policy is in place already).
    made_policy = False
    if not _POLICY_RC_D.exists():
        _POLICY_RC_D.write_text("#!/bin/sh\n# igris: installing pgbouncer\nexit 101\n")
        _POLICY_RC_D.chmod(0o755)
        made_policy = True
    try:
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 and find_pgbouncer() is None:
            # Most often a stale or empty package list: refresh it once and retry.
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0 and find_pgbouncer() is None:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            raise LocalDatabaseError(
                f"`{shlex.join(install)}` failed ({proc.returncode}):\n{tail}\n{_INSTALL_HINT}"
            )
    finally:
        if made_policy:
            _POLICY_RC_D.unlink(missing_ok=True)
    _stop_system_service()


def _stop_system_service() -> None:
    """Make sure Debian's ``pgbouncer`` service is neither running nor enabled."""
    quiet = subprocess.DEVNULL
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        cmd = ["systemctl", "disable", "--now", "pgbouncer.service"]
    elif Path("/etc/init.d/pgbouncer").is_file():
        cmd = ["/etc/init.d/pgbouncer", "stop"]
    else:
        return
    subprocess.run(cmd, stdout=quiet, stderr=quiet, check=False)


@dataclass
class LocalPgBouncer:
    """A PgBouncer on ``host:port`` pooling connections to ``postgres``.

    Files (``pgbouncer.ini``, ``userlist.txt``, ``pgbouncer.log``, ``pgbouncer.pid``) live
    in ``work_dir``, which is given to the OS user that runs it.
    """

    postgres: LocalPostgres
    work_dir: Path
    port: int
    host: str = "127.0.0.1"
    pool_mode: str = "transaction"
    default_pool_size: int = 3
    max_client_conn: int = 200

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir).absolute()

    # ------------------------------------------------------------------ files

    @property
    def config_file(self) -> Path:
        """The generated ``pgbouncer.ini``."""
        return self.work_dir / "pgbouncer.ini"

    @property
    def auth_file(self) -> Path:
        """The generated ``userlist.txt`` (the users PgBouncer accepts)."""
        return self.work_dir / "userlist.txt"

    @property
    def log_file(self) -> Path:
        """PgBouncer's log."""
        return self.work_dir / "pgbouncer.log"

    @property
    def pid_file(self) -> Path:
        """PgBouncer's pid file (present while it runs)."""
        return self.work_dir / "pgbouncer.pid"

    def config_text(self) -> str:
        """The ``pgbouncer.ini`` this instance runs with."""
        pg = self.postgres
        return "\n".join(
            [
                "[databases]",
                f"* = host={pg.host} port={pg.port}",
                "",
                "[pgbouncer]",
                f"listen_addr = {self.host}",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.auth_file}",
                f"admin_users = {SUPERUSER}",
                f"stats_users = {SUPERUSER}",
                f"pool_mode = {self.pool_mode}",
                "server_reset_query =",
                "ignore_startup_parameters = extra_float_digits,options",
                f"default_pool_size = {self.default_pool_size}",
                f"max_client_conn = {self.max_client_conn}",
                f"logfile = {self.log_file}",
                f"pidfile = {self.pid_file}",
                "",
            ]
        )

    def _auth_text(self) -> str:
        users = {SUPERUSER: "", **ROLE_PASSWORDS}
        return "".join(f'"{user}" "{password}"\n' for user, password in users.items())

    # ------------------------------------------------------------------ lifecycle

    @staticmethod
    def ensure_installed() -> Path:
        """The ``pgbouncer`` executable, installed first when missing (see
        `ensure_pgbouncer_installed`)."""
        return ensure_pgbouncer_installed()

    def pid(self) -> int | None:
        """The pid of the running PgBouncer of this work dir, or None."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"pgbouncer" not in cmdline or str(self.config_file).encode() not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        """True when this work dir's PgBouncer is running."""
        return self.pid() is not None

    def start(self) -> bool:
        """Start PgBouncer (unless already running) and wait until it accepts
        connections. Returns True if this call started it."""
        if self.is_running():
            self._wait_ready()
            return False
        binary = self.ensure_installed()
        give_to_service_user(self.work_dir)
        self._write(self.config_file, self.config_text())
        self._write(self.auth_file, self._auth_text())
        self._write(self.log_file, "", keep=True)
        self.pid_file.unlink(missing_ok=True)
        startup_out = self.work_dir / "startup.out"
        argv = as_service_user([str(binary), "-d", "-q", str(self.config_file)])
        with startup_out.open("w") as out:
            try:
                proc = subprocess.run(
                    argv,
                    cwd="/",
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=_START_TIMEOUT_S,
                    start_new_session=True,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise self._error(f"`{shlex.join(argv)}` failed: {exc}") from None
        if proc.returncode != 0:
            output = startup_out.read_text(errors="replace").strip()
            raise self._error(f"`{shlex.join(argv)}` exited with {proc.returncode}:\n{output}")
        self._wait_ready()
        return True

    def stop(self) -> None:
        """Stop PgBouncer at once (SIGTERM, then SIGKILL); no error if not running."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while self.pid() == pid and _alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients

    def url(self, user: str = APP_ROLE, dbname: str = "igris") -> str:
        """``postgresql://user:password@host:port/dbname`` through PgBouncer."""
        return self.postgres.url(user, dbname, host=self.host, port=self.port)

    def connect(
        self, user: str = APP_ROLE, dbname: str = "igris", **kwargs: Any
    ) -> psycopg.Connection[TupleRow]:
        """A psycopg connection through PgBouncer; prepared statements are off
        (``prepare_threshold=None``) as transaction pooling requires."""
        kwargs.setdefault("prepare_threshold", None)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.url(user, dbname), **kwargs)

    def admin_connect(self) -> psycopg.Connection[TupleRow]:
        """A connection to the admin console (``SHOW POOLS``, ``SHOW CONFIG``...)."""
        return psycopg.connect(
            self.url(SUPERUSER, ADMIN_DB),
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=5,
            cursor_factory=psycopg.ClientCursor,
        )

    def show(self, what: str) -> list[dict[str, Any]]:
        """The rows of the admin command ``SHOW <what>`` as dicts."""
        if not what.replace("_", "").isalnum():
            raise ValueError(f"not a SHOW subject: {what!r}")
        with self.admin_connect() as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [col.name for col in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def show_config(self) -> dict[str, str]:
        """PgBouncer's effective settings (admin ``SHOW CONFIG``): name -> value."""
        return {str(row["key"]): str(row["value"]) for row in self.show("CONFIG")}

    def tail_log(self, lines: int = 30) -> str:
        """The last ``lines`` lines of PgBouncer's log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ internals

    def _write(self, path: Path, text: str, *, keep: bool = False) -> None:
        if not (keep and path.exists()):
            path.write_text(text)
        path.chmod(0o600)
        user = service_user()
        if user is not None:
            shutil.chown(path, user, None)

    def _error(self, message: str) -> LocalDatabaseError:
        tail = self.tail_log()
        if tail:
            message += f"\n--- last lines of {self.log_file} ---\n{tail}"
        return LocalDatabaseError(message)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with self.admin_connect() as conn:
                    conn.execute("SHOW VERSION")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline or (self.pid_file.exists() and not self.pid()):
                    raise self._error(
                        f"PgBouncer does not accept connections on {self.host}:{self.port}: {exc}"
                    ) from None
                time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
