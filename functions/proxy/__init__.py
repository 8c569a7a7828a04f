"""The proxy function: the MCP governance proxy (/proxy/{slug}, /v1/mcp/{slug})."""
