"""Where the broker's socket lives, without importing platformdirs.

The `token` command is on the hot path of every MCP request a client makes,
so it must not import platformdirs (or anything heavy). This module computes
the same directory platformdirs' `user_runtime_dir` gives in the usual
cases, and both the service and its clients use it, so they always agree;
`tests/test_socketpath.py` checks the agreement with platformdirs.
"""

from __future__ import annotations

import os
import stat
import sys

__all__ = ["SOCKET_ENV", "default_socket_path", "runtime_dir"]

SOCKET_ENV = "MCP_TOKEN_BROKER_SOCKET"
APP = "mcp-token-broker"


def _private_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def _tempdir() -> str:
    # tempfile.gettempdir()'s order, without importing tempfile (slow).
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(name)
        if value and os.path.isdir(value):
            return value
    return "/tmp"


def runtime_dir() -> str:
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~/Library/Caches/TemporaryItems"), APP)
    uid = os.getuid()
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    # As platformdirs: an absolute $XDG_RUNTIME_DIR that is private, or missing
    # (it will be created private); else /run/user/UID if private; else a temp dir.
    if not (os.path.isabs(base) and (_private_dir(base) or _missing_below_a_dir(base))):
        base = f"/run/user/{uid}"
        if not _private_dir(base):
            base = os.path.join(_tempdir(), f"runtime-{uid}")
    return os.path.join(base, APP)


def _missing_below_a_dir(path: str) -> bool:
    return not os.path.lexists(path) and os.path.isdir(os.path.dirname(path.rstrip("/")) or "/")


def default_socket_path() -> str:
    override = os.environ.get(SOCKET_ENV)
    if override:
        return override
    return os.path.join(runtime_dir(), "broker.sock")
