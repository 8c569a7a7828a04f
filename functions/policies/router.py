"""HTTP routes of the policies function: paths, status codes, permissions. No SQL, no commit."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from functions.policies import approvals, discovery, kill_switch, policies, servers
from functions.policies.schemas import (
    AgentSessionRead,
    AgentSessionStatus,
    ApprovalRead,
    ApprovalStatus,
    DecisionBody,
    EvaluateRequest,
    EvaluateResult,
    PolicyCreate,
    PolicyRead,
    PolicyUpdate,
    PolicyVersionRead,
    ServerCreate,
    ServerRead,
    ServerUpdate,
    SuspendBody,
    ToolRead,
)
from shared.auth import OrgPrincipal, requires
from shared.db import SessionDep
from shared.ids import AgentSessionId, ApprovalId, McpServerId, PolicyId
from shared.models import McpServer
from shared.models.base import utcnow
from shared.pagination import DEFAULT_LIMIT, CursorQuery, LimitQuery
from shared.permissions import Permission
from shared.schemas import Envelope, ListEnvelope, PageMeta

servers_router = APIRouter(prefix="/api/v1/servers", tags=["servers"])
policies_router = APIRouter(prefix="/api/v1/policies", tags=["policies"])
sessions_router = APIRouter(prefix="/api/v1/sessions", tags=["sessions"])
approvals_router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])
Reader = Annotated[OrgPrincipal, Depends(requires(Permission.GOVERNANCE_READ))]
# Developers pass this guard too; the service limits them to the servers they created.
Manager = Annotated[OrgPrincipal, Depends(requires(Permission.GOVERNANCE_MANAGE_OWN))]
Approver = Annotated[OrgPrincipal, Depends(requires(Permission.APPROVALS_DECIDE))]
ServerFilter = Annotated[
    str | None,
    Query(alias="serverId", pattern=r"^srv_[0-9A-Za-z]{21}$", description="Only this server"),
]


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


@servers_router.post("/{server_id}/discover", response_model=ListEnvelope[ToolRead])
def discover_tools(server_id: McpServerId, principal: Manager, session: SessionDep) -> Any:
    """Call the upstream's tools/list and store each tool with its fingerprint."""
    target = discovery.target(session, principal, server_id)
    # End the read transaction before the upstream call: a pooled connection must not be
    # held (pinned, behind PgBouncer) while a remote server takes its time.
    session.commit()
    tools = discovery.fetch(target)
    rows = discovery.store(session, principal, server_id, tools)
    return ListEnvelope(
        data=[ToolRead.model_validate(row) for row in rows], meta=PageMeta(next_cursor=None)
    )


@servers_router.get("/{server_id}/tools", response_model=ListEnvelope[ToolRead])
def list_tools(server_id: McpServerId, principal: Reader, session: SessionDep) -> Any:
    """The server's stored tools with `firstSeenAt`, `changedAt` and `fingerprint`."""
    rows = discovery.stored_tools(session, principal, server_id)
    return ListEnvelope(
        data=[ToolRead.model_validate(row) for row in rows], meta=PageMeta(next_cursor=None)
    )


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


@sessions_router.get("", response_model=ListEnvelope[AgentSessionRead])
def list_sessions(
    *,
    principal: Reader,
    session: SessionDep,
    status: Annotated[AgentSessionStatus | None, Query()] = None,
    server_id: ServerFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Any:
    """List agent sessions, newest first (`?status=`, `?serverId=`)."""
    rows, next_cursor = kill_switch.list_page(
        session, principal, status=status, server_id=server_id, limit=limit, cursor=cursor
    )
    now = utcnow()
    return ListEnvelope(
        data=[AgentSessionRead.model_validate(kill_switch.as_read(row, now)) for row in rows],
        meta=PageMeta(next_cursor=next_cursor),
    )


@sessions_router.get("/{session_id}", response_model=Envelope[AgentSessionRead])
def get_session(session_id: AgentSessionId, principal: Reader, session: SessionDep) -> Any:
    """Read one agent session."""
    row = kill_switch.get(session, principal, session_id)
    return Envelope(data=AgentSessionRead.model_validate(kill_switch.as_read(row, utcnow())))


@sessions_router.post("/{session_id}/suspend", response_model=Envelope[AgentSessionRead])
def suspend_session(
    session_id: AgentSessionId, body: SuspendBody, principal: Manager, session: SessionDep
) -> Any:
    """Kill switch: refuse every later call of this session until it is resumed."""
    row = kill_switch.suspend(session, principal, session_id, reason=body.reason)
    return Envelope(data=AgentSessionRead.model_validate(kill_switch.as_read(row, utcnow())))


@sessions_router.post("/{session_id}/resume", response_model=Envelope[AgentSessionRead])
def resume_session(session_id: AgentSessionId, principal: Manager, session: SessionDep) -> Any:
    """Lift the kill switch of a suspended session."""
    row = kill_switch.resume(session, principal, session_id)
    return Envelope(data=AgentSessionRead.model_validate(kill_switch.as_read(row, utcnow())))


@approvals_router.get("", response_model=ListEnvelope[ApprovalRead])
def list_approvals(
    *,
    principal: Reader,
    session: SessionDep,
    status: Annotated[ApprovalStatus | None, Query()] = None,
    server_id: ServerFilter = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Any:
    """List approvals, newest first (`?status=pending` for the queue)."""
    rows, next_cursor = approvals.list_page(
        session, principal, status=status, server_id=server_id, limit=limit, cursor=cursor
    )
    now = utcnow()
    return ListEnvelope(
        data=[ApprovalRead.model_validate(approvals.as_read(row, now)) for row in rows],
        meta=PageMeta(next_cursor=next_cursor),
    )


@approvals_router.get("/{approval_id}", response_model=Envelope[ApprovalRead])
def get_approval(approval_id: ApprovalId, principal: Reader, session: SessionDep) -> Any:
    """Read one approval."""
    row = approvals.get(session, principal, approval_id)
    return Envelope(data=ApprovalRead.model_validate(approvals.as_read(row, utcnow())))


@approvals_router.post("/{approval_id}/approve", response_model=Envelope[ApprovalRead])
def approve(
    approval_id: ApprovalId,
    principal: Approver,
    session: SessionDep,
    body: DecisionBody | None = None,
) -> Any:
    """Grant the exact call this approval is bound to, once."""
    row = approvals.decide(
        session, principal, approval_id, approve=True, reason=body.reason if body else None
    )
    return Envelope(data=ApprovalRead.model_validate(approvals.as_read(row, utcnow())))


@approvals_router.post("/{approval_id}/reject", response_model=Envelope[ApprovalRead])
def reject(
    approval_id: ApprovalId,
    principal: Approver,
    session: SessionDep,
    body: DecisionBody | None = None,
) -> Any:
    """Refuse the call this approval is bound to."""
    row = approvals.decide(
        session, principal, approval_id, approve=False, reason=body.reason if body else None
    )
    return Envelope(data=ApprovalRead.model_validate(approvals.as_read(row, utcnow())))


@policies_router.post("", status_code=201, response_model=Envelope[PolicyRead])
def create_policy(body: PolicyCreate, principal: Manager, session: SessionDep) -> Any:
    """Create a policy (version 1)."""
    return Envelope(data=PolicyRead.model_validate(policies.create(session, principal, body)))


@policies_router.get("", response_model=ListEnvelope[PolicyRead])
def list_policies(
    *,
    principal: Reader,
    session: SessionDep,
    server_id: ServerFilter = None,
    active: Annotated[bool | None, Query()] = None,
    limit: LimitQuery = DEFAULT_LIMIT,
    cursor: CursorQuery = None,
) -> Any:
    """List policies, newest first (`?serverId=`, `?active=`)."""
    rows, next_cursor = policies.list_page(
        session, principal, server_id=server_id, active=active, limit=limit, cursor=cursor
    )
    return ListEnvelope(
        data=[PolicyRead.model_validate(row) for row in rows],
        meta=PageMeta(next_cursor=next_cursor),
    )


@policies_router.post("/evaluate", response_model=Envelope[EvaluateResult])
def evaluate_policy(body: EvaluateRequest, principal: Reader, session: SessionDep) -> Any:
    """Dry run: what the proxy would decide for this call (no side effects)."""
    decision = policies.dry_run(session, principal, body)
    return Envelope(
        data=EvaluateResult(
            decision=decision.decision,
            policy_id=decision.policy_id,
            policy_version=decision.policy_version,
            rule_index=decision.rule_index,
            reason=decision.reason,
            rate_limit=decision.rate_limit.model_dump(by_alias=True)
            if decision.rate_limit
            else None,
            redact=list(decision.redact_paths),
        )
    )


@policies_router.get("/{policy_id}", response_model=Envelope[PolicyRead])
def get_policy(policy_id: PolicyId, principal: Reader, session: SessionDep) -> Any:
    """Read one policy (its current version)."""
    return Envelope(data=PolicyRead.model_validate(policies.get(session, principal, policy_id)))


@policies_router.patch("/{policy_id}", response_model=Envelope[PolicyRead])
def update_policy(
    policy_id: PolicyId, body: PolicyUpdate, principal: Manager, session: SessionDep
) -> Any:
    """Change a policy; every change makes a new version."""
    row = policies.update(session, principal, policy_id, body)
    return Envelope(data=PolicyRead.model_validate(row))


@policies_router.delete("/{policy_id}", status_code=204, response_class=Response)
def delete_policy(policy_id: PolicyId, principal: Manager, session: SessionDep) -> Response:
    """Delete a policy (its versions stay readable)."""
    policies.delete(session, principal, policy_id)
    return Response(status_code=204)


@policies_router.get("/{policy_id}/versions", response_model=ListEnvelope[PolicyVersionRead])
def list_policy_versions(policy_id: PolicyId, principal: Reader, session: SessionDep) -> Any:
    """Every version of a policy, newest first (also after the policy was deleted)."""
    rows = policies.versions(session, principal, policy_id)
    return ListEnvelope(
        data=[PolicyVersionRead.model_validate(row) for row in rows],
        meta=PageMeta(next_cursor=None),
    )


@policies_router.get("/{policy_id}/versions/{version}", response_model=Envelope[PolicyVersionRead])
def get_policy_version(
    policy_id: PolicyId,
    version: Annotated[int, Path(ge=1, le=2_147_483_647)],
    principal: Reader,
    session: SessionDep,
) -> Any:
    """One version of a policy: resolves any audit event's (policyId, policyVersion)."""
    (row,) = policies.versions(session, principal, policy_id, version=version)
    return Envelope(data=PolicyVersionRead.model_validate(row))
