"""Ready-to-paste client configuration for a connection.

Each snippet makes an MCP client take its token from the broker instead of
running its own OAuth flow. The command it names must be one the client can
start: clients run it with their own PATH, on which a checkout's `.venv/bin`
is not, so a command PATH does not find is written as this install's
absolute path.

docs/clients.md says, for each client, where its snippet goes and what
happens when a token expires or the connection logs in again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys

from ..client.socketpath import default_socket_path

__all__ = ["CLIENTS", "PROG", "client_command", "codex_key", "snippet"]

PROG = "mcp-token-broker"

CLIENTS = {
    "claude-code": "Claude Code",
    "claude-desktop": "Claude Desktop",
    "cursor": "Cursor",
    "vscode": "VS Code",
    "codex": "Codex CLI",
    "windsurf": "Windsurf",
    "curl": "curl",
}


def client_command() -> str:
    """The bare name when PATH finds it, else the running install's command:
    the bundle's executable when frozen (packaging/entry.py), or the console
    script beside this interpreter (a venv's bin, symlinks not followed)."""
    if shutil.which(PROG):
        return PROG
    if getattr(sys, "frozen", False):
        return os.path.abspath(sys.executable)
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), PROG)
    return script if os.access(script, os.X_OK) else PROG


def _toml_string(value: str) -> str:
    """A TOML basic string. JSON's escapes are TOML's, but TOML also wants DEL
    escaped, and JSON's surrogate pairs for astral characters are not TOML, so
    those stay literal (ensure_ascii=False)."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def codex_key(name: str) -> str:
    """The `[mcp_servers.KEY]` Codex starts: it refuses a server name outside
    [A-Za-z0-9_-] (a connection name may hold '.'), and such a key is also a
    bare TOML key, so it needs no quoting. The proxy's argument keeps the name."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def snippet(client: str, name: str, server_url: str, *, command: str | None = None) -> str:
    """The text to paste for `client` (a key of CLIENTS); `command` defaults
    to client_command()."""
    if command is None:
        command = client_command()
    if client == "claude-code":
        # Claude Code runs headersHelper before each connection and merges its JSON output.
        helper = f"{shlex.quote(command)} headers {shlex.quote(name)}"
        doc = {"mcpServers": {name: {"type": "http", "url": server_url, "headersHelper": helper}}}
        return json.dumps(doc, indent=2)
    # Clients that start stdio servers run the broker's proxy, which speaks
    # MCP on stdin/stdout and forwards to the remote server with a fresh token
    # on every request.
    stdio = {"command": command, "args": ["proxy", name]}
    if client in ("claude-desktop", "cursor", "windsurf"):
        return json.dumps({"mcpServers": {name: stdio}}, indent=2)
    if client == "codex":
        args = ", ".join(_toml_string(a) for a in ("proxy", name))
        return f"[mcp_servers.{codex_key(name)}]\ncommand = {_toml_string(command)}\nargs = [{args}]"
    if client == "vscode":
        return json.dumps({"servers": {name: {"type": "stdio", **stdio}}}, indent=2)
    if client == "curl":
        return f"curl -s --unix-socket {shlex.quote(default_socket_path())} http://broker/v1/connections/{name}/token"
    raise KeyError(client)
