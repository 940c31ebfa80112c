"""Find the remote MCP servers in every client's documented config files.

`scan` takes the home directory, the platform and the project directory
(for project-scoped files) from its caller, so tests point it at real files
in a temp dir; the CLI and the app pass the user's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import BrokerError
from . import claude_code, claude_desktop, codex, cursor, vscode
from .found import ConfigFile, FoundServer, read_config

__all__ = ["CLIENT_NAMES", "Scan", "scan"]

CLIENT_NAMES = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "cursor": "Cursor",
    "vscode": "VS Code",
    "codex": "Codex",
}


class Scan:
    """What one scan found: the servers, and the files it could not read
    (one line each; the other files still count)."""

    def __init__(self) -> None:
        self.servers: list[FoundServer] = []
        self.problems: list[str] = []
        self.files: list[Path] = []


def scan(
    home: Path | None = None,
    *,
    system: str = sys.platform,
    project: Path | None = None,
    env: dict[str, str] | None = None,
) -> Scan:
    home = Path.home() if home is None else home
    env = dict(os.environ) if env is None else env
    plans: list[tuple[Path, Callable[[Path], ConfigFile | None], Callable[[ConfigFile], list[FoundServer]]]] = []
    json_reader = read_config
    for path in claude_desktop.config_paths(home, system, env):
        plans.append((path, json_reader, claude_desktop.find))
    for path in claude_code.config_paths(home, project, env):
        plans.append((path, json_reader, claude_code.find))
    for path in cursor.config_paths(home, project):
        plans.append((path, json_reader, cursor.find))
    for path in vscode.config_paths(home, system, project, env):
        plans.append((path, lambda p: read_config(p, jsonc=True), vscode.find))
    for path in codex.config_paths(home, env):
        plans.append((path, codex.read, codex.find))
    result = Scan()
    seen: set[Path] = set()
    for path, reader, finder in plans:
        if path in seen:
            continue
        seen.add(path)
        try:
            config = reader(path)
        except BrokerError as exc:  # one bad file must not hide the others
            result.problems.append(str(exc))
            continue
        if config is not None:
            result.files.append(path)
            result.servers += finder(config)
    return result
