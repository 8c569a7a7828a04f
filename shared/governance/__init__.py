"""The policy engine (API.md §4.2): the rule language and its evaluation.

Pure code with no I/O, settings or database, so the policies function (validation, dry
runs) and the proxy (every tool call) share one definition of what a rule means, and tests
need nothing but Python. Import the modules directly: `shared.governance.rules` for the
models and validation, `shared.governance.engine` for ordering, evaluation and masking.
"""
