"""Finding and running the PostgreSQL client programs (pg_dump, pg_restore).

Deliberately small and free of local tooling: functions may not import `igris`, so the
Lambda layer's /opt/bin, an explicit directory or PATH is all there is. `igris` passes
its bundled PostgreSQL 17 directory explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: Where the pg tools layer puts its executables in Lambda (libraries in /opt/lib).
LAYER_BIN_DIR: Final = Path("/opt/bin")
#: libpq's connect timeout for the tools (a dead host fails fast instead of hanging).
CONNECT_TIMEOUT_SECONDS: Final = 10

_PG_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_URL_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")


class PgToolError(RuntimeError):
    """A PostgreSQL program is missing or unusable."""


def find_pg_tool(name: str, bin_dir: Path | None = None) -> Path:
    """A PostgreSQL client program: from `bin_dir` if given, else the Lambda layer's
    /opt/bin, else PATH. Deliberately small: functions cannot import the local tooling."""
    if bin_dir is not None:
        candidate = bin_dir / name
        if not os.access(candidate, os.X_OK):
            raise PgToolError(f"{name} not found (or not executable) in {bin_dir}")
        return candidate
    layer = LAYER_BIN_DIR / name
    if os.access(layer, os.X_OK):
        return layer
    found = shutil.which(name)
    if found is None:
        raise PgToolError(f"{name} not found in {LAYER_BIN_DIR} nor on PATH")
    return Path(found)


def tool_version(tool: Path) -> tuple[str, int]:
    """`(version line, major version)` of a PostgreSQL program, from `--version`."""
    result = subprocess.run(
        [str(tool), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=tool_env(tool),
    )
    line = result.stdout.strip()
    match = _PG_VERSION.search(line)
    if result.returncode != 0 or match is None:
        detail = (result.stderr or result.stdout).strip()[-500:]
        raise PgToolError(f"could not tell the version of {tool}: {detail or 'no output'}")
    return line, int(match.group(1))


def tool_env(
    tool: Path, *, password: str | None = None, application_name: str = "igris"
) -> dict[str, str]:
    """The whole environment of a pg tool, built from scratch.

    Nothing is inherited, so no stray `PG*` variable can redirect it and the password
    reaches only this child. A bundled tool's own `lib/` (the layer's /opt/lib) is its
    library path. (No HOME either: use `sslmode=require`, or `sslrootcert=system` with
    `verify-full`, rather than ~/.postgresql.)
    """
    env = {"PGAPPNAME": application_name, "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_SECONDS)}
    lib = tool.resolve().parent.parent / "lib"
    if (lib / "libpq.so.5").exists():
        env["LD_LIBRARY_PATH"] = str(lib)
    if password:
        env["PGPASSWORD"] = password
    return env


def libpq_conninfo(url: str) -> tuple[str, str | None]:
    """A database URL as a libpq conninfo string without the password, and the password.

    libpq parses the URL itself (so every query parameter, e.g. Neon's `sslmode` and
    `options=endpoint=…`, keeps its exact meaning); only a SQLAlchemy driver suffix
    (`postgresql+psycopg://`) is dropped first.
    """
    params = conninfo_to_dict(_URL_SCHEME.sub("postgresql://", url))
    password = params.pop("password", None)
    return make_conninfo("", **params), None if password is None else str(password)
