"""Which application is asking: for grants, approval dialogs and the audit log.

The peer of the socket is rarely the application itself: an MCP client runs
our own CLI, often through a shell, `npx` or `uvx`. Like 1Password's SSH agent,
we walk up the process tree past those and name the first process that is
neither ours nor a launcher. Grants are keyed on that application's executable
and script (`ClientIdentity.key`), never on a pid, so they survive restarts.

This is attribution for consent, not a sandbox: any process of the same user
can set its own argv, ptrace another or run a granted interpreter with its own
code preloaded. Nothing here is trusted beyond that.

Linux only, via /proc: `broker.service.procfs` reads a process, and
`broker.service.argv` says which script an interpreter runs. Elsewhere
`identify` returns "pid N"; macOS could later use libproc (proc_pidpath,
PROC_PIDTBSDINFO) and KERN_PROCARGS2.
Every read may race with the process exiting; we return what we learned
and never raise. If the peer exited before we looked, its pid may already
belong to another process; SO_PEERPIDFD (Linux 6.5+) could close that gap.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procfs import HAVE_PROCFS, PROC, Proc, inspect

__all__ = ["DEFAULT_OWN", "UNKNOWN", "ClientIdentity", "OwnMarkers", "identify"]

_MAX_DEPTH = 16
_NAME_LIMIT = 128
_PATH_LIMIT = 512


@dataclass(frozen=True)
class OwnMarkers:
    """How to recognise the broker's own processes (skipped when walking up).

    `names` match the basename of a Python script (the console script) or of
    the executable (a frozen build); `modules` match `python -m MODULE`.
    """

    names: frozenset[str] = frozenset({"mcp-token-broker"})
    modules: frozenset[str] = frozenset({"broker", "broker.cli.main", "broker.client.launcher", "broker.__main__"})


DEFAULT_OWN = OwnMarkers()


@dataclass(frozen=True)
class ClientIdentity:
    pid: int | None  # the process that connected to the socket
    app_pid: int | None  # the process named below (after walking up)
    exe: str | None  # absolute path of its executable (argv[0] if /proc/PID/exe is unreadable)
    script: str | None  # interpreters: absolute script path, or "-m module"; else None
    name: str  # short display name, e.g. "claude", "python3 agent.py"
    chain: tuple[str, ...] = ()  # processes skipped on the way up, nearest first
    # The broker's own code (the app's Test button), never a socket peer: the
    # policy does not ask the person about the program they are using.
    in_process: bool = False

    @property
    def key(self) -> str:
        """Stable identity for grants: exe and script, not the pid.

        Empty when the executable is unknown: never store a grant under "".
        """
        if not self.exe:
            return ""
        return f"{self.exe}\0{self.script or ''}"

    def describe(self) -> str:
        """One line for logs and dialogs; control characters are escaped."""
        where = " ".join(_printable(p, _PATH_LIMIT) for p in (self.exe, self.script) if p)
        if where:
            text = f"{self.name} ({where}, pid {self.app_pid})"
        elif self.app_pid is not None and self.name != f"pid {self.app_pid}":
            text = f"{self.name} (pid {self.app_pid})"
        else:
            text = self.name
        if self.chain:
            text += " via " + " < ".join(self.chain)
        return text

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; undecodable path bytes become `\\xNN` text."""
        return {
            "pid": self.pid,
            "app_pid": self.app_pid,
            "exe": _json_text(self.exe),
            "script": _json_text(self.script),
            "name": self.name,
            "chain": list(self.chain),
        }


UNKNOWN = ClientIdentity(pid=None, app_pid=None, exe=None, script=None, name="unknown", chain=())


def identify(pid: int | None, *, proc: Path = PROC, own_exe_markers: OwnMarkers = DEFAULT_OWN) -> ClientIdentity:
    """Name the application behind the socket peer `pid`, walking up past our CLI and launchers."""
    if pid is None or pid <= 0:
        return UNKNOWN
    if not HAVE_PROCFS and proc == PROC:
        return _pid_only(pid)
    current = inspect(proc, pid)
    if current is None:
        return _pid_only(pid)
    chain: list[str] = []
    seen = {pid}
    while len(chain) < _MAX_DEPTH and _skippable(current, own_exe_markers):
        ppid = current.ppid
        if ppid is None or ppid <= 1 or ppid in seen:
            break  # reached init (or a loop): name the last process before it
        parent = inspect(proc, ppid)
        if parent is None:
            break  # exited or unreadable
        chain.append(_label(current))
        seen.add(ppid)
        current = parent
    return ClientIdentity(
        pid=pid,
        app_pid=current.pid,
        exe=current.exe,
        script=current.script,
        name=_label(current),
        chain=tuple(chain),
    )


def _pid_only(pid: int) -> ClientIdentity:
    return ClientIdentity(pid=pid, app_pid=pid, exe=None, script=None, name=f"pid {pid}", chain=())


def _label(p: Proc) -> str:
    if p.script is None:
        return _printable(p.prog, _NAME_LIMIT)
    shown = p.script if p.script.startswith("-m ") else os.path.basename(p.script.rstrip("/"))
    return _printable(f"{p.prog} {shown or p.script}", _NAME_LIMIT)


# -- what to skip ---------------------------------------------------------------

# Executables that only start something else. Not sudo, su, doas or pkexec:
# walking across a privilege change would credit the wrong application.
_LAUNCHER_EXES = frozenset(
    {
        "env", "timeout", "nice", "nohup", "xargs", "script", "stdbuf", "setsid", "ionice",
        "uv", "uvx", "pipx", "npm", "npx", "pnpm", "pnpx", "yarn", "bunx", "corepack",
    }
)  # fmt: skip
# Package runners written in JS or Python, by the stem of the script the interpreter runs.
_RUNNER = re.compile(r"(?:npm|npx|pnpm|pnpx|yarn|corepack|bunx|pipx|uvx)(?:-cli|-[\d.]+)?")
_SCRIPT_SUFFIXES = (".js", ".cjs", ".mjs", ".py")


def _skippable(p: Proc, own: OwnMarkers) -> bool:
    if _is_own(p, own) or p.family in ("shell", "fish"):
        return True
    if p.exe_base in _LAUNCHER_EXES:
        return True
    if p.family in ("node", "bun", "python") and p.script and not p.script.startswith("-m "):
        stem = os.path.basename(p.script)
        for suffix in _SCRIPT_SUFFIXES:
            stem = stem.removesuffix(suffix)
        if _RUNNER.fullmatch(stem):
            return True
    # Never by argv[0]: any process can retitle itself "npx" and inherit its parent's grants.
    return p.family == "bun" and p.script is None and "x" in p.argv[1:3]


def _is_own(p: Proc, own: OwnMarkers) -> bool:
    if p.exe_base in own.names:  # a frozen build
        return True
    if p.family != "python" or not p.script:
        return False
    if p.script.startswith("-m "):
        return p.script[3:] in own.modules
    return os.path.basename(p.script) in own.names


# -- display ----------------------------------------------------------------------


def _printable(text: str, limit: int) -> str:
    """Escape what could forge a log line or spoof a dialog (newlines, bidi overrides, bad bytes)."""
    if not text.isprintable():
        out = []
        for ch in text:
            cp = ord(ch)
            if ch.isprintable():
                out.append(ch)
            elif 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte (surrogateescape)
                out.append(f"\\x{cp - 0xDC00:02x}")
            elif cp < 0x100:
                out.append(f"\\x{cp:02x}")
            elif cp < 0x10000:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
        text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_text(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
