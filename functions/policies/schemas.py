"""Request and response bodies of the policies function."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from shared.governance.rules import Rules
from shared.permissions import Role
from shared.schemas import ApiModel, ReadModel

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"
DATA_CLASS_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Headers an upstream credential may not be injected as: they would let a tenant steer
# the proxy's own request (routing, framing, cookies).
FORBIDDEN_AUTH_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "cookie",
        "mcp-session-id",
        "mcp-protocol-version",
        "accept",
        "te",
        "upgrade",
        "proxy-authorization",
    }
)
AuthType = Literal["none", "bearer", "header"]


def _check_data_classes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    for value in values:
        if not DATA_CLASS_PATTERN.match(value):
            raise ValueError("data classes are lower-case words such as phi, pii, financial")
    return sorted(set(values))


def _check_header_name(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9-]{1,128}", value):
        raise ValueError("a header name is letters, digits and dashes")
    if value.lower() in FORBIDDEN_AUTH_HEADERS:
        raise ValueError("this header cannot carry a credential")
    return value


class ServerCreate(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(pattern=SLUG_PATTERN)
    url: str = Field(min_length=1, max_length=2048)
    auth_type: AuthType = "none"
    auth_header_name: str | None = None
    credential: str | None = Field(default=None, min_length=1, max_length=8192)
    enabled: bool = True
    data_classes: list[str] = Field(default_factory=list, max_length=32)
    anomaly_multiplier: float = Field(default=3.0, gt=0, le=1000)
    log_arguments: bool = False

    _data_classes = field_validator("data_classes")(_check_data_classes)
    _header = field_validator("auth_header_name")(_check_header_name)


class ServerUpdate(ApiModel):
    """Every field optional; `credential: null` removes the stored credential."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    slug: str | None = Field(default=None, pattern=SLUG_PATTERN)
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    auth_type: AuthType | None = None
    auth_header_name: str | None = None
    credential: str | None = Field(default=None, min_length=1, max_length=8192)
    enabled: bool | None = None
    data_classes: list[str] | None = Field(default=None, max_length=32)
    anomaly_multiplier: float | None = Field(default=None, gt=0, le=1000)
    log_arguments: bool | None = None

    _data_classes = field_validator("data_classes")(_check_data_classes)
    _header = field_validator("auth_header_name")(_check_header_name)


class ServerRead(ReadModel):
    id: str
    name: str
    slug: str
    url: str
    auth_type: AuthType
    auth_header_name: str | None
    has_credential: bool
    enabled: bool
    data_classes: list[str]
    anomaly_multiplier: float
    log_arguments: bool
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class ToolRead(ReadModel):
    name: str
    description: str | None
    input_schema: dict[str, object]
    fingerprint: str
    first_seen_at: datetime
    last_seen_at: datetime
    changed_at: datetime | None


AgentSessionStatus = Literal["active", "suspended", "completed"]


class AgentSessionRead(ReadModel):
    id: str
    server_id: str
    principal_type: Literal["api_key", "user"]
    principal_id: str
    status: AgentSessionStatus
    tool_calls_count: int
    started_at: datetime
    last_activity_at: datetime
    completed_at: datetime | None = None
    suspended_at: datetime | None = None
    suspended_reason: str | None = None
    suspended_by: str | None = None


class SuspendBody(ApiModel):
    reason: str = Field(min_length=1, max_length=1000)


ApprovalStatus = Literal["pending", "approved", "rejected", "used", "expired"]


class ApprovalRead(ReadModel):
    id: str
    server_id: str
    agent_session_id: str | None
    tool_name: str
    arguments_digest: str
    policy_id: str
    policy_version: int
    principal_type: Literal["api_key", "user"]
    principal_id: str
    requester_user_id: str | None
    status: ApprovalStatus
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    used_at: datetime | None
    expires_at: datetime
    created_at: datetime


class DecisionBody(ApiModel):
    reason: str | None = Field(default=None, max_length=1000)


class PolicyCreate(ApiModel):
    name: str = Field(min_length=1, max_length=200)
    server_id: str | None = Field(default=None, pattern=r"^srv_[0-9A-Za-z]{21}$")
    priority: int = Field(default=100, ge=-1_000_000, le=1_000_000)
    active: bool = True
    rules: Rules


class PolicyUpdate(ApiModel):
    """Every field optional; `serverId: null` makes the policy org-wide."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    server_id: str | None = Field(default=None, pattern=r"^srv_[0-9A-Za-z]{21}$")
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    active: bool | None = None
    rules: Rules | None = None


class PolicyRead(ReadModel):
    id: str
    name: str
    server_id: str | None
    priority: int
    active: bool
    rules: list[dict[str, Any]]
    version: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class PolicyVersionRead(ReadModel):
    policy_id: str
    version: int
    snapshot: dict[str, Any]
    created_by: str | None
    created_at: datetime


class EvaluateRequest(ApiModel):
    server_id: str | None = Field(default=None, pattern=r"^srv_[0-9A-Za-z]{21}$")
    server_slug: str | None = Field(default=None, pattern=SLUG_PATTERN)
    tool: str = Field(min_length=1, max_length=256)
    arguments: dict[str, Any] = Field(default_factory=dict)
    user: str | None = Field(default=None, max_length=255)
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    role: Role | None = None


class EvaluateResult(ReadModel):
    decision: Literal["allow", "deny", "alert", "redact", "require_approval"]
    policy_id: str | None
    policy_version: int | None
    rule_index: int | None
    reason: str
    rate_limit: dict[str, Any] | None = None
    redact: list[str] = Field(default_factory=list)
