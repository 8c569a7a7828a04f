"""HTTP routes of the policies function: paths, status codes, permissions. No SQL, no commit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from functions.policies import servers
from functions.policies.schemas import ServerCreate, ServerRead, ServerUpdate
from shared.auth import OrgPrincipal, requires
from shared.db import SessionDep
from shared.ids import McpServerId
from shared.models import McpServer
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery
from shared.permissions import Permission
from shared.schemas import Envelope, ListEnvelope, PageMeta

servers_router = APIRouter(prefix="/api/v1/servers", tags=["servers"])
Reader = Annotated[OrgPrincipal, Depends(requires(Permission.GOVERNANCE_READ))]
# Developers pass this guard too; the service limits them to the servers they created.
Manager = Annotated[OrgPrincipal, Depends(requires(Permission.GOVERNANCE_MANAGE_OWN))]


def server_read(server: McpServer) -> ServerRead:
    return ServerRead.model_validate(
        {**server.model_dump(), "has_credential": server.credential_ciphertext is not None}
    )


@servers_router.post("", status_code=201, response_model=Envelope[ServerRead])
def create_server(body: ServerCreate, principal: Manager, session: SessionDep) -> Any:
    """Register an upstream MCP server (its credential is write-only)."""
    return Envelope(data=server_read(servers.create(session, principal, body)))


@servers_router.get("", response_model=ListEnvelope[ServerRead])
def list_servers(
    principal: Reader,
    session: SessionDep,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Any:
    """List the organization's MCP servers, newest first."""
    rows, next_cursor = servers.list_page(session, principal, limit=limit, cursor=cursor)
    return ListEnvelope(
        data=[server_read(row) for row in rows], meta=PageMeta(next_cursor=next_cursor)
    )


@servers_router.get("/{server_id}", response_model=Envelope[ServerRead])
def get_server(server_id: McpServerId, principal: Reader, session: SessionDep) -> Any:
    """Read one MCP server."""
    return Envelope(data=server_read(servers.get(session, principal, server_id)))


@servers_router.patch("/{server_id}", response_model=Envelope[ServerRead])
def update_server(
    server_id: McpServerId, body: ServerUpdate, principal: Manager, session: SessionDep
) -> Any:
    """Change an MCP server; `enabled: false` is the server-wide kill switch."""
    return Envelope(data=server_read(servers.update(session, principal, server_id, body)))


@servers_router.delete("/{server_id}", status_code=204, response_class=Response)
def delete_server(
    server_id: McpServerId,
    principal: Manager,
    session: SessionDep,
    force: Annotated[bool, Query(description="Also delete the policies that point at it")] = False,
) -> Response:
    """Delete an MCP server (409 while policies point at it, unless ?force=true)."""
    servers.delete(session, principal, server_id, force=force)
    return Response(status_code=204)
