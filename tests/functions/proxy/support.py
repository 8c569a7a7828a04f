"""Test support for the proxy: the proxy served over HTTP, committed tenants, the official
mcp SDK client driving it."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select
from sqlmodel import col

from shared.auth import OrgPrincipal
from shared.crypto import seal
from shared.db import session_scope
from shared.models import AuditEvent, McpServer
from shared.permissions import Role
from shared.upstream import credential_binding
from tests.factories import make_api_key, make_member, make_org, make_policy, make_user, unique

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
