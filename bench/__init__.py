"""Benchmarks that print figures: `scripts/bench [name ...]` (see bench/__main__.py)."""
