"""Fixtures of the orgs function's tests: a client whose requests run in the test's
rolled-back transaction."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from functions.orgs.main import app


@pytest.fixture
def client(client_for: Callable[[FastAPI], TestClient]) -> TestClient:
    return client_for(app)
