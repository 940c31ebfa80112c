"""Cursor: `mcp.json`.

Documented locations (docs.cursor.com, "Model Context Protocol"): the global
~/.cursor/mcp.json on every platform, and a project's .cursor/mcp.json.

Format: `{"mcpServers": {NAME: {"url": ..., "headers": {...}}}}` for a remote
server (streamable HTTP or SSE), or `{"command": ..., "args": [...], "env":
{...}}` for a stdio server (mcp-remote among them). The broker's
replacement is the stdio proxy (broker.cli.snippets).
"""

from __future__ import annotations

from pathlib import Path

from .found import ConfigFile, FoundServer, found_in

__all__ = ["CLIENT", "SNIPPET", "TABLE", "config_paths", "find"]

CLIENT = "cursor"
SNIPPET = "cursor"
TABLE = ("mcpServers",)


def config_paths(home: Path, project: Path | None = None) -> list[Path]:
    paths = [home / ".cursor" / "mcp.json"]
    if project is not None and project != home:
        paths.append(project / ".cursor" / "mcp.json")
    return paths


def find(config: ConfigFile) -> list[FoundServer]:
    return found_in(CLIENT, config, TABLE)
