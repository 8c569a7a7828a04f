"""The `igris` command: run Igris locally, migrate, invoke a function's handler.

    igris serve [--host H] [--port P]     every function on one local server
    igris migrate [--revision R]          alembic upgrade on DATABASE_URL_UNPOOLED
    igris invoke FUNCTION EVENT.json      run a Lambda handler with a recorded event
    igris invoke --built FUNCTION EVENT   the same from the `sam build` artifacts (Python 3.12)
    igris db start|stop|url               the local PostgreSQL that serve starts
    igris backup [--time ISO]             a backup now, by the scheduled function's code path
    igris restore SOURCE --target URL     restore a backup (S3 key or file) and verify it
    igris rotate-credentials              re-encrypt upstream credentials with the newest key

Without DATABASE_URL, serve, migrate and invoke use a local PostgreSQL kept in
`.local/pgdata` (started for you, migrated, kept across restarts).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HOME = ROOT / ".local"
LOCAL_DB_PORT = int(os.environ.get("IGRIS_LOCAL_DB_PORT", "54329"))
FUNCTIONS = ("auth", "orgs", "policies", "audit", "compliance", "proxy", "migrate", "backup")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igris", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("IGRIS_HOME", DEFAULT_HOME)),
        help="folder for local state: the PostgreSQL data and generated dev secrets",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve every function on one local server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--reload", action="store_true", help="restart on code changes")

    migrate = commands.add_parser("migrate", help="run pending migrations")
    migrate.add_argument("--revision", default="head")

    invoke = commands.add_parser("invoke", help="run a function's handler with a Lambda event")
    invoke.add_argument("function", choices=FUNCTIONS)
    invoke.add_argument("event", type=Path, help="a JSON event file (see events/)")
    invoke.add_argument(
        "--built", action="store_true", help="run the sam build artifact under Python 3.12"
    )

    db = commands.add_parser("db", help="the local PostgreSQL")
    db.add_argument("action", choices=("start", "stop", "url"))

    backup = commands.add_parser("backup", help="run a backup now (pg_dump to BACKUP_BUCKET)")
    backup.add_argument("--time", help="the scheduled time to back up as (default: now)")

    restore = commands.add_parser("restore", help="restore a backup and verify it")
    restore.add_argument("source", help="an S3 key in BACKUP_BUCKET, or a local .dump file")
    restore.add_argument("--target", required=True, help="URL of an empty database")

    commands.add_parser(
        "rotate-credentials",
        help="re-encrypt stored upstream credentials under the first IGRIS_ENCRYPTION_KEY",
    )

    args = parser.parse_args(argv)
    home: Path = args.home
    _logs_to_stderr()
    commands_by_name: dict[str, Callable[[], int]] = {
        "serve": lambda: _serve(home, args.host, args.port, reload=args.reload),
        "migrate": lambda: _migrate(home, args.revision),
        "invoke": lambda: _invoke(home, args.function, args.event, built=args.built),
        "db": lambda: _db(home, args.action),
        "backup": lambda: _backup(home, args.time),
        "restore": lambda: _restore(args.source, args.target),
        "rotate-credentials": lambda: _rotate(home),
    }
    return commands_by_name[args.command]()


def _migrate(home: Path, revision: str) -> int:
    started = _prepare_environment(home, migrate=False)
    from functions.migrate.migrator import run_migrations

    try:
        print(json.dumps(run_migrations(revision=revision).as_dict()))
    finally:
        if started is not None:
            started.stop()
    return 0


def _backup(home: Path, when: str | None) -> int:
    from functions.backup.pgtools import PgToolError
    from functions.backup.service import BackupError, run_backup, scheduled_time_of
    from igris.localdb import bin_dir

    started = _prepare_environment(home, migrate=False)
    try:
        result = run_backup(scheduled_time_of({"time": when} if when else {}), bin_dir=bin_dir())
    except (BackupError, PgToolError) as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if started is not None:
            started.stop()
    print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0


def _rotate(home: Path) -> int:
    from shared.config import get_settings
    from shared.credentials import rotate_credentials
    from shared.db import make_engine, session_scope

    started = _prepare_environment(home, migrate=False)
    try:
        engine = make_engine(get_settings().direct_url())
        with session_scope(engine) as session:
            result = rotate_credentials(session)
        engine.dispose()
    finally:
        if started is not None:
            started.stop()
    print(json.dumps({"rotated": result.rotated, "alreadyCurrent": result.already_current}))
    return 0


def _restore(source: str, target: str) -> int:
    from functions.backup.pgtools import PgToolError
    from igris.restore import RestoreError, format_report, restore

    try:
        report = restore(source, target)
    except (RestoreError, PgToolError) as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    return 0 if report.ok else 1


def _logs_to_stderr() -> None:
    """The command's output is its result (JSON, a report); its logs go to stderr."""
    from shared.logs import logger

    handler = logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(sys.stderr)


def _serve(home: Path, host: str, port: int, *, reload: bool) -> int:
    try:
        import uvicorn
    except ImportError:
        print("igris serve needs the local extras: pip install -e '.[local]'", file=sys.stderr)
        return 2
    started = _prepare_environment(home, migrate=True)
    print(f"Igris is serving every function on http://{host}:{port}", file=sys.stderr)
    try:
        uvicorn.run(
            "igris.gateway:LocalGateway",
            factory=True,
            host=host,
            port=port,
            lifespan="off",
            reload=reload,
            reload_dirs=[str(ROOT / "shared"), str(ROOT / "functions")] if reload else None,
            log_level="info",
        )
    finally:
        if started is not None:
            started.stop()  # the data stays in the home folder for the next run
    return 0


_PLACEHOLDER = re.compile(r"\{\{([A-Z][A-Z0-9_]*)\}\}")


def _filled_event(event_path: Path) -> str:
    """The event file's text with `{{NAME}}` placeholders (e.g. `{{IGRIS_API_KEY}}` in the
    Authorization header of the recorded API events) taken from the environment."""
    raw = event_path.read_text(encoding="utf-8")
    missing = sorted({name for name in _PLACEHOLDER.findall(raw) if name not in os.environ})
    if missing:
        raise SystemExit(
            f"{event_path} needs {', '.join(missing)} in the environment "
            "(IGRIS_API_KEY: a key of your organization, from POST /api/v1/api-keys)"
        )
    return _PLACEHOLDER.sub(lambda match: json.dumps(os.environ[match[1]])[1:-1], raw)


def _invoke(home: Path, function: str, event_path: Path, *, built: bool) -> int:
    from igris.lambda_context import LocalLambdaContext

    filled = _filled_event(event_path)
    event = json.loads(filled)
    started = _prepare_environment(home, migrate=function != "migrate")
    try:
        if built:
            from igris.built import BuiltInvokeError, invoke_built

            with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as file:
                file.write(filled)
                file.flush()
                try:
                    result = invoke_built(function, Path(file.name), env=dict(os.environ))
                except BuiltInvokeError as exc:
                    print(str(exc), file=sys.stderr)
                    return 1
        else:
            module = importlib.import_module(f"functions.{function}.main")
            context = LocalLambdaContext(function_name=f"igris-{function}")
            result = module.handler(event, context)
    finally:
        if started is not None:
            started.stop()
    print(json.dumps(result, indent=2, default=str))
    return 0


def _db(home: Path, action: str) -> int:
    database = _local_postgres(home)
    if action == "start":
        database.ensure_started()
        database.create_database("igris")
        print(database.url("igris_owner", "igris"))
    elif action == "stop":
        database.stop()
    else:
        print(database.url("igris_owner", "igris"))
    return 0


def _local_postgres(home: Path) -> Any:
    """The local cluster in `<home>/pgdata`.

    As root, PostgreSQL runs as an unprivileged OS user; when that user cannot reach the
    home (a checkout under /root, say), the data lives in /var/lib/igris instead.
    """
    import hashlib

    from igris.localdb import LocalPostgres, reachable_by_service_user

    data_dir = home / "pgdata"
    if not reachable_by_service_user(home):
        digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
        data_dir = Path("/var/lib/igris") / f"pgdata-{digest}"
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.parent.chmod(0o755)
    return LocalPostgres(data_dir=data_dir, port=LOCAL_DB_PORT)


def _prepare_environment(home: Path, *, migrate: bool) -> Any:
    """Local defaults: settings for a developer machine, and a database when none is set.

    With DATABASE_URL unset, start (or reuse) the local PostgreSQL, point DATABASE_URL at it
    as the application role and DATABASE_URL_UNPOOLED as the owner, and migrate it. Returns
    the local PostgreSQL when this call started it (the caller stops it), else None.
    """
    started = None
    os.environ.setdefault("IGRIS_ENV", "local")
    for name, value in _dev_secrets(home).items():
        os.environ.setdefault(name, value)
    if not os.environ.get("DATABASE_URL"):
        database = _local_postgres(home)
        if database.ensure_started():
            started = database
        database.create_database("igris")
        os.environ["DATABASE_URL"] = database.url("igris_app_user", "igris")
        os.environ["DATABASE_URL_UNPOOLED"] = database.url("igris_owner", "igris")
        migrate = True
    from shared.config import get_settings

    get_settings.cache_clear()
    if migrate:
        from functions.migrate.migrator import run_migrations

        run_migrations()
    return started


def _dev_secrets(home: Path) -> dict[str, str]:
    """Random IGRIS_SECRET / IGRIS_ENCRYPTION_KEY for this machine, made once and kept."""
    path = home / "dev-secrets.json"
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, dict):
            return {str(k): str(v) for k, v in stored.items()}
    values = {
        "IGRIS_SECRET": secrets.token_urlsafe(48),
        "IGRIS_ENCRYPTION_KEY": "dev:" + secrets.token_urlsafe(32),
    }
    home.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(values, indent=2), encoding="utf-8")
    return values


if __name__ == "__main__":
    raise SystemExit(main())
