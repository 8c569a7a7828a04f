"""Every table, one module each; importing this package registers them all on `metadata`."""

from shared.models.account import Account
from shared.models.agent_session import AgentSession
from shared.models.ai_system import AiSystem
from shared.models.api_key import ApiKey
from shared.models.approval import Approval
from shared.models.audit_event import AuditChainHead, AuditEvent
from shared.models.baa import Baa
from shared.models.backup import Backup
from shared.models.base import metadata
from shared.models.invitation import Invitation
from shared.models.mcp_server import McpServer
from shared.models.member import Member
from shared.models.organization import Organization
from shared.models.policy import Policy
from shared.models.policy_version import PolicyVersion
from shared.models.rate_limit_counter import RateLimitCounter
from shared.models.server_tool import ServerTool
from shared.models.session import Session
from shared.models.user import User
from shared.models.verification import Verification

__all__ = [
    "Account",
    "AgentSession",
    "AiSystem",
    "ApiKey",
    "Approval",
    "AuditChainHead",
    "AuditEvent",
    "Baa",
    "Backup",
    "Invitation",
    "McpServer",
    "Member",
    "Organization",
    "Policy",
    "PolicyVersion",
    "RateLimitCounter",
    "ServerTool",
    "Session",
    "User",
    "Verification",
    "metadata",
]
