"""Claude Desktop: `claude_desktop_config.json`.

Documented locations (modelcontextprotocol.io, "Connect to local MCP servers"):
- macOS: ~/Library/Application Support/Claude/claude_desktop_config.json
- Windows: %APPDATA%\\Claude\\claude_desktop_config.json
- Linux (unofficial builds): ~/.config/Claude/claude_desktop_config.json

Format: `{"mcpServers": {NAME: {"command": ..., "args": [...], "env": {...}}}}`.
The file only starts stdio servers, so a remote server appears as
`npx -y mcp-remote URL`. The broker's replacement is the same stdio shape
running `mcp-token-broker proxy NAME` (broker.cli.snippets).
"""

from __future__ import annotations

import os
from pathlib import Path

from .found import ConfigFile, FoundServer, found_in

__all__ = ["CLIENT", "SNIPPET", "TABLE", "config_paths", "find"]

CLIENT = "claude-desktop"
#: The broker.cli.snippets client whose entry replaces a picked one.
SNIPPET = "claude-desktop"
TABLE = ("mcpServers",)


def config_paths(home: Path, system: str, env: dict[str, str] | None = None) -> list[Path]:
    env = dict(os.environ) if env is None else env
    if system == "darwin":
        base = home / "Library" / "Application Support"
    elif system == "win32":
        base = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
    else:
        base = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return [base / "Claude" / "claude_desktop_config.json"]


def find(config: ConfigFile) -> list[FoundServer]:
    return found_in(CLIENT, config, TABLE)
