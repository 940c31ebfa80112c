"""Ready-to-paste client configuration for a connection.

Each snippet makes an MCP client take its token from the broker instead of
running its own OAuth flow.
"""

from __future__ import annotations

import json
import shlex

from ..client.socketpath import default_socket_path

__all__ = ["CLIENTS", "snippet"]

CLIENTS = {
    "claude-code": "Claude Code",
    "claude-desktop": "Claude Desktop",
    "cursor": "Cursor",
    "vscode": "VS Code",
    "curl": "curl",
}


def snippet(client: str, name: str, server_url: str, *, command: str = "mcp-token-broker") -> str:
    """The text to paste for `client` (a key of CLIENTS)."""
    if client == "claude-code":
        # Claude Code runs headersHelper before each connection and merges its JSON output.
        doc = {
            "mcpServers": {
                name: {"type": "http", "url": server_url, "headersHelper": f"{command} headers {shlex.quote(name)}"}
            }
        }
        return json.dumps(doc, indent=2)
    # Clients that start stdio servers run the broker's proxy, which speaks
    # MCP on stdin/stdout and forwards to the remote server with a fresh token
    # on every request.
    stdio = {"command": command, "args": ["proxy", name]}
    if client in ("claude-desktop", "cursor"):
        return json.dumps({"mcpServers": {name: stdio}}, indent=2)
    if client == "vscode":
        return json.dumps({"servers": {name: {"type": "stdio", **stdio}}}, indent=2)
    if client == "curl":
        return f"curl -s --unix-socket {shlex.quote(default_socket_path())} http://broker/v1/connections/{name}/token"
    raise KeyError(client)
