"""Cold import time of each function's handler module, in fresh interpreters.

Each sample is a new `python` process that imports the module once and reports how long
the import took (interpreter start-up excluded); the figure is the median of N samples.
The bare FastAPI + Mangum hello app is measured in the same run as the baseline.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

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


def sample(module: str, python: str = sys.executable) -> float:
    """Seconds to import `module` in a fresh process with no settings in its environment."""
    result = subprocess.run(
        [python, "-c", PROBE.format(module=module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    return float(result.stdout.strip())


def median_ms(module: str, runs: int) -> float:
    sample(module)  # warm the .pyc cache, as a precompiled layer would be
    return statistics.median(sample(module) for _ in range(runs)) * 1000


def main(runs: int = 11) -> None:
    print(f"cold import, median of {runs} fresh processes ({sys.version.split()[0]})")
    baseline = median_ms(BASELINE, runs)
    print(f"  {'bare FastAPI+Mangum hello app':34} {baseline:8.1f} ms   1.00x")
    for module in MODULES:
        try:
            value = median_ms(module, runs)
        except subprocess.CalledProcessError as exc:
            print(f"  {module:34} failed: {exc.stderr.strip().splitlines()[-1:]}")
            continue
        print(f"  {module:34} {value:8.1f} ms   {value / baseline:4.2f}x")


if __name__ == "__main__":
    main()
