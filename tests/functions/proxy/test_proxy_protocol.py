"""The proxy as an MCP Streamable HTTP endpoint (API.md §5) and its bad-input handling:
batches, notifications, pass-through of methods Igris does not govern, SSE upstreams, the
MCP session id, the body limit, and what never reaches the upstream (the caller's
credentials, anything malformed). Black box: HTTP in, upstream requests and audit rows out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from mcp.types import TextContent

from shared.cookies import SESSION_COOKIE, sign
from shared.db import session_scope
from shared.models import Organization, User
from shared.permissions import Role
from tests.factories import make_member, make_session, make_user
from tests.functions.proxy.support import (
    UPSTREAM_SECRET,
    RawClient,
    add_api_key,
    agent_sessions,
    call_message,
    credentialed_upstream,
    decisions,
    error_of,
    events,
    make_tenant,
    outcomes,
    raw_client,
    result_text,
    run,
    sdk_session,
    serving_proxy,
    update_server,
)
from tests.mcp_upstream import Upstream, running_upstream

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def proxy(migrated: None) -> Iterator[str]:
    with serving_proxy() as base:
        yield base


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with credentialed_upstream() as up:
        yield up


def assert_no_caller_credentials(upstream: Upstream, *secrets: str) -> None:
    assert upstream.requests
    for request in upstream.requests:
        assert request.headers.get("authorization") == f"Bearer {UPSTREAM_SECRET}"
        assert "cookie" not in request.headers
        for secret in secrets:
            assert secret not in json.dumps(request.headers)


# --------------------------------------------------------------------- messages


def test_a_batch_gets_its_responses_in_order(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    reply = client.post(
        [
            {"jsonrpc": "2.0", "id": "p", "method": "ping"},
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "in a batch"}},
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    ping, echo = reply.json()
    assert ping == {"jsonrpc": "2.0", "id": "p", "result": {}}
    assert echo["id"] == 7
    assert result_text(echo) == "in a batch"
    assert reply.headers["mcp-session-id"] == client.session_id
    assert reply.headers["x-igris-trace-id"]
    assert upstream.tool_calls() == [("echo", {"text": "in a batch"})]
    # A batch of one is still answered with an array.
    single = client.post([{"jsonrpc": "2.0", "id": 8, "method": "ping"}])
    assert single.json() == [{"jsonrpc": "2.0", "id": 8, "result": {}}]


def test_notifications_alone_get_202_and_no_body(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    cancelled = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 99, "reason": "test"},
    }
    for body in (note, [note, cancelled]):
        reply = client.post(body)
        assert reply.status_code == 202
        assert reply.content == b""
        assert reply.headers["x-igris-trace-id"]
        assert reply.headers["mcp-session-id"] == client.session_id
    forwarded = [r.body.get("method") for r in upstream.requests if isinstance(r.body, dict)]
    assert forwarded.count("notifications/cancelled") == 1


def test_methods_igris_does_not_govern_pass_through_unchanged(
    proxy: str, upstream: Upstream
) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    direct = RawClient(url=upstream.url, headers={"Authorization": f"Bearer {UPSTREAM_SECRET}"})
    direct.initialize()
    for method in ("resources/list", "prompts/list", "vendor/custom"):
        via_igris = client.post({"jsonrpc": "2.0", "id": 41, "method": method})
        straight = direct.post({"jsonrpc": "2.0", "id": 41, "method": method})
        assert via_igris.status_code == 200
        assert via_igris.json() == straight.json(), method
    assert error_of(client.request("vendor/custom"))["code"] == -32601
    passed = {"resources/list", "prompts/list", "vendor/custom"}
    audited = {e.operation: e for e in events(tenant) if e.operation in passed}
    assert audited["resources/list"].outcome == "ok"
    assert audited["vendor/custom"].outcome == "error"
    assert audited["vendor/custom"].server_id == tenant.server_id


@pytest.mark.parametrize("json_response", [True, False], ids=["json", "sse"])
def test_json_and_sse_upstreams_behave_the_same(proxy: str, json_response: bool) -> None:
    with credentialed_upstream(json_response=json_response) as upstream:
        tenant = make_tenant(upstream.url)
        url = f"{proxy}/proxy/{tenant.slug}"

        async def scenario() -> dict[str, Any]:
            async with sdk_session(url, {"Authorization": f"Bearer {tenant.key}"}) as session:
                listed = await session.list_tools()
                called = await session.call_tool("echo", {"text": "either way"})
                failed = await session.call_tool("fail", {})
                first = called.content[0]
                assert isinstance(first, TextContent)
                return {
                    "tools": sorted(tool.name for tool in listed.tools),
                    "echo": first.text,
                    "structured": called.structured_content,
                    "failed": failed.is_error,
                }

        seen = run(scenario)
        assert len(upstream.tool_calls()) == 2
    assert seen == {
        "tools": ["echo", "fail", "get_patient", "read_data", "slow", "write_record"],
        "echo": "either way",
        "structured": {"result": "either way"},
        "failed": True,
    }
    assert [e.outcome for e in outcomes(events(tenant))] == ["ok", "error"]


def test_the_upstream_session_id_is_returned_and_tracked(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    initialized = client.initialize()
    issued = initialized.headers["mcp-session-id"]
    assert issued
    assert initialized.headers["x-igris-trace-id"]
    called = client.post(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "s"}},
        }
    )
    assert called.headers["mcp-session-id"] == issued
    # The upstream only ever saw its own session id, and the agent session records it.
    after_init = [r for r in upstream.requests if r.rpc_method not in {None, "initialize"}]
    assert {r.headers.get("mcp-session-id") for r in after_init} == {issued}
    [row] = agent_sessions(tenant)
    assert row.mcp_session_id == issued
    # A new MCP session of the same principal: the agent session now tracks the new id.
    again = raw_client(proxy, tenant)
    reissued = again.initialize().headers["mcp-session-id"]
    assert reissued != issued
    again.call("echo", {"text": "t"})
    [row] = agent_sessions(tenant)
    assert row.mcp_session_id == reissued
    assert row.tool_calls_count == 2
    # A refusal carries the headers too.
    denied = again.post(
        {
            "jsonrpc": "2.0",
            "id": 9,
            "method": "tools/call",
            "params": {"name": "delete_users", "arguments": {"ids": [1]}},
        }
    )
    assert denied.json()["error"]["code"] == -32001
    assert denied.headers["mcp-session-id"] == reissued
    assert denied.headers["x-igris-trace-id"]


def test_a_stateless_upstream_issues_no_session_id(proxy: str) -> None:
    with credentialed_upstream(stateless=True) as upstream:
        tenant = make_tenant(upstream.url)
        client = raw_client(proxy, tenant)
        reply = client.post(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "no session"}},
            }
        )
        assert result_text(reply.json()) == "no session"
        assert "mcp-session-id" not in reply.headers
    assert agent_sessions(tenant)[0].mcp_session_id is None


# --------------------------------------------------------------------- credentials


def test_the_callers_credentials_never_reach_the_upstream(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant, Cookie="tracking=abc123; theme=dark")
    client.initialize()
    assert result_text(client.call("echo", {"text": "key"})) == "key"
    client.request("tools/list")
    assert_no_caller_credentials(upstream, tenant.key, "abc123")


@pytest.mark.parametrize("auth_type", ["header", "none"])
def test_the_server_credential_is_injected_per_auth_type(proxy: str, auth_type: str) -> None:
    header = "x-upstream-key"
    required = (header, UPSTREAM_SECRET) if auth_type == "header" else None
    with running_upstream(required_header=required) as upstream:
        tenant = make_tenant(upstream.url)
        if auth_type == "header":
            update_server(tenant, authType="header", authHeaderName="X-Upstream-Key")
        else:
            update_server(tenant, authType="none", credential=None)
        client = raw_client(proxy, tenant, Cookie="session=abc")
        client.initialize()
        assert result_text(client.call("echo", {"text": auth_type})) == auth_type
    assert upstream.requests
    for request in upstream.requests:
        assert "authorization" not in request.headers  # the caller's key stays with Igris
        assert "cookie" not in request.headers
        assert request.headers.get(header) == (UPSTREAM_SECRET if required else None)


def test_a_signed_in_user_can_call_with_the_session_cookie(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    with session_scope() as db:
        org = db.get(Organization, tenant.org_id)
        assert org is not None
        user: User = make_user(db)
        make_member(db, org, user, Role.DEVELOPER)
        _, token = make_session(db, user, org)
    cookie = f"{SESSION_COOKIE}={quote(sign(token), safe='')}; other=cookie-value-xyz"
    client = RawClient(
        url=f"{proxy}/proxy/{tenant.slug}", headers={"Cookie": cookie, "Origin": proxy}
    )
    client.initialize()
    assert result_text(client.call("echo", {"text": "cookie"})) == "cookie"
    assert_no_caller_credentials(upstream, token, "cookie-value-xyz")
    [decision] = decisions(events(tenant))
    assert decision.actor_type == "user"
    assert decision.actor_id == user.id
    # The session token as a bearer works too; a cookie from a foreign origin does not.
    bearer = RawClient(url=client.url, headers={"Authorization": f"Bearer {token}"})
    bearer.initialize()
    assert "result" in bearer.call("echo", {"text": "bearer"})
    foreign = client.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"Origin": "https://evil.test"}
    )
    assert foreign.status_code == 403


# --------------------------------------------------------------------- bad input


def test_bad_input_is_refused_and_never_forwarded(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    before = len(upstream.requests)

    # An invalid member poisons the whole batch: nothing of it is forwarded.
    batch = client.post(
        [
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "x"}},
            },
            {"jsonrpc": "2.0", "id": 2, "method": 5},
        ]
    )
    assert batch.json()["error"]["code"] == -32600
    # A large malformed body is audited in a size-capped form.
    junk = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ' + b"x" * 300_000
    parse = client.post(content=junk)
    assert parse.json()["error"]["code"] == -32700
    # tools/call without a name or with non-object arguments: invalid params.
    invalid_params: list[dict[str, Any]] = [{"arguments": {}}, {"name": "echo", "arguments": [1]}]
    for params in invalid_params:
        bad = client.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params})
        assert bad.status_code == 200
        assert bad.json()["error"]["code"] == -32602
    # Invalid X-Igris-Metadata → 400 with the error envelope.
    for metadata in ("not json", '["a"]', '{"nested": {"a": 1}}'):
        refused = client.post(
            {"jsonrpc": "2.0", "id": 4, "method": "ping"}, headers={"X-Igris-Metadata": metadata}
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_header"
    # Over 1 MiB → 413 before anything is parsed, declared or streamed (chunked).
    big = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * MIB}},
        }
    ).encode()
    too_large = client.post(content=big)
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"]
    chunked = httpx.post(
        client.url,
        content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
        headers={**client.headers, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413

    assert len(upstream.requests) == before
    trail = events(tenant)
    rejected = [e for e in trail if e.operation == "mcp.invalid_message"]
    assert len(rejected) == 2
    assert {e.metadata_["jsonrpcCode"] for e in rejected} == {-32600, -32700}
    for event in rejected:
        assert len(json.dumps(event.metadata_)) < 2048
    assert max(e.metadata_["bodySize"] for e in rejected) == len(junk)
    headers_refused = [e for e in trail if e.operation == "mcp.invalid_header"]
    assert len(headers_refused) == 3  # the refused X-Igris-Metadata values are audited too
    assert {e.metadata_["valueSize"] for e in headers_refused} == {8, 5, 20}
    assert decisions(trail) == []


def test_who_may_call_which_server(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    neighbour = make_tenant(upstream.url)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    auth = {"Authorization": f"Bearer {tenant.key}"}
    # Another organization's server is unknown here, not forbidden.
    other = httpx.post(f"{proxy}/proxy/{neighbour.slug}", json=ping, headers=auth)
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    auditor = add_api_key(tenant, Role.AUDITOR)
    read_only = httpx.post(
        f"{proxy}/proxy/{tenant.slug}", json=ping, headers={"Authorization": f"Bearer {auditor}"}
    )
    assert read_only.status_code == 403
    # The server-wide kill switch: every call refused, from the very next request.
    client = raw_client(proxy, tenant)
    client.initialize()
    assert result_text(client.call("echo", {"text": "on"})) == "on"
    update_server(tenant, enabled=False)
    disabled = client.post(call_message("echo", {"text": "off"}))
    assert disabled.status_code == 403
    assert disabled.json()["error"]["code"] == "server_disabled"
    alias = httpx.post(f"{proxy}/v1/mcp/{tenant.slug}", json=ping, headers=auth)
    assert alias.status_code == 403
    update_server(tenant, enabled=True)
    assert result_text(client.call("echo", {"text": "on again"})) == "on again"
    assert [args["text"] for _, args in upstream.tool_calls()] == ["on", "on again"]


# --------------------------------------------------------------------- bugs found by these tests


def test_a_tools_call_without_an_id_is_never_forwarded(proxy: str, upstream: Upstream) -> None:
    """As a notification it would skip governance and the audit trail (and get no answer
    that could carry a refusal); a generic JSON-RPC upstream would run it."""
    tenant = make_tenant(upstream.url)  # the worked example: delete_* denied
    client = raw_client(proxy, tenant)
    client.initialize()
    sneaky = {
        "jsonrpc": "2.0",
        "method": "tools/call",
        "params": {"name": "delete_users", "arguments": {"ids": [1, 2, 3]}},
    }
    for body in (sneaky, [sneaky], [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, sneaky]):
        reply = client.post(body)
        assert reply.json()["error"]["code"] == -32600
    assert [r for r in upstream.requests if r.rpc_method in {"tools/call", "ping"}] == []


def test_an_expired_upstream_session_is_reported_as_404(proxy: str, upstream: Upstream) -> None:
    """MCP clients start a new session when a request with a session id gets HTTP 404; an
    HTTP 200 with -32005 would leave them stuck on a dead session."""
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant)
    client.initialize()
    assert client.session_id is not None
    ended = httpx.delete(
        upstream.url,
        headers={
            "Authorization": f"Bearer {UPSTREAM_SECRET}",
            "Mcp-Session-Id": client.session_id,
            "MCP-Protocol-Version": str(client.protocol_version),
        },
    )
    assert ended.status_code == 200
    reply = client.post(call_message("echo", {"text": "x"}))
    assert reply.status_code == 404
    assert client.post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).status_code == 404
    # What a client then does: a new session, and on it goes.
    client.session_id = None
    client.initialize()
    assert result_text(client.call("echo", {"text": "new session"})) == "new session"


def test_every_response_carries_the_trace_id(proxy: str, upstream: Upstream) -> None:
    tenant = make_tenant(upstream.url)
    client = raw_client(proxy, tenant, **{"X-Igris-Trace-Id": "trace-on-errors"})
    replies = [
        client.post(
            {"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers={"X-Igris-Metadata": "x"}
        ),
        client.post(content=b"x" * (MIB + 1)),
        httpx.post(
            f"{proxy}/proxy/no-such-server",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers=client.headers,
        ),
        httpx.post(
            client.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"X-Igris-Trace-Id": "trace-on-errors"},
        ),
    ]
    assert [r.status_code for r in replies] == [400, 413, 404, 401]
    assert [r.headers.get("x-igris-trace-id") for r in replies] == ["trace-on-errors"] * 4
