"""Policies (API.md §4.2): versioned CRUD and the side-effect-free evaluation dry run.
Raises domain errors, writes audit events, never commits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from functions.policies import repository
from functions.policies.schemas import EvaluateRequest, PolicyCreate, PolicyUpdate
from functions.policies.servers import admin_event, require_manage
from functions.policies.servers import get as get_server
from shared.auth import OrgPrincipal
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable
from shared.governance.engine import CallContext, Decision, evaluate
from shared.governance.rules import rules_to_json
from shared.models import McpServer, Policy, PolicyVersion
from shared.models.base import utcnow
from shared.pagination import decode_cursor, page
from shared.permissions import Permission
from shared.policy_store import load_policies


class PolicyNameTaken(Conflict):
    code = "name_taken"
    default_message = "Another policy in this organization has that name."


def get(session: Session, principal: OrgPrincipal, policy_id: str) -> Policy:
    policy = repository.get_policy(session, principal.organization_id, policy_id)
    if policy is None:
        raise NotFound("No such policy.")
    return policy


def _require_manage(session: Session, principal: OrgPrincipal, server_id: str | None) -> None:
    """Org-wide policies are for owners and admins; a server's policies for whoever
    manages that server (developers: the servers they created)."""
    if server_id is None:
        if not principal.can(Permission.GOVERNANCE_MANAGE):
            raise Forbidden("Only owners and admins manage organization-wide policies.")
        return
    require_manage(principal, get_server_for_policy(session, principal, server_id))


def get_server_for_policy(session: Session, principal: OrgPrincipal, server_id: str) -> McpServer:
    server = repository.get_server(session, principal.organization_id, server_id)
    if server is None:
        raise Unprocessable(details=[{"field": "serverId", "message": "No such server."}])
    return server


def _snapshot(policy: Policy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "serverId": policy.server_id,
        "priority": policy.priority,
        "active": policy.active,
        "rules": policy.rules,
    }


def _record_version(session: Session, principal: OrgPrincipal, policy: Policy) -> None:
    repository.add(
        session,
        PolicyVersion(
            organization_id=policy.organization_id,
            policy_id=policy.id,
            version=policy.version,
            snapshot=_snapshot(policy),
            created_by=principal.principal_id,
        ),
    )


def _save(session: Session, policy: Policy) -> None:
    if repository.policy_name_taken(session, policy.organization_id, policy.name, policy.id):
        raise PolicyNameTaken()
    try:
        repository.add(session, policy)
    except IntegrityError:
        raise PolicyNameTaken() from None


def create(session: Session, principal: OrgPrincipal, body: PolicyCreate) -> Policy:
    _require_manage(session, principal, body.server_id)
    policy = Policy(
        organization_id=principal.organization_id,
        server_id=body.server_id,
        name=body.name,
        priority=body.priority,
        active=body.active,
        rules=rules_to_json(body.rules),
        version=1,
        created_by=principal.user_id,
    )
    _save(session, policy)
    _record_version(session, principal, policy)
    admin_event(
        session,
        principal,
        "policy.created",
        policyId=policy.id,
        policyVersion=policy.version,
        serverId=policy.server_id,
    )
    return policy


def update(session: Session, principal: OrgPrincipal, policy_id: str, body: PolicyUpdate) -> Policy:
    """Every change makes a new version; the old ones stay readable."""
    policy = repository.get_policy(session, principal.organization_id, policy_id, for_update=True)
    if policy is None:
        raise NotFound("No such policy.")
    _require_manage(session, principal, policy.server_id)
    changes = body.model_dump(exclude_unset=True, by_alias=False)
    for field in ("name", "priority", "active", "rules"):
        if field in changes and changes[field] is None:
            raise Unprocessable(details=[{"field": to_camel(field), "message": "Cannot be null."}])
    if "server_id" in changes:
        _require_manage(session, principal, changes["server_id"])
    if body.rules is not None:
        changes["rules"] = rules_to_json(body.rules)
    for field, value in changes.items():
        setattr(policy, field, value)
    policy.version += 1
    policy.updated_at = utcnow()
    _save(session, policy)
    _record_version(session, principal, policy)
    admin_event(
        session,
        principal,
        "policy.updated",
        policyId=policy.id,
        policyVersion=policy.version,
        serverId=policy.server_id,
        fields=sorted(to_camel(name) for name in changes),
    )
    return policy


def delete(session: Session, principal: OrgPrincipal, policy_id: str) -> None:
    policy = repository.get_policy(session, principal.organization_id, policy_id, for_update=True)
    if policy is None:
        raise NotFound("No such policy.")
    _require_manage(session, principal, policy.server_id)
    repository.delete_row(session, policy)
    admin_event(
        session,
        principal,
        "policy.deleted",
        policyId=policy.id,
        policyVersion=policy.version,
        serverId=policy.server_id,
    )


def list_page(
    session: Session,
    principal: OrgPrincipal,
    *,
    server_id: str | None,
    active: bool | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Policy], str | None]:
    after = decode_cursor(cursor, (datetime.fromisoformat, str))
    rows = repository.list_policies(
        session,
        principal.organization_id,
        server_id=server_id,
        active=active,
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    return page(rows, limit, lambda row: (row.created_at.isoformat(), row.id))


def versions(
    session: Session, principal: OrgPrincipal, policy_id: str, *, version: int | None = None
) -> list[PolicyVersion]:
    """A policy's versions, newest first; they outlive the policy itself."""
    rows = repository.policy_versions(
        session, principal.organization_id, policy_id, version=version
    )
    if not rows:
        raise NotFound("No such policy version.")
    return rows


def dry_run(session: Session, principal: OrgPrincipal, body: EvaluateRequest) -> Decision:
    """What the proxy would decide for this call, with no side effects (nothing counted,
    recorded or changed)."""
    if (body.server_id is None) == (body.server_slug is None):
        raise Unprocessable(
            details=[{"field": "serverId", "message": "Give exactly one of serverId, serverSlug."}]
        )
    if body.server_id is not None:
        server = get_server(session, principal, body.server_id)
    else:
        found = repository.get_server_by_slug(
            session, principal.organization_id, str(body.server_slug)
        )
        if found is None:
            raise NotFound("No such server.")
        server = found
    snapshots = load_policies(session, principal.organization_id, server.id)
    context = CallContext(
        tool=body.tool,
        arguments=body.arguments,
        user=body.user,
        metadata=body.metadata,
        role=(body.role or principal.role).value,
    )
    return evaluate(snapshots, server.id, context)
