"""Run the benchmarks: `python -m bench [name ...]` (default: all)."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "cold_import": "bench.cold_import",
    "auth": "bench.auth",
    "policy_engine": "bench.policy_engine",
    "backup": "bench.backup",
    "proxy": "bench.proxy",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name", help=", ".join(BENCHMARKS))
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    for name in args.names or list(BENCHMARKS):
        importlib.import_module(BENCHMARKS[name]).main()


if __name__ == "__main__":
    main()
