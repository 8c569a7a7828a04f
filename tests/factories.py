"""Plain factory functions for test data: `make_x(db, **overrides)`; rows are flushed, not
committed (the test's transaction is rolled back afterwards)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from shared.auth import SESSION_ABSOLUTE_TTL, SESSION_TTL
from shared.ids import new_id
from shared.models import (
    Account,
    AgentSession,
    ApiKey,
    Approval,
    McpServer,
    Member,
    Organization,
    Policy,
    PolicyVersion,
    User,
)
from shared.models import Session as UserSession
from shared.models.base import utcnow
from shared.permissions import Role
from shared.security import (
    API_KEY_START_LENGTH,
    hash_password,
    new_api_key,
    new_session_token,
    token_digest,
)


def unique(prefix: str) -> str:
    return f"{prefix}{new_id('request')[-10:].lower()}"


def make_user(db: Session, *, password: str | None = None, **overrides: Any) -> User:
    values: dict[str, Any] = {"name": "Test User", "email": f"{unique('user-')}@example.com"}
    values.update(overrides)
    user = User(**values)
    db.add(user)
    db.flush()
    if password is not None:
        db.add(
            Account(
                user_id=user.id,
                provider_id="credential",
                account_id=user.id,
                password_hash=hash_password(password),
            )
        )
    db.flush()
    return user


def make_org(db: Session, **overrides: Any) -> Organization:
    slug = unique("org-")
    values: dict[str, Any] = {"name": slug, "slug": slug}
    values.update(overrides)
    org = Organization(**values)
    db.add(org)
    db.flush()
    return org


def make_member(db: Session, org: Organization, user: User, role: Role = Role.OWNER) -> Member:
    member = Member(organization_id=org.id, user_id=user.id, role=role.value)
    db.add(member)
    db.flush()
    return member


def make_session(
    db: Session, user: User, org: Organization | None = None, **overrides: Any
) -> tuple[UserSession, str]:
    token = new_session_token()
    now = utcnow()
    values: dict[str, Any] = {
        "token_hash": token_digest(token),
        "user_id": user.id,
        "active_organization_id": org.id if org else None,
        "expires_at": now + SESSION_TTL,
        "absolute_expires_at": now + SESSION_ABSOLUTE_TTL,
    }
    values.update(overrides)
    row = UserSession(**values)
    db.add(row)
    db.flush()
    return row, token


def make_api_key(
    db: Session, org: Organization, creator: User, role: Role = Role.DEVELOPER, **overrides: Any
) -> tuple[ApiKey, str]:
    key = new_api_key()
    values: dict[str, Any] = {
        "organization_id": org.id,
        "name": unique("key-"),
        "role": role.value,
        "start": key[:API_KEY_START_LENGTH],
        "key_hash": token_digest(key),
        "created_by": creator.id,
    }
    values.update(overrides)
    row = ApiKey(**values)
    db.add(row)
    db.flush()
    return row, key


@dataclass
class Actor:
    """A signed-in member of an organization, ready to call the API."""

    user: User
    org: Organization
    member: Member
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_actor(db: Session, role: Role = Role.OWNER, org: Organization | None = None) -> Actor:
    org = org or make_org(db)
    user = make_user(db)
    member = make_member(db, org, user, role)
    _, token = make_session(db, user, org)
    return Actor(user=user, org=org, member=member, token=token)


def expired(delta: timedelta = timedelta(seconds=1)) -> Any:
    return utcnow() - delta


from shared.models import Invitation  # noqa: E402 - added with make_invitation, below


def make_invitation(
    db: Session,
    org: Organization,
    inviter: User,
    email: str | None = None,
    role: Role = Role.DEVELOPER,
    **overrides: Any,
) -> Invitation:
    """A pending invitation that expires in 48 hours (override `status`, `expires_at`)."""
    values: dict[str, Any] = {
        "organization_id": org.id,
        "email": email or f"{unique('invitee-')}@example.com",
        "role": role.value,
        "status": "pending",
        "inviter_id": inviter.id,
        "expires_at": utcnow() + timedelta(hours=48),
    }
    values.update(overrides)
    invitation = Invitation(**values)
    db.add(invitation)
    db.flush()
    return invitation


def make_server(
    db: Session, org: Organization, creator: User | None = None, **overrides: Any
) -> McpServer:
    slug = unique("srv-")
    values: dict[str, Any] = {
        "organization_id": org.id,
        "name": slug,
        "slug": slug,
        "url": "http://127.0.0.1:9/mcp",
        "created_by": creator.id if creator else None,
    }
    values.update(overrides)
    server = McpServer(**values)
    db.add(server)
    db.flush()
    return server


def make_agent_session(
    db: Session, server: McpServer, principal_id: str | None = None, **overrides: Any
) -> AgentSession:
    values: dict[str, Any] = {
        "organization_id": server.organization_id,
        "server_id": server.id,
        "principal_type": "user",
        "principal_id": principal_id or new_id("user"),
    }
    values.update(overrides)
    row = AgentSession(**values)
    db.add(row)
    db.flush()
    return row


def make_approval(
    db: Session, server: McpServer, requester: User | None = None, **overrides: Any
) -> Approval:
    values: dict[str, Any] = {
        "organization_id": server.organization_id,
        "server_id": server.id,
        "tool_name": "delete_users",
        "arguments_digest": "0" * 64,
        "policy_id": new_id("policy"),
        "policy_version": 1,
        "principal_type": "user",
        "principal_id": requester.id if requester else new_id("user"),
        "requester_user_id": requester.id if requester else None,
        "expires_at": utcnow() + timedelta(hours=1),
    }
    values.update(overrides)
    row = Approval(**values)
    db.add(row)
    db.flush()
    return row


def make_policy(
    db: Session, org: Organization, server: McpServer | None = None, **overrides: Any
) -> Policy:
    values: dict[str, Any] = {
        "organization_id": org.id,
        "server_id": server.id if server else None,
        "name": unique("policy-"),
        "rules": [{"tool": "*", "action": "allow"}],
    }
    values.update(overrides)
    policy = Policy(**values)
    db.add(policy)
    db.flush()
    db.add(
        PolicyVersion(
            organization_id=org.id,
            policy_id=policy.id,
            version=policy.version,
            snapshot={"name": policy.name, "rules": policy.rules},
        )
    )
    db.flush()
    return policy
