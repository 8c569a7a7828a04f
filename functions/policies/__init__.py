"""The policies function: MCP servers, policies, agent sessions, kill switch, approvals."""
