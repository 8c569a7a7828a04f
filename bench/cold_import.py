"""Cold import time of each function's handler module, in fresh interpreters.

Each sample is a new `python` process that imports the module once and reports how long
the import took (interpreter start-up excluded); the figure is the median of N samples,
after one warm-up. The bare FastAPI + Mangum hello app is measured in the same run as the
baseline. Two tables:

- from the source tree, under the development virtualenv's Python;
- from the `sam build` artifacts, under Python 3.12 (the Lambda runtime): each function's
  handler module (from template.yaml) imported from `.aws-sam/build/<LogicalId>` with the
  shared layer's `python/` (Lambda-platform wheels, precompiled `.pyc`) on the path, in a
  process that sees nothing of the virtualenv nor of the repository (`-s`, PYTHONPATH
  only), as `igris invoke --built` runs it. The hello app is imported there from a copy in
  a temporary directory, with the same layer. Skipped, with the command to run, when the
  artifacts are not built.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from igris.built import BUILD_DIR, BuiltInvokeError, python312
from igris.routing import function_handlers

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "functions.auth.main",
    "functions.orgs.main",
    "functions.policies.main",
    "functions.audit.main",
    "functions.compliance.main",
    "functions.proxy.main",
    "functions.migrate.main",
    "functions.backup.main",
]
BASELINE = "bench.hello_app"
PROBE = (
    "import time, importlib; t = time.perf_counter(); importlib.import_module({module!r}); "
    "print(time.perf_counter() - t)"
)
SHARED_LAYER = "SharedLayer"
BUILD_COMMAND = "AWS_DEFAULT_REGION=us-east-1 scripts/sam build"


@dataclass(frozen=True)
class Interpreter:
    """How a sample's process is started: which Python, what it may import, from where."""

    python: str = sys.executable
    path: tuple[Path, ...] = (ROOT,)
    cwd: Path = ROOT
    flags: tuple[str, ...] = ()


VENV = Interpreter()


def sample(module: str, interpreter: Interpreter = VENV) -> float:
    """Seconds to import `module` in a fresh process with no settings in its environment
    and nothing but `interpreter.path` on PYTHONPATH."""
    result = subprocess.run(
        [interpreter.python, *interpreter.flags, "-c", PROBE.format(module=module)],
        cwd=interpreter.cwd,
        capture_output=True,
        text=True,
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.pathsep.join(str(entry) for entry in interpreter.path),
        },
    )
    return float(result.stdout.strip())


def median_ms(module: str, runs: int, interpreter: Interpreter = VENV) -> float:
    sample(module, interpreter)  # warm the .pyc cache, as a precompiled layer would be
    return statistics.median(sample(module, interpreter) for _ in range(runs)) * 1000


def print_row(label: str, module: str, runs: int, interpreter: Interpreter, base: float) -> None:
    try:
        value = median_ms(module, runs, interpreter)
    except subprocess.CalledProcessError as exc:
        print(f"  {label:34} failed: {exc.stderr.strip().splitlines()[-1:]}")
        return
    print(f"  {label:34} {value:8.1f} ms   {value / base:4.2f}x")


def venv_table(runs: int) -> None:
    print(f"cold import, median of {runs} fresh processes ({sys.version.split()[0]})")
    baseline = median_ms(BASELINE, runs)
    print(f"  {'bare FastAPI+Mangum hello app':34} {baseline:8.1f} ms   1.00x")
    for module in MODULES:
        print_row(module, module, runs, VENV, baseline)


def built_table(runs: int, build_dir: Path = BUILD_DIR) -> None:
    """The same from the `sam build` artifacts, under Python 3.12."""
    layer = build_dir / SHARED_LAYER / "python"
    if not layer.is_dir():
        print(f"cold import from the sam build artifacts: skipped, {layer} is missing")
        print(f"  build them first (~40 s): {BUILD_COMMAND}")
        return
    try:
        python = python312()
    except BuiltInvokeError as exc:
        print(f"cold import from the sam build artifacts: skipped, {exc}")
        return
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    print(
        f"cold import from the sam build artifacts (Python {version}, -s, "
        f"PYTHONPATH = the function's artifact + {SHARED_LAYER}/python), "
        f"median of {runs} fresh processes"
    )
    with tempfile.TemporaryDirectory(prefix="igris-bench-") as scratch:
        hello_dir = Path(scratch)
        shutil.copy(ROOT / "bench" / "hello_app.py", hello_dir / "hello_app.py")
        hello = Interpreter(python, (hello_dir, layer), hello_dir, ("-s",))
        try:
            baseline = median_ms("hello_app", runs, hello)
        except subprocess.CalledProcessError as exc:
            print(f"  bare FastAPI+Mangum hello app failed: {exc.stderr.strip()[-500:]}")
            return
        print(f"  {'bare FastAPI+Mangum hello app':34} {baseline:8.1f} ms   1.00x")
        for logical_id, handler in function_handlers().items():
            module = handler.rpartition(".")[0]
            code_dir = build_dir / logical_id
            label = f"{logical_id} ({module.split('.')[1]})"
            if not code_dir.is_dir():
                print(f"  {label:34} not built: {BUILD_COMMAND}")
                continue
            print_row(
                label,
                module,
                runs,
                Interpreter(python, (code_dir, layer), code_dir, ("-s",)),
                baseline,
            )


def main(runs: int = 11) -> None:
    venv_table(runs)
    built_table(runs)


if __name__ == "__main__":
    main()
