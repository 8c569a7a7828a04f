"""Invoke a function from the `sam build` artifacts, under Python 3.12, as Lambda would.

`igris invoke --built FUNCTION EVENT.json` runs the handler named in template.yaml from
`.aws-sam/build/<LogicalId>` with the built layers on the path (the shared layer's
`python/` on sys.path; the pg tools layer's `bin/` and `lib/` where Lambda puts /opt/bin
and /opt/lib) in a fresh Python 3.12 process that sees nothing of the development virtualenv.
A packaging mistake (a module or binary missing from an artifact, a bad handler path)
fails here, not in AWS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from igris.routing import ROOT, function_handlers, load_template

BUILD_DIR = ROOT / ".aws-sam" / "build"

# Runs inside the Python 3.12 process: only the artifacts are importable there.
RUNNER = r"""
import importlib, json, sys, time, uuid
module_name, _, attribute = sys.argv[1].rpartition(".")
event = json.load(open(sys.argv[2], encoding="utf-8"))

class Context:
    function_name = sys.argv[3]
    memory_limit_in_mb = 512
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:" + sys.argv[3]
    aws_request_id = str(uuid.uuid4())
    log_group_name = "/aws/lambda/" + sys.argv[3]
    log_stream_name = "local"
    _deadline = time.monotonic() + float(sys.argv[4])
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

handler = getattr(importlib.import_module(module_name), attribute)
result = handler(event, Context())
sys.stdout.write("\n@@IGRIS-RESULT@@" + json.dumps(result, default=str) + "\n")
"""


class BuiltInvokeError(RuntimeError):
    pass


def python312() -> str:
    """An interpreter of the Lambda runtime's version (pyenv's 3.12, else python3.12)."""
    candidates = []
    if shutil.which("pyenv"):
        found = subprocess.run(
            ["pyenv", "which", "python3.12"],
            env={**os.environ, "PYENV_VERSION": os.environ.get("IGRIS_PY312", "3.12.1")},
            capture_output=True,
            text=True,
            check=False,
        )
        candidates.append(found.stdout.strip())
    candidates.append(shutil.which("python3.12") or "")
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise BuiltInvokeError("Python 3.12 (the Lambda runtime) was not found: pyenv install 3.12.1")


def _function_resource(function: str) -> tuple[str, dict[str, Any]]:
    template = load_template()
    for logical_id, handler in function_handlers(template).items():
        if handler.startswith(f"functions.{function}."):
            return logical_id, template["Resources"][logical_id]["Properties"]
    raise BuiltInvokeError(f"template.yaml has no function for {function!r}")


def _layer_ids(properties: dict[str, Any]) -> list[str]:
    template = load_template()
    refs = template.get("Globals", {}).get("Function", {}).get("Layers", []) + properties.get(
        "Layers", []
    )
    return [ref["Ref"] for ref in refs if isinstance(ref, dict) and "Ref" in ref]


def invoke_built(
    function: str, event_path: Path, *, env: dict[str, str], build_dir: Path = BUILD_DIR
) -> Any:
    """The handler's return value, from the built artifact under Python 3.12."""
    logical_id, properties = _function_resource(function)
    code_dir = build_dir / logical_id
    if not code_dir.is_dir():
        raise BuiltInvokeError(f"{code_dir} does not exist: run scripts/sam build first")
    python_path = [str(code_dir)]
    path = ["/usr/local/bin", "/usr/bin", "/bin"]
    library_path: list[str] = []
    for layer in _layer_ids(properties):
        layer_dir = build_dir / layer
        if not layer_dir.is_dir():
            raise BuiltInvokeError(f"layer {layer} is not built in {build_dir}")
        if (layer_dir / "python").is_dir():
            python_path.append(str(layer_dir / "python"))
        if (layer_dir / "bin").is_dir():
            path.insert(0, str(layer_dir / "bin"))
        if (layer_dir / "lib").is_dir():
            library_path.append(str(layer_dir / "lib"))
    child_env = {
        **env,
        "PYTHONPATH": os.pathsep.join(python_path),
        "PATH": os.pathsep.join(path),
        "LD_LIBRARY_PATH": os.pathsep.join(library_path),
        "PYTHONNOUSERSITE": "1",
        "AWS_LAMBDA_FUNCTION_NAME": f"igris-{function}",
    }
    timeout = float(properties.get("Timeout", 29))
    completed = subprocess.run(
        [
            python312(),
            "-s",
            "-c",
            RUNNER,
            properties["Handler"],
            str(event_path.resolve()),
            f"igris-{function}",
            str(timeout),
        ],
        cwd=code_dir,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=False,
    )
    marker = "@@IGRIS-RESULT@@"
    if completed.returncode != 0 or marker not in completed.stdout:
        detail = (completed.stderr or completed.stdout)[-3000:]
        raise BuiltInvokeError(f"{function} failed from its built artifact:\n{detail}")
    return json.loads(completed.stdout.rsplit(marker, 1)[1])
