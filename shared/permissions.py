"""Roles and what each may do (API.md §1): the one permission table.

Every route of every function declares the permission it needs with `shared.auth.requires`
(or `shared.auth.public`); a test walks all routes to prove none is left undeclared.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    CISO = "ciso"
    AUDITOR = "auditor"


class Permission(StrEnum):
    # Governance: servers, policies, agent sessions, kill switch, approvals.
    GOVERNANCE_READ = "governance:read"
    GOVERNANCE_MANAGE = "governance:manage"
    # Developers manage the servers they created and the policies on them (checked by the
    # service against the object's creator).
    GOVERNANCE_MANAGE_OWN = "governance:manage_own"
    APPROVALS_DECIDE = "approvals:decide"
    # Compliance: BAAs, AI systems, reports.
    COMPLIANCE_READ = "compliance:read"
    COMPLIANCE_MANAGE = "compliance:manage"
    # Audit trail.
    AUDIT_READ = "audit:read"
    AUDIT_EXPORT = "audit:export"  # export and verify
    AUDIT_INGEST = "audit:ingest"
    # Organization, members, invitations.
    ORGANIZATION_READ = "organization:read"
    ORGANIZATION_UPDATE = "organization:update"
    ORGANIZATION_DELETE = "organization:delete"
    MEMBERS_MANAGE = "members:manage"  # not owners
    MEMBERS_MANAGE_OWNERS = "members:manage_owners"
    # API keys.
    API_KEYS_OWN = "api_keys:own"
    API_KEYS_ALL = "api_keys:all"
    # The proxy.
    PROXY_CALL = "proxy:call"


_VIEW: Final = {
    Permission.GOVERNANCE_READ,
    Permission.COMPLIANCE_READ,
    Permission.AUDIT_READ,
    Permission.ORGANIZATION_READ,
    Permission.API_KEYS_OWN,
}

ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.OWNER: frozenset(Permission),
    Role.ADMIN: frozenset(Permission)
    - {Permission.MEMBERS_MANAGE_OWNERS, Permission.ORGANIZATION_DELETE},
    Role.DEVELOPER: frozenset(
        _VIEW | {Permission.GOVERNANCE_MANAGE_OWN, Permission.PROXY_CALL, Permission.AUDIT_INGEST}
    ),
    Role.CISO: frozenset(
        _VIEW
        | {
            Permission.COMPLIANCE_MANAGE,
            Permission.AUDIT_EXPORT,
            Permission.APPROVALS_DECIDE,
            Permission.PROXY_CALL,
            Permission.AUDIT_INGEST,
        }
    ),
    Role.AUDITOR: frozenset(_VIEW | {Permission.AUDIT_EXPORT}),
}


def has_permission(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def role_within(role: Role, limit: Role) -> bool:
    """True when `role` can do nothing that `limit` cannot (API keys: role ≤ creator's)."""
    return ROLE_PERMISSIONS[role] <= ROLE_PERMISSIONS[limit]
