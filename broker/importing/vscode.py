"""VS Code: the user profile's mcp.json, a workspace's .vscode/mcp.json,
and the older `"mcp": {"servers": ...}` in settings.json.

Documented locations (code.visualstudio.com, "Use MCP servers in VS Code"):
- user profile: <user dir>/mcp.json, the user dir being
  ~/.config/Code/User (Linux), ~/Library/Application Support/Code/User
  (macOS), %APPDATA%\\Code\\User (Windows);
- workspace: <folder>/.vscode/mcp.json;
- before mcp.json existed: `mcp.servers` in the user settings.json.

Format: `{"servers": {NAME: {"type": "http" | "sse", "url": ..., "headers":
{...}}}}` or `{"type": "stdio", "command": ..., "args": [...]}`, plus
`inputs`. These files are JSON with comments (JSONC): they are read with
comments allowed, and a file that has comments is not rewritten (its
comments would be lost); `import` says so and prints the entry to paste.
The broker's replacement is the stdio proxy (broker.cli.snippets).
"""

from __future__ import annotations

import os
from pathlib import Path

from .found import ConfigFile, FoundServer, found_in

__all__ = ["CLIENT", "JSONC", "SNIPPET", "config_paths", "find"]

CLIENT = "vscode"
SNIPPET = "vscode"
JSONC = True


def user_dir(home: Path, system: str, env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if system == "darwin":
        return home / "Library" / "Application Support" / "Code" / "User"
    if system == "win32":
        return Path(env.get("APPDATA") or home / "AppData" / "Roaming") / "Code" / "User"
    return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "Code" / "User"


def config_paths(home: Path, system: str, project: Path | None = None, env: dict[str, str] | None = None) -> list[Path]:
    user = user_dir(home, system, env)
    paths = [user / "mcp.json", user / "settings.json"]
    if project is not None and project != home:
        paths.append(project / ".vscode" / "mcp.json")
    return paths


def find(config: ConfigFile) -> list[FoundServer]:
    if config.path.name == "settings.json":
        return found_in(CLIENT, config, ("mcp", "servers"))
    return found_in(CLIENT, config, ("servers",))
