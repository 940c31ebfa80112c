"""Where the broker's socket lives, without importing platformdirs.

The `token` command is on the hot path of every MCP request a client makes,
so it must not import platformdirs (or anything heavy). Both the service and
its clients compute the location here, so they always agree.

- `$XDG_RUNTIME_DIR/mcp-token-broker` when it is absolute and private (ours,
  0700) or still missing; else `/run/user/UID/mcp-token-broker` when that is
  private: the same as platformdirs' `user_runtime_dir`
  (`tests/test_socketpath.py` checks the agreement).
- Otherwise (SSH sessions without logind, `serve` on a shared host) the user's
  own cache directory: `${XDG_CACHE_HOME:-~/.cache}/mcp-token-broker/run`.
  Here we deliberately differ from platformdirs, whose fallback is
  `$TMPDIR/runtime-UID`: in a shared temp dir another user can create that
  directory first, or swap what is in it, and listen where our clients look.
- macOS: `~/Library/Caches/TemporaryItems/mcp-token-broker`, as platformdirs.

Each location comes with its runtime base (`$XDG_RUNTIME_DIR`, `/run/user/UID`,
`~/.cache/mcp-token-broker`): `broker.client.socketdir` holds every directory from the
base down to the socket to "ours alone", and those above it to "only root or
we can change them".
"""

from __future__ import annotations

import os
import stat
import sys

__all__ = ["SOCKET_ENV", "base_for", "default_socket_path", "runtime_dir", "socket_location"]

SOCKET_ENV = "MCP_TOKEN_BROKER_SOCKET"
APP = "mcp-token-broker"


def _private_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def _cache_home() -> str:
    # platformdirs' user_cache_dir on Linux, without importing it.
    value = os.environ.get("XDG_CACHE_HOME", "")
    return value if os.path.isabs(value) else os.path.join(os.path.expanduser("~"), ".cache")


def _runtime() -> tuple[str, str]:
    """(the socket's directory, its runtime base)."""
    if sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches/TemporaryItems")
        return os.path.join(base, APP), base
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    # As platformdirs: an absolute $XDG_RUNTIME_DIR that is private, or missing
    # (it will be created private); else /run/user/UID if private.
    if os.path.isabs(base) and (_private_dir(base) or _missing_below_a_dir(base)):
        return os.path.join(base, APP), base
    base = f"/run/user/{os.getuid()}"
    if _private_dir(base):
        return os.path.join(base, APP), base
    # Not platformdirs' $TMPDIR/runtime-UID: see the module's docstring.
    base = os.path.join(_cache_home(), APP)
    return os.path.join(base, "run"), base


def runtime_dir() -> str:
    """The directory the socket is in (without the override)."""
    return _runtime()[0]


def _missing_below_a_dir(path: str) -> bool:
    return not os.path.lexists(path) and os.path.isdir(os.path.dirname(path.rstrip("/")) or "/")


def socket_location() -> tuple[str, str]:
    """(socket path, runtime base) for the service and its clients.
    With `MCP_TOKEN_BROKER_SOCKET` the base is the socket's own directory."""
    override = os.environ.get(SOCKET_ENV)
    if override:
        return override, os.path.dirname(override)
    directory, base = _runtime()
    return os.path.join(directory, "broker.sock"), base


def default_socket_path() -> str:
    return socket_location()[0]


def base_for(socket_path: str) -> str:
    """The runtime base to check `socket_path` from: the default location's base
    when it is the default path, else the socket's own directory."""
    path, base = socket_location()
    return base if os.path.normpath(path) == os.path.normpath(socket_path) else os.path.dirname(socket_path)
