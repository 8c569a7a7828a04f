"""The `igris` command as a newcomer meets it: serve, invoke, migrate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from igris.testenv import free_port
from shared.permissions import Role

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
HEALTH_PATHS = {
    "auth": "/api/auth/_health",
    "orgs": "/api/auth/organization/_health",
    "policies": "/api/v1/policies/_health",
    "audit": "/api/v1/audit-events/_health",
    "compliance": "/api/v1/compliance/_health",
    "proxy": "/proxy/_health",
}


def igris(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "igris.cli", *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@contextmanager
def serving(env: dict[str, str], *extra: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "igris.cli", *extra, "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                httpx.get(f"{base}/proxy/_health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "igris serve did not come up"
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_serve_answers_health_on_every_function_prefix() -> None:
    with serving(os.environ.copy()) as base:
        for function, path in HEALTH_PATHS.items():
            response = httpx.get(base + path)
            assert response.status_code == 200, (path, response.text)
            assert response.json()["function"] == function
        missing = httpx.get(base + "/api/v1/nothing")
        assert missing.status_code == 404
        assert missing.json() == {"message": "Not Found"}  # API Gateway's own answer


@pytest.fixture
def fresh_home() -> Iterator[Path]:
    """A home folder the PostgreSQL service user can reach (pytest's tmp_path is 0700)."""
    home = Path(tempfile.mkdtemp(prefix="igris-home-"))
    home.chmod(0o755)
    yield home
    subprocess.run(
        [sys.executable, "-m", "igris.cli", "--home", str(home), "db", "stop"],
        cwd=ROOT,
        env=os.environ.copy(),
        timeout=60,
        check=False,
    )
    subprocess.run(["rm", "-rf", str(home)], check=False)


def test_serve_without_database_url_starts_a_local_postgres_that_keeps_its_data(
    fresh_home: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_URL")}
    env["IGRIS_LOCAL_DB_PORT"] = str(free_port())
    for key in ("IGRIS_ENV", "IGRIS_SECRET", "IGRIS_ENCRYPTION_KEY"):
        env.pop(key, None)
    with serving(env, "--home", str(fresh_home)) as base:
        for path in HEALTH_PATHS.values():
            assert httpx.get(base + path).status_code == 200
    assert (fresh_home / "pgdata" / "PG_VERSION").read_text().strip() == "17"
    secrets_file = json.loads((fresh_home / "dev-secrets.json").read_text())
    assert set(secrets_file) == {"IGRIS_SECRET", "IGRIS_ENCRYPTION_KEY"}

    url = igris("--home", str(fresh_home), "db", "start", env=env).strip()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO organization (id, name, slug) VALUES ('org_keep', 'k', 'keep')")
    igris("--home", str(fresh_home), "db", "stop", env=env)

    with serving(env, "--home", str(fresh_home)) as base:  # a restart keeps the data
        assert httpx.get(base + "/proxy/_health").status_code == 200
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT slug FROM organization").fetchall() == [("keep",)]


@pytest.mark.parametrize("function", sorted(HEALTH_PATHS))
def test_invoke_runs_a_handler_with_its_sample_event(function: str) -> None:
    output = json.loads(igris("invoke", function, str(EVENTS / f"{function}-health.json")))
    assert output["statusCode"] == 200
    assert json.loads(output["body"])["function"] == function


def test_invoke_migrate_and_migrate_command_are_no_ops_at_head() -> None:
    output = json.loads(igris("invoke", "migrate", str(EVENTS / "migrate-direct.json")))
    assert output["changed"] is False
    assert output["after"]
    assert json.loads(igris("migrate"))["changed"] is False


def committed_owner_key() -> str:
    """An organization with an owner and an admin API key, committed (the invoked handler
    runs in its own process, outside any test transaction)."""
    from shared.db import session_scope
    from tests.factories import make_api_key, make_member, make_org, make_user

    with session_scope() as db:
        org = make_org(db)
        user = make_user(db)
        make_member(db, org, user)
        _, key = make_api_key(db, org, user, Role.ADMIN)
    return key


def test_invoke_fills_the_api_key_into_recorded_api_events(migrated: None) -> None:
    env = {**os.environ, "IGRIS_API_KEY": committed_owner_key()}
    created = json.loads(
        igris("invoke", "policies", str(EVENTS / "policies-create-server.json"), env=env)
    )
    assert created["statusCode"] == 201, created
    assert json.loads(created["body"])["data"]["slug"] == "docs-search"
    listed = json.loads(
        igris("invoke", "policies", str(EVENTS / "policies-list-servers.json"), env=env)
    )
    assert [s["slug"] for s in json.loads(listed["body"])["data"]] == ["docs-search"]
    evaluated = json.loads(
        igris("invoke", "policies", str(EVENTS / "policies-evaluate.json"), env=env)
    )
    assert json.loads(evaluated["body"])["data"]["decision"] == "deny"  # no policy yet


def test_invoke_says_which_placeholder_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "IGRIS_API_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "igris.cli",
            "invoke",
            "policies",
            str(EVENTS / "policies-list-servers.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "IGRIS_API_KEY" in result.stderr


def invoke_body(function: str, event: str, env: dict[str, str]) -> tuple[int, Any]:
    output = json.loads(igris("invoke", function, str(EVENTS / event), env=env))
    return int(output["statusCode"]), json.loads(output["body"])


def test_identity_flows_through_the_handlers_with_sample_events() -> None:
    from tests.factories import unique

    env = {
        **os.environ,
        "IGRIS_EMAIL": f"{unique('ada-')}@example.com",
        "IGRIS_ORG_SLUG": unique("acme-"),
    }
    status, body = invoke_body("auth", "auth-sign-up.json", env)
    assert status == 200, body
    status, body = invoke_body("auth", "auth-sign-in.json", env)
    assert status == 200, body
    env["IGRIS_SESSION_TOKEN"] = body["token"]
    status, body = invoke_body("auth", "auth-get-session.json", env)
    assert body["user"]["email"] == env["IGRIS_EMAIL"]
    status, body = invoke_body("orgs", "orgs-create.json", env)
    assert status == 200, body
    assert body["slug"] == env["IGRIS_ORG_SLUG"]
    status, body = invoke_body("orgs", "orgs-list-members.json", env)
    assert [m["role"] for m in body["members"]] == ["owner"]
    status, body = invoke_body("auth", "auth-create-api-key.json", env)
    assert status == 201, body
    assert body["data"]["key"].startswith("ig_")
