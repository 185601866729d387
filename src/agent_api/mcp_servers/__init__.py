"""The MCP server registry."""
