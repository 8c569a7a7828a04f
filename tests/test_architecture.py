"""Rules of the layout (DESIGN.md), enforced: who may import whom, and that template.yaml
names handlers that exist and routes that reach the right function."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from igris.routing import function_handlers, http_function_names, load_template, resolve
from tests.routes import api_routes

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "main.py").exists())


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_functions_never_import_each_other(function: str) -> None:
    for path in python_files(ROOT / "functions" / function):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "functions":
                assert parts[1:2] == [function], f"{path}: imports {module}"
            assert parts[0] not in {"igris", "tests"}, f"{path}: imports {module}"


def test_shared_imports_nothing_from_functions_or_tooling() -> None:
    for path in python_files(ROOT / "shared"):
        for module in imported_modules(path):
            assert module.split(".")[0] not in {"functions", "igris", "tests"}, (path, module)


def test_migrations_import_only_alembic_and_sqlalchemy() -> None:
    allowed = {"alembic", "sqlalchemy", "collections", "__future__"}
    for path in python_files(ROOT / "migrations" / "versions"):
        for module in imported_modules(path):
            assert module.split(".")[0] in allowed, (path, module)


def test_every_function_is_in_the_template() -> None:
    handlers = set(function_handlers().values())
    assert handlers == {f"functions.{name}.main.handler" for name in FUNCTIONS}


@pytest.mark.parametrize("handler", sorted(function_handlers().values()))
def test_every_template_handler_imports(handler: str) -> None:
    """In a fresh interpreter, as Lambda would, so one module's imports can't hide another's."""
    module, _, attribute = handler.rpartition(".")
    code = (
        "import importlib; "
        f"assert callable(getattr(importlib.import_module({module!r}), {attribute!r}))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


HTTP_FUNCTIONS = ["auth", "orgs", "policies", "audit", "compliance", "proxy"]


def test_http_functions_are_routed() -> None:
    assert sorted(http_function_names()) == sorted(HTTP_FUNCTIONS)


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_every_route_of_a_function_is_routed_to_it(function: str) -> None:
    """Each path a function's app serves reaches that function through API Gateway."""
    app = importlib.import_module(f"functions.{function}.main").app
    paths = [route.path for route in api_routes(app.routes)]
    assert paths
    for path in paths:
        concrete = path.replace("{", "").replace("}", "")
        route = resolve("GET", concrete)
        assert route is not None, path
        assert route.function == function, (path, route)


def test_routing_prefers_the_most_specific_route() -> None:
    org_route = resolve("POST", "/api/auth/organization/create")
    assert org_route is not None
    assert org_route.function == "orgs"
    auth_route = resolve("POST", "/api/auth/sign-in/email")
    assert auth_route is not None
    assert auth_route.function == "auth"
    keys = resolve("GET", "/api/v1/api-keys")
    assert keys is not None
    assert keys.function == "auth"
    assert resolve("GET", "/api/v1/unknown") is None
    assert resolve("GET", "/proxy") is None


def test_timeouts_are_ordered() -> None:
    """Upstream timeout < proxy function timeout < API Gateway's 30 s."""
    template = load_template()
    resources = template["Resources"]
    default_timeout = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource["Properties"]
        events = properties.get("Events") or {}
        if any(event.get("Type") == "HttpApi" for event in events.values()):
            assert properties.get("Timeout", default_timeout) < 30, logical_id
    proxy = next(
        r["Properties"]
        for r in resources.values()
        if r.get("Properties", {}).get("Handler") == "functions.proxy.main.handler"
    )
    env = {
        **template.get("Globals", {})
        .get("Function", {})
        .get("Environment", {})
        .get("Variables", {}),
        **proxy.get("Environment", {}).get("Variables", {}),
    }
    assert float(env["IGRIS_UPSTREAM_TIMEOUT_SECONDS"]) < proxy.get("Timeout", default_timeout)


def test_cfn_lint_reports_nothing() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "template.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
