"""Bring in what the user already has: remote MCP servers configured in MCP
clients (Claude Desktop, Claude Code, Cursor, VS Code, Codex) and the tokens
mcp-remote keeps in ~/.mcp-auth.

One module per client reads its documented file format (pure parsing, paths
passed in); `scan` finds the files; `rewrite` points one picked entry at the
broker, with a backup and an atomic write.
"""

__all__: list[str] = []
