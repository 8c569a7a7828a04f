"""The MCP server registry (API.md §4.1): rules for creating, changing and deleting servers.
Raises domain errors, writes audit events, never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from functions.policies import repository
from functions.policies.schemas import ServerCreate, ServerUpdate
from shared.audit import record_event
from shared.auth import OrgPrincipal
from shared.config import get_settings
from shared.crypto import seal
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable
from shared.models import McpServer
from shared.models.base import utcnow
from shared.pagination import decode_cursor, page
from shared.permissions import Permission
from shared.upstream import UpstreamUrlError, check_upstream_url, credential_binding


class SlugTaken(Conflict):
    code = "slug_taken"
    default_message = "Another server in this organization uses that slug."


class ServerInUse(Conflict):
    code = "server_in_use"
    default_message = "Policies point at this server; delete them first or use ?force=true."


def admin_event(session: Session, principal: OrgPrincipal, operation: str, **metadata: Any) -> None:
    record_event(
        session,
        organization_id=principal.organization_id,
        source="api",
        type="admin",
        action="log",
        actor_type=principal.kind,
        actor_id=principal.principal_id,
        operation=operation,
        server_id=metadata.get("serverId"),
        metadata=metadata,
    )


def get(session: Session, principal: OrgPrincipal, server_id: str) -> McpServer:
    server = repository.get_server(session, principal.organization_id, server_id)
    if server is None:
        raise NotFound("No such server.")
    return server


def require_manage(principal: OrgPrincipal, server: McpServer) -> None:
    """Owners and admins manage every server; developers only those they created."""
    if principal.can(Permission.GOVERNANCE_MANAGE):
        return
    if principal.can(Permission.GOVERNANCE_MANAGE_OWN) and server.created_by == principal.user_id:
        return
    raise Forbidden("Only the server's creator, an owner or an admin can change it.")


def _checked_url(url: str) -> str:
    try:
        return check_upstream_url(url, allow_private=get_settings().allow_private_upstreams)
    except UpstreamUrlError as exc:
        raise Unprocessable(details=[{"field": "url", "message": str(exc)}]) from None


def _check_auth(auth_type: str, header_name: str | None, has_credential: bool) -> None:
    details = []
    if auth_type == "header" and not header_name:
        details.append({"field": "authHeaderName", "message": "Required when authType is header."})
    if auth_type != "header" and header_name:
        details.append({"field": "authHeaderName", "message": "Only used when authType is header."})
    if auth_type != "none" and not has_credential:
        details.append(
            {"field": "credential", "message": f"Required when authType is {auth_type}."}
        )
    if details:
        raise Unprocessable(details=details)


def _set_credential(server: McpServer, credential: str | None) -> None:
    if credential is None:
        server.credential_ciphertext = None
        server.credential_key_id = None
        return
    server.credential_ciphertext, server.credential_key_id = seal(
        credential, bound_to=credential_binding(server)
    )


def _save(session: Session, server: McpServer) -> None:
    """Flush the server; a slug clash (checked first, then enforced by the unique index
    against a concurrent writer) is a 409."""
    with session.no_autoflush:
        found = repository.get_server_by_slug(session, server.organization_id, server.slug)
    if found is not None and found.id != server.id:
        raise SlugTaken()
    try:
        repository.add(session, server)
    except IntegrityError:
        raise SlugTaken() from None


def create(session: Session, principal: OrgPrincipal, body: ServerCreate) -> McpServer:
    url = _checked_url(body.url)
    _check_auth(body.auth_type, body.auth_header_name, body.credential is not None)
    server = McpServer(
        organization_id=principal.organization_id,
        name=body.name,
        slug=body.slug,
        url=url,
        auth_type=body.auth_type,
        auth_header_name=body.auth_header_name,
        enabled=body.enabled,
        data_classes=body.data_classes,
        anomaly_multiplier=body.anomaly_multiplier,
        log_arguments=body.log_arguments,
        created_by=principal.user_id,
    )
    _set_credential(server, body.credential)
    _save(session, server)
    admin_event(session, principal, "server.created", **_summary(server))
    return server


def update(
    session: Session, principal: OrgPrincipal, server_id: str, body: ServerUpdate
) -> McpServer:
    server = get(session, principal, server_id)
    require_manage(principal, server)
    changes = body.model_dump(exclude_unset=True, by_alias=False)
    for field in (
        "name",
        "slug",
        "auth_type",
        "enabled",
        "anomaly_multiplier",
        "log_arguments",
        "data_classes",
    ):
        if field in changes and changes[field] is None:
            raise Unprocessable(details=[{"field": to_camel(field), "message": "Cannot be null."}])
    if "url" in changes:
        changes["url"] = _checked_url(str(changes["url"]))
    credential_change = "credential" in changes
    credential = changes.pop("credential", None)
    for field, value in changes.items():
        setattr(server, field, value)
    if credential_change:
        _set_credential(server, credential)
    _check_auth(server.auth_type, server.auth_header_name, server.credential_ciphertext is not None)
    server.updated_at = utcnow()
    _save(session, server)
    fields = sorted(
        to_camel(name) for name in [*changes, *(["credential"] if credential_change else [])]
    )
    admin_event(session, principal, "server.updated", fields=fields, **_summary(server))
    return server


def delete(session: Session, principal: OrgPrincipal, server_id: str, *, force: bool) -> None:
    server = get(session, principal, server_id)
    require_manage(principal, server)
    policies = repository.policies_on_server(session, principal.organization_id, server.id)
    if policies and not force:
        raise ServerInUse(
            details=[{"field": "policies", "message": policy.id} for policy in policies]
        )
    repository.delete_policies(session, [policy.id for policy in policies])
    for policy in policies:
        admin_event(
            session,
            principal,
            "policy.deleted",
            policyId=policy.id,
            policyVersion=policy.version,
            serverId=server.id,
            reason="server deleted",
        )
    repository.delete_row(session, server)
    admin_event(
        session,
        principal,
        "server.deleted",
        forcedPolicies=[p.id for p in policies],
        **_summary(server),
    )


def list_page(
    session: Session, principal: OrgPrincipal, *, limit: int, cursor: str | None
) -> tuple[list[McpServer], str | None]:
    after = decode_cursor(cursor, (datetime.fromisoformat, str))
    rows = repository.list_servers(
        session,
        principal.organization_id,
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    return page(rows, limit, lambda server: (server.created_at.isoformat(), server.id))


def _summary(server: McpServer) -> dict[str, Any]:
    """What audit events say about a server: never the credential."""
    return {
        "serverId": server.id,
        "slug": server.slug,
        "url": server.url,
        "authType": server.auth_type,
        "hasCredential": server.credential_ciphertext is not None,
        "enabled": server.enabled,
        "dataClasses": list(server.data_classes),
    }
