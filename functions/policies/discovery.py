"""Tool discovery (API.md §4.1): `tools/list` on the upstream with the real MCP handshake,
then each tool stored with a fingerprint of its canonical definition. A definition that
changed since it was first seen keeps its `changedAt` and raises `tool_definition_changed`.

The upstream call happens between two transactions (see the router): no pooled database
connection is held while the upstream answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from functions.policies import repository
from functions.policies.servers import admin_event, require_manage
from functions.policies.servers import get as get_server
from shared.anomalies import raise_anomaly
from shared.auth import OrgPrincipal
from shared.config import get_settings
from shared.errors import AppError, NotFound
from shared.mcp_client import (
    UpstreamAuth,
    UpstreamError,
    UpstreamTimeout,
    list_tools,
    tool_fingerprint,
)
from shared.models import ServerTool
from shared.models.base import utcnow
from shared.upstream import UpstreamUrlError, check_upstream_url, upstream_auth


class UpstreamUnavailable(AppError):
    status_code = 502
    code = "upstream_unavailable"
    default_message = "The MCP server could not be reached or gave an invalid answer."


class UpstreamTimedOut(UpstreamUnavailable):
    status_code = 504
    code = "upstream_timeout"
    default_message = "The MCP server did not answer in time."


@dataclass(frozen=True)
class Target:
    server_id: str
    url: str
    auth: UpstreamAuth


def target(session: Session, principal: OrgPrincipal, server_id: str) -> Target:
    """What discovery will call; only those who manage the server may trigger it."""
    server = get_server(session, principal, server_id)
    require_manage(principal, server)
    return Target(server_id=server.id, url=server.url, auth=upstream_auth(server))


def fetch(target: Target) -> list[dict[str, Any]]:
    """The upstream's tools (its address is re-checked: a name may resolve differently now)."""
    settings = get_settings()
    try:
        url = check_upstream_url(target.url, allow_private=settings.allow_private_upstreams)
        return list_tools(url, auth=target.auth, timeout=settings.upstream_timeout_seconds)
    except UpstreamUrlError as exc:
        raise UpstreamUnavailable(f"The server's URL is not allowed: {exc}") from None
    except UpstreamTimeout:
        raise UpstreamTimedOut() from None
    except UpstreamError as exc:
        raise UpstreamUnavailable(f"The MCP server failed: {exc.message}") from None


def store(
    session: Session, principal: OrgPrincipal, server_id: str, tools: list[dict[str, Any]]
) -> list[ServerTool]:
    """Upsert the listed tools; returns them (in the upstream's order)."""
    server = repository.get_server(session, principal.organization_id, server_id)
    if server is None:  # deleted while the upstream answered
        raise NotFound("No such server.")
    existing = {tool.name: tool for tool in repository.server_tools(session, server.id)}
    now = utcnow()
    stored, added, changed = [], [], []
    for definition in tools:
        name = str(definition["name"])
        fingerprint = tool_fingerprint(definition)
        row = existing.get(name)
        if row is None:
            row = ServerTool(
                organization_id=server.organization_id,
                server_id=server.id,
                name=name,
                fingerprint=fingerprint,
                first_fingerprint=fingerprint,
                first_seen_at=now,
                last_seen_at=now,
                input_schema={},
                description=None,
            )
            added.append(name)
        elif row.fingerprint != fingerprint:
            row.changed_at = now
            changed.append(name)
        row.description = definition.get("description")
        row.input_schema = dict(definition.get("inputSchema") or {})
        row.fingerprint = fingerprint
        row.last_seen_at = now
        repository.add(session, row)
        stored.append(row)
    for name in changed:
        raise_anomaly(
            session,
            organization_id=server.organization_id,
            server_id=server.id,
            anomaly_type="tool_definition_changed",
            source="api",
            actor_type=principal.kind,
            actor_id=principal.principal_id,
            tool_name=name,
            reason=f"the definition of {name} changed since it was first seen",
        )
    admin_event(
        session,
        principal,
        "server.discovered",
        serverId=server.id,
        tools=len(stored),
        added=added,
        changed=changed,
    )
    return stored


def stored_tools(session: Session, principal: OrgPrincipal, server_id: str) -> list[ServerTool]:
    server = get_server(session, principal, server_id)
    return repository.server_tools(session, server.id)
