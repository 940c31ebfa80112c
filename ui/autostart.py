"""Start the desktop app at login: an XDG autostart entry.

https://specifications.freedesktop.org/autostart-spec/ - a `.desktop` file
in `$XDG_CONFIG_HOME/autostart` is started by the desktop session at login.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

__all__ = ["autostart_path", "is_enabled", "enable", "disable", "desktop_entry"]

FILE_NAME = "mcp-token-broker.desktop"


def autostart_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "autostart" / FILE_NAME


def desktop_entry(command: list[str]) -> str:
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=MCP Token Broker",
            "Comment=Keeps OAuth tokens for your MCP servers fresh",
            f"Exec={shlex.join(command)}",
            "Icon=mcp-token-broker",
            "Terminal=false",
            "X-GNOME-Autostart-enabled=true",
            "",
        ]
    )


def _command() -> list[str]:
    if getattr(sys, "frozen", False):  # the installer's bundle: one executable (packaging/entry.py)
        return [sys.executable, "gui", "--minimized"]
    return [sys.executable, "-m", "ui", "--minimized"]


def is_enabled() -> bool:
    return autostart_path().exists()


def enable(command: list[str] | None = None) -> Path:
    path = autostart_path()
    path.parent.mkdir(parents=True, exist_ok=True)  # the user's own dir: leave its mode alone
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(desktop_entry(command or _command()))
    os.replace(tmp, path)
    return path


def disable() -> None:
    autostart_path().unlink(missing_ok=True)
