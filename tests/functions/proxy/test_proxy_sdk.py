"""The proxy end to end: the official mcp SDK client → Igris → a real mcp SDK upstream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import TextContent
from sqlalchemy import select
from sqlmodel import col

from functions.policies.kill_switch import resume, suspend
from functions.proxy.main import app
from igris.lambda_context import LocalLambdaContext
from shared.audit import verify_chain
from shared.db import session_scope
from shared.models import AgentSession
from tests.functions.proxy.support import (
    UPSTREAM_SECRET,
    decisions,
    events,
    make_tenant,
    outcomes,
    run,
    sdk_session,
)
from tests.mcp_upstream import running_upstream, serve_asgi


@pytest.fixture(scope="module")
def proxy(migrated: None) -> Iterator[str]:
    with serve_asgi(app, lifespan=False) as base:
        yield base


@pytest.fixture
def upstream() -> Iterator[Any]:
    with running_upstream(required_header=("authorization", f"Bearer {UPSTREAM_SECRET}")) as up:
        yield up


EVENTS = Path(__file__).resolve().parents[3] / "events"


@contextlib.contextmanager
def engine_statements() -> Iterator[list[str]]:
    """The statements the SQLAlchemy engine (the slow path's) runs inside the block: none
    means the warm path, which has its own autocommit connection, answered."""
    from sqlalchemy import event

    from shared.db import get_engine

    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(get_engine(), "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(get_engine(), "before_cursor_execute", count)


def text_of(result: Any) -> str:
    first = result.content[0]
    assert isinstance(first, TextContent)
    return str(first.text)


def test_the_governed_session(proxy: str, upstream: Any) -> None:
    tenant = make_tenant(upstream.url)
    url = f"{proxy}/proxy/{tenant.slug}"
    headers = {"Authorization": f"Bearer {tenant.key}", "X-Igris-User": "alice@example.com"}

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with sdk_session(url, headers) as session:
            listed = await session.list_tools()
            seen["tools"] = sorted(tool.name for tool in listed.tools)
            seen["read"] = text_of(await session.call_tool("read_data", {"key": "k1"}))
            seen["write"] = text_of(
                await session.call_tool("write_record", {"table": "t", "value": "v"})
            )
            with pytest.raises(MCPError) as denied:
                await session.call_tool("delete_users", {"ids": [1, 2]})
            seen["denied"] = denied.value.error
            with pytest.raises(MCPError) as dropped:
                await session.call_tool("drop_table", {"name": "users"})
            seen["dropped"] = dropped.value.error
        return seen

    seen = run(scenario)
    # Tools the policies deny whatever the arguments are hidden from the list.
    assert seen["tools"] == ["echo", "fail", "get_patient", "read_data", "slow", "write_record"]
    assert "k1" in seen["read"]
    assert seen["denied"].code == -32001
    assert seen["denied"].data["decision"] == "deny"
    assert seen["denied"].data["reason"] == "no deletes"
    assert seen["denied"].data["ruleIndex"] == 0
    assert seen["denied"].data["policyId"]
    assert seen["denied"].data["sessionId"].startswith("ags_")
    assert seen["dropped"].data["ruleIndex"] == 1
    # The upstream got the server's credential every time and never the caller's key.
    assert upstream.tool_calls() == [
        ("read_data", {"key": "k1"}),
        ("write_record", {"table": "t", "value": "v"}),
    ]
    for request in upstream.requests:
        assert request.headers.get("authorization") == f"Bearer {UPSTREAM_SECRET}"
        assert tenant.key not in str(request.headers)
    trail = events(tenant)
    calls = [(e.operation, e.tool_name, e.action) for e in trail if e.type == "tool_call"]
    assert calls == [
        ("tools/call", "read_data", "allow"),
        ("tools/call.completed", "read_data", "log"),
        ("tools/call", "write_record", "alert"),
        ("tools/call.completed", "write_record", "log"),
        ("tools/call", "delete_users", "deny"),
        ("tools/call", "drop_table", "deny"),
    ]
    anomalies = {e.metadata_["anomalyType"] for e in trail if e.type == "anomaly"}
    assert anomalies == {"policy_alert"}  # delete_users was denied: never forwarded
    assert all(e.user_ref == "alice@example.com" for e in trail if e.type == "tool_call")
    assert len({e.trace_id for e in trail if e.type == "tool_call"}) >= 4
    with session_scope() as db:
        result = verify_chain(db, tenant.org_id)
    assert result.intact
    assert result.checked == len(trail)


def test_the_kill_switch_stops_the_next_call_and_resume_lifts_it(proxy: str, upstream: Any) -> None:
    tenant = make_tenant(upstream.url)
    url = f"{proxy}/proxy/{tenant.slug}"
    headers = {"Authorization": f"Bearer {tenant.key}"}

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with sdk_session(url, headers) as session:
            await session.call_tool("echo", {"text": "one"})
            with session_scope() as db:
                row = db.scalars(
                    select(AgentSession).where(col(AgentSession.server_id) == tenant.server_id)
                ).one()
                suspend(db, tenant.owner, row.id, reason="looks like exfiltration")
                seen["session"] = row.id
            with pytest.raises(MCPError) as stopped:
                await session.call_tool("echo", {"text": "two"})
            seen["stopped"] = stopped.value.error
            with session_scope() as db:
                resume(db, tenant.owner, seen["session"])
            seen["after"] = text_of(await session.call_tool("echo", {"text": "three"}))
        return seen

    seen = run(scenario)
    assert seen["stopped"].code == -32002
    assert seen["stopped"].data["sessionId"] == seen["session"]
    assert seen["after"] == "three"
    assert [args["text"] for _, args in upstream.tool_calls()] == ["one", "three"]
    with session_scope() as db:
        rows = db.scalars(
            select(AgentSession).where(col(AgentSession.server_id) == tenant.server_id)
        ).all()
    assert len(rows) == 1  # the suspended session was not escaped by opening a new one
    assert rows[0].tool_calls_count == 2  # calls that reached the upstream


def test_auth_errors_and_headers(proxy: str, upstream: Any) -> None:
    tenant = make_tenant(upstream.url)
    url = f"{proxy}/proxy/{tenant.slug}"
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert httpx.post(url, json=ping).status_code == 401
    bad_key = httpx.post(url, json=ping, headers={"Authorization": "Bearer ig_" + "x" * 32})
    assert bad_key.status_code == 401
    auth = {"Authorization": f"Bearer {tenant.key}"}
    assert httpx.post(f"{proxy}/proxy/no-such-server", json=ping, headers=auth).status_code == 404
    assert httpx.get(url, headers=auth).status_code == 405
    bad_meta = httpx.post(url, json=ping, headers={**auth, "X-Igris-Metadata": "[1]"})
    assert bad_meta.status_code == 400
    traced = httpx.post(url, json=ping, headers={**auth, "X-Igris-Trace-Id": "trace-123"})
    assert traced.status_code == 200
    assert traced.headers["x-igris-trace-id"] == "trace-123"
    generated = httpx.post(url, json=ping, headers=auth)
    assert generated.headers["x-igris-trace-id"].startswith("trc_")


def test_malformed_bodies_are_refused_and_never_forwarded(proxy: str, upstream: Any) -> None:
    tenant = make_tenant(upstream.url)
    url = f"{proxy}/proxy/{tenant.slug}"
    auth = {"Authorization": f"Bearer {tenant.key}", "Content-Type": "application/json"}
    parse = httpx.post(url, content=b'{"jsonrpc": "2.0", "id": 1, "method"', headers=auth)
    assert parse.json()["error"]["code"] == -32700
    invalid = httpx.post(url, json={"jsonrpc": "1.0", "id": 1, "method": "x"}, headers=auth)
    assert invalid.json()["error"]["code"] == -32600
    assert httpx.post(url, json=[], headers=auth).json()["error"]["code"] == -32600
    assert upstream.requests == []
    rejected = [e for e in events(tenant) if e.operation == "mcp.invalid_message"]
    assert len(rejected) == 3
    assert all(e.metadata_["bodySize"] < 100 for e in rejected)


def test_lambda_invocations_on_the_warm_path_reuse_one_database_connection(
    migrated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under Mangum each invocation runs its sync work on a fresh worker thread: the warm
    path's connection must outlive the thread (a per-thread one was a connect per call)."""
    import psycopg

    from functions.proxy import fast
    from functions.proxy.main import handler
    from shared.security import token_digest

    # Mangum runs each invocation on the thread's event loop, as in a fresh Lambda process
    # (earlier tests' asyncio.run calls leave this thread without one).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(loop.close)
        cleanup.callback(asyncio.set_event_loop, None)
        upstream = cleanup.enter_context(running_upstream(stateless=True))
        tenant = make_tenant(upstream.url)
        raw = (EVENTS / "proxy-tools-call.json").read_text()
        event = json.loads(
            raw.replace("{{IGRIS_SERVER_SLUG}}", tenant.slug).replace(
                "{{IGRIS_API_KEY}}", tenant.key
            )
        )

        context: Any = LocalLambdaContext(function_name="igris-proxy")  # Mangum wants its own type

        def echoed(response: dict[str, Any]) -> str:
            assert response["statusCode"] == 200, response
            return str(json.loads(response["body"])["result"]["content"][0]["text"])

        assert echoed(handler(event, context)) == "hello"  # slow path; warms up
        assert fast.lookup(token_digest(tenant.key), tenant.slug) is not None
        assert echoed(handler(event, context)) == "hello"  # warm; may open the connection
        opened: list[str] = []
        real_connect = psycopg.connect

        def counting_connect(*args: Any, **kwargs: Any) -> Any:
            opened.append(str(kwargs.get("application_name")))
            return real_connect(*args, **kwargs)

        monkeypatch.setattr(psycopg, "connect", counting_connect)
        with engine_statements() as slow_path:
            for _ in range(5):
                assert echoed(handler(event, context)) == "hello"
        assert slow_path == []  # all five took the warm path
        assert opened == []
        trail = events(tenant)
        assert (len(decisions(trail)), len(outcomes(trail))) == (7, 7)


def test_the_warm_path_decides_in_one_statement_and_revocation_is_immediate(
    proxy: str,
) -> None:
    with running_upstream(stateless=True) as upstream:
        warm_path_scenario(proxy, upstream)


def warm_path_scenario(proxy: str, upstream: Any) -> None:
    from sqlalchemy import update

    from functions.proxy import fast
    from shared.models import ApiKey
    from shared.models.base import utcnow
    from shared.security import token_digest

    tenant = make_tenant(upstream.url)
    url = f"{proxy}/proxy/{tenant.slug}"
    headers = {"Authorization": f"Bearer {tenant.key}"}
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi"}},
    }
    with httpx.Client(headers=headers) as client:
        assert client.post(url, json=call).json()["result"]["content"][0]["text"] == "hi"
        assert fast.lookup(token_digest(tenant.key), tenant.slug) is not None  # warmed up
        with session_scope() as db:  # the key was last used two minutes ago
            db.execute(
                update(ApiKey)
                .where(col(ApiKey.id) == tenant.key_id)
                .values(last_used_at=utcnow() - timedelta(minutes=2))
            )
        with engine_statements() as slow_path:
            assert client.post(url, json=call).json()["result"]["content"][0]["text"] == "hi"
        assert slow_path == []  # the warm path answered
        with session_scope() as db:  # the warm path keeps lastUsedAt fresh (≤ 1 min stale)
            key_row = db.get(ApiKey, tenant.key_id)
            assert key_row is not None
            assert key_row.last_used_at is not None
            assert utcnow() - key_row.last_used_at < timedelta(seconds=30)
        with session_scope() as db:
            db.execute(
                update(ApiKey).where(col(ApiKey.id) == tenant.key_id).values(revoked_at=utcnow())
            )
        revoked = client.post(url, json=call)
    assert revoked.status_code == 401
    assert len(upstream.tool_calls()) == 2
    assert fast.lookup(token_digest(tenant.key), tenant.slug) is None
    trail = events(tenant)
    decisions = [e for e in trail if e.operation == "tools/call"]
    assert len(decisions) == 2
    with session_scope() as db:
        assert verify_chain(db, tenant.org_id).intact
