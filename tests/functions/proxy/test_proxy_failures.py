"""When things break (API.md §5, issue 5 part 6): a hung, failing or erroring upstream gives
`-32005` or the upstream's own error result, never a hung request or a 500, and is audited;
when the decision cannot be committed (database down) nothing is forwarded: HTTP 503.

The timeout test changes a process-wide setting of the in-process proxy (undone when it
ends); the fail-closed tests run `igris serve` in a process of its own whose database
connections all go through a relay that they cut."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from shared.audit import verify_chain
from shared.config import get_settings
from shared.db import make_engine, session_scope
from tests.functions.proxy.support import (
    RawClient,
    credentialed_upstream,
    decisions,
    error_of,
    events,
    make_tenant,
    outcomes,
    raw_client,
    result_text,
    serving_proxy,
)
from tests.igris.test_cli import serving
from tests.mcp_upstream import Upstream
from tests.tcp_relay import TcpRelay


@pytest.fixture(scope="module")
def proxy(migrated: None) -> Iterator[str]:
    with serving_proxy() as base:
        yield base


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with credentialed_upstream() as up:
        yield up


class Environment:
    """Process-wide settings changed for one test; the cached settings are rebuilt on each
    change and on `restore()`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def set(self, name: str, value: str) -> None:
        self.monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    def restore(self) -> None:
        self.monkeypatch.undo()
        get_settings.cache_clear()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Environment]:
    changed = Environment(monkeypatch)
    yield changed
    changed.restore()


@pytest.fixture(scope="module")
def relayed() -> Iterator[tuple[str, TcpRelay]]:
    """`igris serve` in its own process, whose every database connection goes through a
    relay that a test can cut (the database going away) and restore; (base URL, relay)."""
    pooled = make_url(get_settings().pooled_url())
    with TcpRelay(pooled.host or "127.0.0.1", int(pooled.port or 5432)) as relay:
        env = {
            **os.environ,
            "DATABASE_URL": pooled.set(host="127.0.0.1", port=relay.port).render_as_string(
                hide_password=False
            ),
            "IGRIS_DB_CONNECT_TIMEOUT_SECONDS": "2",
        }
        with serving(env) as base:
            yield base, relay


# --------------------------------------------------------------------- upstream failures


def test_a_slow_upstream_times_out_with_32005(
    proxy: str, upstream: Upstream, environment: Environment
) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    environment.set("IGRIS_UPSTREAM_TIMEOUT_SECONDS", "0.5")
    started = time.monotonic()
    answer = client.call("slow", {"seconds": 1.0}, headers={"X-Igris-Trace-Id": "slow-1"})
    elapsed = time.monotonic() - started
    refused = error_of(answer)
    assert refused["code"] == -32005
    assert refused["data"]["sessionId"].startswith("ags_")
    assert 0.4 < elapsed < 1.2
    # The proxy is fine afterwards: a fast call through it works.
    assert result_text(client.call("echo", {"text": "still here"})) == "still here"

    trail = events(tenant)
    traced = [e for e in trail if e.trace_id == "slow-1" and e.type == "tool_call"]
    assert [(e.operation, e.outcome) for e in traced] == [
        ("tools/call", "forwarded"),
        ("tools/call.completed", "timeout"),
    ]
    assert traced[1].latency_ms is not None
    assert 400 <= traced[1].latency_ms < 1200
    assert traced[1].reason


def test_a_failing_upstream_gives_32005_and_a_tool_error_passes_through(
    proxy: str, upstream: Upstream
) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    upstream.force_status = 503
    unavailable = error_of(client.call("echo", {"text": "down"}))
    assert unavailable["code"] == -32005
    assert unavailable["data"]["decision"] == "allow"
    upstream.force_status = None
    failed = client.call("fail", {})
    assert failed["result"]["isError"] is True
    assert "the upstream tool failed" in result_text(failed)
    # The upstream's own JSON-RPC error (an unknown tool) comes back as it was sent.
    unknown = client.call("no_such_tool", {})
    assert "error" in unknown or unknown["result"]["isError"] is True

    trail = events(tenant)
    assert [(e.tool_name, e.outcome) for e in outcomes(trail)] == [
        ("echo", "error"),
        ("fail", "error"),
        ("no_such_tool", "error"),
    ]
    assert "503" in (outcomes(trail)[0].reason or "")
    assert [e.outcome for e in decisions(trail)] == ["forwarded"] * 3


# --------------------------------------------------------------------- fail closed


def post_call(client: RawClient, text_value: str, trace: str) -> httpx.Response:
    return client.post(
        {
            "jsonrpc": "2.0",
            "id": client.next_id(),
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text_value}},
        },
        headers={"X-Igris-Trace-Id": trace},
    )


def test_no_database_means_503_and_nothing_forwarded(
    relayed: tuple[str, TcpRelay], upstream: Upstream
) -> None:
    base, relay = relayed
    tenant = make_tenant(upstream.url)
    client = raw_client(base, tenant)
    client.initialize()
    for index in range(2):  # whatever the proxy keeps between calls, it has it now
        assert post_call(client, f"up-{index}", f"up-{index}").status_code == 200
    relay.cut()
    try:
        reply = post_call(client, "must not pass", "db-down")
    finally:
        relay.restore()
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["requestId"] == reply.headers["x-request-id"]
    assert reply.headers.get("x-igris-trace-id") == "db-down"
    assert [args["text"] for _, args in upstream.tool_calls()] == ["up-0", "up-1"]
    # The database is back: so is the proxy.
    assert result_text(post_call(client, "back", "db-back").json()) == "back"
    assert [e.trace_id for e in decisions(events(tenant))] == ["up-0", "up-1", "db-back"]


def test_a_decision_that_cannot_be_committed_is_not_forwarded(
    relayed: tuple[str, TcpRelay], upstream: Upstream
) -> None:
    """The database goes away while the decision is being recorded (the connection is cut
    while the decision waits on the audit chain's head row, and stays down): 503, and the
    call is not forwarded."""
    base, relay = relayed
    tenant = make_tenant(upstream.url)
    client = raw_client(base, tenant)
    client.initialize()
    for index in range(2):
        assert post_call(client, f"before-{index}", f"before-{index}").status_code == 200
    holder = make_engine(get_settings().direct_url(), pool_size=2)
    try:
        with holder.connect() as lock:
            lock.execute(
                text("SELECT 1 FROM audit_chain_heads WHERE chain_id = :org FOR UPDATE"),
                {"org": tenant.org_id},
            ).one()
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = pool.submit(post_call, client, "cut", "cut-off")
                try:
                    wait_for_lock_waiter(holder)
                    relay.cut()
                    reply = pending.result(timeout=20)
                finally:
                    lock.rollback()
                    relay.restore()
    finally:
        holder.dispose()
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "database_unavailable"
    assert [args["text"] for _, args in upstream.tool_calls()] == ["before-0", "before-1"]
    # Whether the severed statement still committed its decision event is up to the
    # database; no outcome was ever recorded for it, and the chain is intact.
    time.sleep(0.2)
    trail = events(tenant)
    assert [e for e in outcomes(trail) if e.trace_id == "cut-off"] == []
    with session_scope() as db:
        assert verify_chain(db, tenant.org_id).intact


def wait_for_lock_waiter(engine: Engine, timeout: float = 10) -> None:
    """Until some backend waits for a lock (the proxy's decision, on the chain head)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            if waiting.scalar_one():
                return
            probe.rollback()
            time.sleep(0.02)
    raise AssertionError("the proxy never waited on the audit chain's lock")
