"""The migrate function: concurrent runs, direct invokes and CloudFormation custom resources."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from functions.migrate.main import handler
from functions.migrate.migrator import MIGRATION_LOCK_KEY, head_revision
from igris.lambda_context import LocalLambdaContext
from shared.config import get_settings

EVENTS = Path(__file__).resolve().parents[3] / "events"


@pytest.fixture
def direct_url(scratch_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the function at an empty database, as a fresh deployment would."""
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", scratch_database)
    get_settings.cache_clear()
    yield scratch_database
    monkeypatch.undo()
    get_settings.cache_clear()


def versions(url: str) -> list[tuple[str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchall()


def test_five_concurrent_invocations_on_an_empty_database(direct_url: str) -> None:
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda _: handler({}, LocalLambdaContext()), range(5)))
    head = head_revision()
    assert all(result["after"] == head for result in results)
    assert sum(1 for result in results if result["changed"]) == 1
    assert versions(direct_url) == [(head,)]


@dataclass
class CloudFormationEndpoint:
    """Stands in for CloudFormation's pre-signed response URL."""

    url: str
    responses: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def cloudformation() -> Iterator[CloudFormationEndpoint]:
    endpoint = CloudFormationEndpoint(url="")

    class Receiver(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            endpoint.responses.append(json.loads(self.rfile.read(length)))
            endpoint.received.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    endpoint.url = f"http://127.0.0.1:{server.server_port}/cfn-response?signed=1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    server.shutdown()
    server.server_close()


def cfn_event(name: str, endpoint: CloudFormationEndpoint) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    event["ResponseURL"] = endpoint.url
    return event


@pytest.mark.parametrize("request_type", ["create", "update"])
def test_create_and_update_migrate_and_answer_success(
    direct_url: str, cloudformation: CloudFormationEndpoint, request_type: str
) -> None:
    event = cfn_event(f"migrate-cfn-{request_type}.json", cloudformation)
    result = handler(event, LocalLambdaContext(timeout_seconds=60))
    assert result == {"status": "SUCCESS"}
    (response,) = cloudformation.responses
    assert response["Status"] == "SUCCESS"
    assert response["RequestId"] == event["RequestId"]
    assert response["StackId"] == event["StackId"]
    assert response["LogicalResourceId"] == event["LogicalResourceId"]
    assert response["PhysicalResourceId"]
    assert response["Data"]["after"] == head_revision()
    assert versions(direct_url) == [(head_revision(),)]


def test_delete_does_nothing_and_answers_success(
    direct_url: str, cloudformation: CloudFormationEndpoint
) -> None:
    event = cfn_event("migrate-cfn-delete.json", cloudformation)
    assert handler(event, LocalLambdaContext()) == {"status": "SUCCESS"}
    assert cloudformation.responses[0]["Status"] == "SUCCESS"
    with psycopg.connect(direct_url) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)


def test_a_failed_migration_answers_failed(
    cloudformation: CloudFormationEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "postgresql://igris_owner:wrong@127.0.0.1:1/igris")
    get_settings.cache_clear()
    try:
        result = handler(cfn_event("migrate-cfn-create.json", cloudformation), LocalLambdaContext())
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert result == {"status": "FAILED"}
    (response,) = cloudformation.responses
    assert response["Status"] == "FAILED"
    assert "migration failed" in response["Reason"]
    assert "wrong" not in response["Reason"]  # no password in what CloudFormation shows


def test_running_out_of_time_answers_failed_before_the_timeout(
    direct_url: str, cloudformation: CloudFormationEndpoint
) -> None:
    """Another run holds the lock; the function answers FAILED before Lambda would kill it."""
    with psycopg.connect(direct_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        event = cfn_event("migrate-cfn-create.json", cloudformation)
        context = LocalLambdaContext(timeout_seconds=6.5)  # answers at ~1.5 s
        worker = threading.Thread(target=handler, args=(event, context))
        worker.start()
        assert cloudformation.received.wait(timeout=10)
        blocker.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    worker.join(timeout=30)
    assert [r["Status"] for r in cloudformation.responses] == ["FAILED"]
    assert "timed out" in cloudformation.responses[0]["Reason"]


def test_direct_invoke_reports_what_changed(direct_url: str) -> None:
    first = handler(json.loads((EVENTS / "migrate-direct.json").read_text()), None)
    second = handler({}, None)
    assert first == {"before": None, "after": head_revision(), "changed": True}
    assert second["changed"] is False


def test_rollback_update_for_another_version_is_acknowledged_without_migrating(
    direct_url: str, cloudformation: CloudFormationEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")
    get_settings.cache_clear()
    event = cfn_event("migrate-cfn-update.json", cloudformation)
    event["ResourceProperties"]["MigrateFunctionVersion"] = (
        "arn:aws:lambda:us-east-1:123456789012:function:igris-migrate:6"
    )
    assert handler(event, LocalLambdaContext()) == {"status": "SUCCESS"}
    assert "skipped" in cloudformation.responses[0]["Reason"]
    with psycopg.connect(direct_url) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)

    cloudformation.responses.clear()
    event["ResourceProperties"]["MigrateFunctionVersion"] = (
        "arn:aws:lambda:us-east-1:123456789012:function:igris-migrate:7"
    )
    assert handler(event, LocalLambdaContext()) == {"status": "SUCCESS"}
    assert cloudformation.responses[0]["Reason"] == "migrated"
    assert versions(direct_url) == [(head_revision(),)]
