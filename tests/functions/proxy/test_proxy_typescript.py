"""The proxy driven by the official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`,
`Client` + `StreamableHTTPClientTransport`) on Node.js, against a real mcp SDK upstream.

`ts/client-flow.mjs` connects with an API key, lists the tools, calls allowed, alerted,
denied, rate-limited and approval-gated tools, waits while this test suspends and resumes
its agent session (the kill switch), ends the MCP session (DELETE), then calls a PHI server
that no BAA covers; it prints a JSON summary. The SDK is installed under tests/compat (same
package-lock.json and `npm ci` helper as the Better Auth client test).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.policies.kill_switch import resume, suspend
from shared.audit import verify_chain
from shared.auth import OrgPrincipal
from shared.db import session_scope
from tests.compat.test_better_auth_client import HERE as COMPAT_DIR
from tests.compat.test_better_auth_client import install_client, require_node
from tests.functions.proxy.support import (
    UPSTREAM_SECRET,
    agent_sessions,
    anomalies,
    avoid_window_edge,
    credentialed_upstream,
    decisions,
    events,
    make_tenant,
    outcomes,
    serving_proxy,
)
from tests.mcp_upstream import Upstream

SCRIPT = Path(__file__).resolve().parent / "ts" / "client-flow.mjs"
SDK_DIR = COMPAT_DIR / "node_modules" / "@modelcontextprotocol" / "sdk" / "dist" / "esm"
RULES: list[dict[str, Any]] = [
    {"tool": "delete_*", "action": "deny", "reason": "no deletes"},
    {"tool": "drop_*", "action": "require_approval"},
    {"tool": "write_*", "action": "alert"},
    {
        "tool": "echo",
        "action": "allow",
        "rateLimit": {"max": 2, "windowSeconds": 3600, "per": "principal"},
    },
    {"tool": "*", "action": "allow"},
]


@pytest.fixture(scope="module")
def proxy(migrated: None) -> Iterator[str]:
    with serving_proxy() as base:
        yield base


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with credentialed_upstream() as up:
        yield up


def run_flow(node: str, env: dict[str, str], owner: OrgPrincipal) -> dict[str, Any]:
    """Run the script, flipping the kill switch (as `owner`) when it asks; its summary.
    A script that hangs is killed after a minute."""
    process = subprocess.Popen(
        [node, str(SCRIPT)],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    summary: dict[str, Any] | None = None
    watchdog = threading.Timer(60, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            if line.startswith("WAIT "):
                _, what, session_id = line.split()
                with session_scope() as db:
                    if what == "suspend":
                        suspend(db, owner, session_id, reason="caught mid-run")
                    else:
                        resume(db, owner, session_id)
                process.stdin.write("go\n")
                process.stdin.flush()
            elif line.startswith("RESULT "):
                summary = json.loads(line.removeprefix("RESULT "))
        process.wait(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    assert process.returncode == 0, f"client-flow.mjs failed ({process.returncode}):\n{stderr}"
    assert summary is not None, stderr
    return summary


def test_the_typescript_sdk_client_is_governed(proxy: str, upstream: Upstream) -> None:
    node, npm = require_node()
    install_client(npm)
    tenant = make_tenant(upstream.url, rules=RULES)
    phi_tenant = make_tenant(
        upstream.url, rules=[{"tool": "*", "action": "allow"}], data_classes=["phi"]
    )
    avoid_window_edge(3600, need_seconds=30)
    summary = run_flow(
        node,
        {
            "MCP_SDK_DIR": str(SDK_DIR),
            "PROXY_URL": f"{proxy}/proxy/{tenant.slug}",
            "API_KEY": tenant.key,
            "PHI_URL": f"{proxy}/v1/mcp/{phi_tenant.slug}",  # the alias route
            "PHI_API_KEY": phi_tenant.key,
        },
        tenant.owner,
    )

    assert summary["serverName"] == "igris-test-upstream"
    # delete_users is denied whatever the arguments: hidden. drop_table only needs approval.
    assert summary["tools"] == [
        "drop_table",
        "echo",
        "fail",
        "get_patient",
        "read_data",
        "slow",
        "write_record",
    ]
    assert summary["allowed"] == {"ok": True, "text": "value of ts-key", "isError": False}
    assert summary["alerted"]["ok"] is True
    denied = summary["denied"]
    assert denied["ok"] is False
    assert denied["code"] == -32001
    assert denied["data"]["decision"] == "deny"
    assert denied["data"]["reason"] == "no deletes"
    assert denied["data"]["ruleIndex"] == 0
    assert denied["data"]["sessionId"].startswith("ags_")
    first, second, third = summary["limited"]
    assert first["ok"]
    assert second["ok"]
    assert third["code"] == -32003
    assert 1 <= third["data"]["retryAfter"] <= 3600
    approval, again = summary["approval"], summary["approvalAgain"]
    assert approval["code"] == again["code"] == -32004
    assert approval["data"]["decision"] == "require_approval"
    assert approval["data"]["approvalId"]
    assert again["data"]["approvalId"] == approval["data"]["approvalId"]
    assert summary["suspended"]["code"] == -32002
    assert summary["suspended"]["data"]["sessionId"] == denied["data"]["sessionId"]
    assert summary["resumed"] == {"ok": True, "text": "value of after-resume", "isError": False}
    assert summary["phi"]["code"] == -32006
    assert summary["phi"]["data"]["reason"] == "no_active_baa"

    # Only what was allowed reached the upstream, always with the server's credential.
    assert upstream.tool_calls() == [
        ("read_data", {"key": "ts-key"}),
        ("write_record", {"table": "notes", "value": "from-ts"}),
        ("echo", {"text": "e1"}),
        ("echo", {"text": "e2"}),
        ("read_data", {"key": "after-resume"}),
    ]
    assert upstream.requests
    for request in upstream.requests:
        assert request.headers.get("authorization") == f"Bearer {UPSTREAM_SECRET}"
        assert tenant.key not in str(request.headers)
        assert phi_tenant.key not in str(request.headers)
        assert "cookie" not in request.headers
    # The upstream's MCP session id came back to the client, is tracked on the agent
    # session, and the client's DELETE ended it upstream.
    mcp_session_id = summary["mcpSessionId"]
    assert mcp_session_id
    [row] = agent_sessions(tenant)
    assert row.id == denied["data"]["sessionId"]
    assert row.mcp_session_id == mcp_session_id
    assert row.status == "active"
    deletes = [r for r in upstream.requests if r.method == "DELETE"]
    assert [r.headers.get("mcp-session-id") for r in deletes] == [mcp_session_id]

    trail = events(tenant)
    assert [(e.tool_name, e.action, e.outcome) for e in decisions(trail)] == [
        ("read_data", "allow", "forwarded"),
        ("write_record", "alert", "forwarded"),
        ("delete_users", "deny", "refused"),
        ("echo", "allow", "forwarded"),
        ("echo", "allow", "forwarded"),
        ("echo", "deny", "refused"),
        ("drop_table", "require_approval", "refused"),
        ("drop_table", "require_approval", "refused"),
        ("read_data", "deny", "refused"),
        ("read_data", "allow", "forwarded"),
    ]
    assert [(e.tool_name, e.outcome) for e in outcomes(trail)] == [
        ("read_data", "ok"),
        ("write_record", "ok"),
        ("echo", "ok"),
        ("echo", "ok"),
        ("read_data", "ok"),
    ]
    assert all(e.user_ref == "ts-agent" for e in decisions(trail))
    assert [e.tool_name for e in anomalies(trail, "policy_alert")] == ["write_record"]
    operations = [e.operation for e in trail if e.type == "session_update"]
    assert operations == ["session.started", "session.suspended", "session.resumed"]
    phi_trail = events(phi_tenant)
    assert [(e.tool_name, e.reason) for e in decisions(phi_trail)] == [
        ("get_patient", "no_active_baa")
    ]
    with session_scope() as db:
        for org_id, count in ((tenant.org_id, len(trail)), (phi_tenant.org_id, len(phi_trail))):
            verified = verify_chain(db, org_id)
            assert verified.intact
            assert verified.checked == count
