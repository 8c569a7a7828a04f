"""Test support for the proxy: the proxy served over HTTP, committed tenants, the official
mcp SDK client driving it."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select
from sqlmodel import col

from functions.policies import servers
from functions.policies.schemas import ServerUpdate
from functions.proxy.main import app
from shared.auth import OrgPrincipal
from shared.crypto import seal
from shared.db import session_scope
from shared.models import AgentSession, AuditEvent, McpServer, Organization, User
from shared.permissions import Role
from shared.upstream import credential_binding
from tests.factories import make_api_key, make_member, make_org, make_policy, make_user, unique
from tests.mcp_upstream import Upstream, running_upstream, serve_asgi

UPSTREAM_SECRET = "upstream-credential-42"
WORKED_EXAMPLE = [
    {"tool": "delete_*", "action": "deny", "reason": "no deletes"},
    {"tool": "drop_*", "action": "deny"},
    {"tool": "write_*", "action": "alert"},
    {"tool": "*", "action": "allow"},
]


@dataclass
class Tenant:
    """A committed organization with an owner, an API key and one server."""

    org_id: str
    owner_id: str
    key: str
    key_id: str
    server_id: str
    slug: str

    @property
    def owner(self) -> OrgPrincipal:
        return OrgPrincipal(
            kind="user", user_id=self.owner_id, organization_id=self.org_id, role=Role.OWNER
        )


def make_tenant(
    upstream_url: str,
    *,
    rules: list[dict[str, Any]] | None = None,
    data_classes: list[str] | None = None,
    key_role: Role = Role.DEVELOPER,
) -> Tenant:
    with session_scope() as db:
        org = make_org(db)
        owner = make_user(db)
        make_member(db, org, owner, Role.OWNER)
        key_row, key = make_api_key(db, org, owner, key_role)
        slug = unique("s-")
        server = McpServer(
            organization_id=org.id,
            name=slug,
            slug=slug,
            url=upstream_url,
            auth_type="bearer",
            data_classes=data_classes or [],
            created_by=owner.id,
        )
        db.add(server)
        db.flush()
        server.credential_ciphertext, server.credential_key_id = seal(
            UPSTREAM_SECRET, bound_to=credential_binding(server)
        )
        db.add(server)
        make_policy(db, org, server, rules=rules if rules is not None else WORKED_EXAMPLE)
        return Tenant(
            org_id=org.id,
            owner_id=owner.id,
            key=key,
            key_id=key_row.id,
            server_id=server.id,
            slug=slug,
        )


def events(tenant: Tenant) -> list[AuditEvent]:
    with session_scope() as db:
        query = (
            select(AuditEvent)
            .where(col(AuditEvent.chain_id) == tenant.org_id)
            .order_by(col(AuditEvent.seq))
        )
        rows = list(db.scalars(query))
        for row in rows:
            db.expunge(row)
        return rows


@contextlib.asynccontextmanager
async def sdk_session(url: str, headers: dict[str, str]) -> Any:
    """The official mcp SDK client (streamable HTTP + ClientSession), initialized."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def run(coroutine_function: Any, *args: Any) -> Any:
    return anyio.run(coroutine_function, *args)


# --------------------------------------------------------------------- added helpers
# (for test_proxy_governance.py, test_proxy_protocol.py, test_proxy_failures.py and
# test_proxy_typescript.py: black-box, HTTP in and audit trail / database rows out)

JsonObject = dict[str, Any]
PROTOCOL_VERSION = "2025-06-18"
DECISION = "tools/call"
OUTCOME = "tools/call.completed"


@contextlib.contextmanager
def serving_proxy() -> Iterator[str]:
    """The proxy function's app served over HTTP on loopback; yields its base URL."""
    with serve_asgi(app, lifespan=False) as base:
        yield base


@contextlib.contextmanager
def credentialed_upstream(**options: Any) -> Iterator[Upstream]:
    """A fresh upstream that refuses (401) any request without the server's credential."""
    with running_upstream(
        required_header=("authorization", f"Bearer {UPSTREAM_SECRET}"), **options
    ) as upstream:
        yield upstream


def update_server(tenant: Tenant, **changes: Any) -> None:
    """PATCH the tenant's server as its owner would (the policies function's service, which
    also records the admin event), committed; `changes` in wire names (`logArguments`)."""
    with session_scope() as db:
        servers.update(db, tenant.owner, tenant.server_id, ServerUpdate.model_validate(changes))


def add_member(tenant: Tenant, role: Role) -> OrgPrincipal:
    """Another user of the tenant's organization with `role` (committed), as a principal."""
    with session_scope() as db:
        org = db.get(Organization, tenant.org_id)
        assert org is not None
        user = make_user(db)
        make_member(db, org, user, role)
        return OrgPrincipal(kind="user", user_id=user.id, organization_id=org.id, role=role)


def agent_sessions(tenant: Tenant) -> list[AgentSession]:
    with session_scope() as db:
        query = select(AgentSession).where(col(AgentSession.server_id) == tenant.server_id)
        rows = list(db.scalars(query))
        for row in rows:
            db.expunge(row)
        return rows


def decisions(trail: list[AuditEvent]) -> list[AuditEvent]:
    """The decision event of each tools/call (refusals included)."""
    return [e for e in trail if e.type == "tool_call" and e.operation == DECISION]


def outcomes(trail: list[AuditEvent]) -> list[AuditEvent]:
    """The outcome event of each forwarded tools/call."""
    return [e for e in trail if e.type == "tool_call" and e.operation == OUTCOME]


def anomalies(trail: list[AuditEvent], kind: str | None = None) -> list[AuditEvent]:
    return [
        e
        for e in trail
        if e.type == "anomaly" and (kind is None or e.metadata_.get("anomalyType") == kind)
    ]


def avoid_window_edge(window_seconds: int, need_seconds: float = 3.0) -> None:
    """Sleep into the next fixed window when fewer than `need_seconds` are left in this one,
    so that a burst of calls is counted in a single window (harmless for sliding windows)."""
    left = window_seconds - time.time() % window_seconds
    if left < need_seconds:
        time.sleep(left + 0.05)


def call_message(name: str, arguments: dict[str, Any], request_id: int | str = 1) -> JsonObject:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


@dataclass
class RawClient:
    """MCP over plain httpx: exact JSON-RPC bodies and headers in, raw HTTP replies out."""

    url: str
    headers: dict[str, str]
    session_id: str | None = None
    protocol_version: str | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_id(self) -> int:
        return next(self._ids)

    def post(
        self,
        body: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **self.headers,
        }
        if self.session_id is not None:
            sent["Mcp-Session-Id"] = self.session_id
        if self.protocol_version is not None:
            sent["MCP-Protocol-Version"] = self.protocol_version
        sent.update(headers or {})
        raw = content if content is not None else json.dumps(body).encode()
        return httpx.post(self.url, content=raw, headers=sent, timeout=30)

    def initialize(self) -> httpx.Response:
        """`initialize` + `notifications/initialized`; keeps the MCP session id."""
        reply = self.post(
            {
                "jsonrpc": "2.0",
                "id": self.next_id(),
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "igris-raw-test", "version": "1"},
                },
            }
        )
        assert reply.status_code == 200, reply.text
        self.session_id = reply.headers.get("mcp-session-id")
        self.protocol_version = reply.json()["result"]["protocolVersion"]
        done = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert done.status_code == 202, done.text
        return reply

    def call(
        self, name: str, arguments: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> JsonObject:
        """One tools/call; its JSON-RPC response (asserting HTTP 200)."""
        reply = self.post(call_message(name, arguments, self.next_id()), headers=headers)
        assert reply.status_code == 200, reply.text
        answer: JsonObject = reply.json()
        return answer

    def request(self, method: str, params: dict[str, Any] | None = None) -> JsonObject:
        body: JsonObject = {"jsonrpc": "2.0", "id": self.next_id(), "method": method}
        if params is not None:
            body["params"] = params
        reply = self.post(body)
        assert reply.status_code == 200, reply.text
        answer: JsonObject = reply.json()
        return answer


def raw_client(proxy: str, tenant: Tenant, **headers: str) -> RawClient:
    """A RawClient on the tenant's server, authenticated with its API key."""
    return RawClient(
        url=f"{proxy}/proxy/{tenant.slug}",
        headers={"Authorization": f"Bearer {tenant.key}", **headers},
    )


def error_of(answer: JsonObject) -> JsonObject:
    """The JSON-RPC error of a refused call (asserting it is one)."""
    assert "error" in answer, answer
    error: JsonObject = answer["error"]
    return error


def result_text(answer: JsonObject) -> str:
    """The text content of a successful tools/call response."""
    assert "result" in answer, answer
    return "".join(
        item.get("text", "") for item in answer["result"]["content"] if item.get("type") == "text"
    )


def add_api_key(tenant: Tenant, role: Role = Role.DEVELOPER) -> str:
    """Another API key of the tenant's organization (another principal), created by its
    owner (committed)."""
    with session_scope() as db:
        org = db.get(Organization, tenant.org_id)
        owner = db.get(User, tenant.owner_id)
        assert org is not None
        assert owner is not None
        _, key = make_api_key(db, org, owner, role)
        return key
