"""The deployable bundle: `sam build` without Docker, then every function's sample event
through its built artifact under Python 3.12 (issue: a packaging mistake fails here)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from igris.built import BUILD_DIR, invoke_built

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
HTTP_FUNCTIONS = ["auth", "orgs", "policies", "audit", "compliance", "proxy"]


@pytest.fixture(scope="module")
def built(migrated: None) -> Path:
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    for step in (["validate", "--lint"], ["build"]):
        result = subprocess.run(
            [str(ROOT / "scripts" / "sam"), *step],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, (step, result.stdout[-3000:], result.stderr[-3000:])
    return BUILD_DIR


def lambda_env(**extra: str) -> dict[str, str]:
    names = (
        "DATABASE_URL",
        "DATABASE_URL_UNPOOLED",
        "IGRIS_SECRET",
        "IGRIS_ENCRYPTION_KEY",
        "IGRIS_ENV",
    )
    return {name: os.environ[name] for name in names if name in os.environ} | extra


def test_the_layer_carries_compiled_code_and_executable_pg_tools(built: Path) -> None:
    layer = built / "SharedLayer" / "python"
    assert (layer / "shared" / "__init__.py").exists()
    assert list((layer / "shared" / "__pycache__").glob("*.cpython-312.pyc"))
    assert not (layer / "pytest").exists()  # dev dependencies stay out of the layer
    for tool in ("pg_dump", "pg_restore"):
        assert os.access(built / "PgToolsLayer" / "bin" / tool, os.X_OK)


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_http_functions_answer_from_their_artifacts(built: Path, function: str) -> None:
    result: dict[str, Any] = invoke_built(
        function, EVENTS / f"{function}-health.json", env=lambda_env(), build_dir=built
    )
    assert result["statusCode"] == 200, result
    assert json.loads(result["body"]) == {"status": "ok", "function": function, "database": "ok"}


def test_migrate_answers_from_its_artifact(built: Path) -> None:
    result = invoke_built(
        "migrate", EVENTS / "migrate-direct.json", env=lambda_env(), build_dir=built
    )
    assert result["changed"] is False
    assert result["after"]


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_backup_runs_its_bundled_pg_dump(built: Path, s3_endpoint: str) -> None:
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="igris-built-test")
    result = invoke_built(
        "backup",
        EVENTS / "backup-scheduled.json",
        env=lambda_env(BACKUP_BUCKET="igris-built-test", BACKUP_PREFIX="built", **credentials),
        build_dir=built,
    )
    assert result["status"] in {"completed", "already_completed"}, result
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="igris-built-test")["Contents"]]
    assert "built/2026/11/29/0300Z.dump" in keys
