"""One package per Lambda function.

A function imports `shared` and itself, never another function (tests/test_architecture.py).
"""
