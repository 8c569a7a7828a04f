"""Prefixed nanoid IDs (API.md §9): the one registry of prefixes."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import Path
from nanoid import generate

ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SIZE: Final = 21

PREFIXES: Final[dict[str, str]] = {
    "user": "usr",
    "account": "acc",
    "session": "ses",
    "organization": "org",
    "member": "mem",
    "invitation": "inv",
    "verification": "ver",
    "mcp_server": "srv",
    "policy": "pol",
    "policy_version": "pov",
    "agent_session": "ags",
    "audit_event": "evt",
    "baa": "baa",
    "ai_system": "ais",
    "api_key": "key",
    "approval": "apr",
    "server_tool": "tool",
    "backup": "bak",
    "rate_limit": "rlc",
    "request": "req",
    "trace": "trc",
}


def new_id(kind: str) -> str:
    """A fresh `<prefix>_<nanoid>` for one of the registered kinds."""
    return f"{PREFIXES[kind]}_{generate(ALPHABET, SIZE)}"


def id_pattern(kind: str) -> str:
    """The regular expression a well-formed ID of `kind` matches."""
    return rf"^{PREFIXES[kind]}_[0-9A-Za-z]{{{SIZE}}}$"


def is_valid_id(kind: str, value: str) -> bool:
    """True when `value` is a well-formed ID of `kind` (existence is not checked)."""
    return re.fullmatch(id_pattern(kind), value) is not None


def id_factory(kind: str) -> Callable[[], str]:
    """A `default_factory` for a model's primary key."""
    PREFIXES[kind]  # fail at import time for an unknown kind

    def make() -> str:
        return new_id(kind)

    return make


def path_id(kind: str) -> Any:
    """A path parameter that only accepts a well-formed ID of `kind` (else 422)."""
    return Path(pattern=id_pattern(kind), description=f"`{PREFIXES[kind]}_…` ID")


UserId = Annotated[str, path_id("user")]
OrganizationId = Annotated[str, path_id("organization")]
McpServerId = Annotated[str, path_id("mcp_server")]
PolicyId = Annotated[str, path_id("policy")]
AgentSessionId = Annotated[str, path_id("agent_session")]
AuditEventId = Annotated[str, path_id("audit_event")]
BaaId = Annotated[str, path_id("baa")]
AiSystemId = Annotated[str, path_id("ai_system")]
ApiKeyId = Annotated[str, path_id("api_key")]
ApprovalId = Annotated[str, path_id("approval")]
