"""Claude Code: ~/.claude.json and a project's .mcp.json.

Documented locations (docs.anthropic.com, "Connect Claude Code to tools via
MCP", scopes):
- user scope: `mcpServers` at the top of ~/.claude.json
  ($CLAUDE_CONFIG_DIR/.claude.json when that is set);
- local scope: `projects[<absolute project path>].mcpServers` in the same file;
- project scope: `mcpServers` in <project>/.mcp.json.

Format: `{NAME: {"type": "http" | "sse", "url": ..., "headers": {...},
"headersHelper": "<command>"}}` for remote servers, `{"type": "stdio",
"command": ..., "args": [...], "env": {...}}` for local ones. The broker's
replacement is an http entry whose `headersHelper` runs `mcp-token-broker
headers NAME` before each connection (broker.cli.snippets).

~/.claude.json also holds Claude Code's own state (history, caches): a
rewrite changes only the picked entry and keeps every other key in order.
"""

from __future__ import annotations

import os
from pathlib import Path

from .found import ConfigFile, FoundServer, entries_in, found_in

__all__ = ["CLIENT", "SNIPPET", "config_paths", "find"]

CLIENT = "claude-code"
SNIPPET = "claude-code"


def config_paths(home: Path, project: Path | None = None, env: dict[str, str] | None = None) -> list[Path]:
    env = dict(os.environ) if env is None else env
    base = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home
    paths = [base / ".claude.json"]
    if project is not None:
        paths.append(project / ".mcp.json")
    return paths


def find(config: ConfigFile) -> list[FoundServer]:
    """User-scope and every project's local-scope servers of ~/.claude.json,
    or the servers of a .mcp.json (the same top-level table)."""
    found = found_in(CLIENT, config, ("mcpServers",))
    if config.path.name == ".mcp.json":
        return found
    for project in entries_in(config.data, ("projects",)):
        found += found_in(CLIENT, config, ("projects", project, "mcpServers"))
    return found
