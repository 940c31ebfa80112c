"""The effective UID of the process on the other end of a Unix socket, with `_socket` only.

The clients' half of `broker.service.peercred`: the `token` fast path checks who
listens on the socket before it sends a byte, and must not import `socket`
(enum, selectors), `struct` or dataclasses to do so. The kernel records the
listener's credentials when it called `listen()`; the peer cannot forge them.
"""

from __future__ import annotations

import _socket
import sys

__all__ = ["peer_uid"]

_INVALID = 0xFFFFFFFF  # (uid_t)-1: no credentials
_SOL_LOCAL, _LOCAL_PEERCRED = 0, 0x001  # macOS and the BSDs, <sys/un.h>


def peer_uid(sock: _socket.socket) -> int:
    """The peer's effective uid. Raises OSError when the kernel cannot tell."""
    if sys.platform.startswith("linux"):
        # struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if len(raw) != 12:
            raise OSError("short SO_PEERCRED answer")
        uid = int.from_bytes(raw[4:8], sys.byteorder)
    elif sys.platform == "darwin" or sys.platform.startswith(("freebsd", "dragonfly")):
        # struct xucred { u_int cr_version; uid_t cr_uid; ... } (76 bytes on macOS)
        raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, 76)
        if len(raw) < 8 or int.from_bytes(raw[0:4], sys.byteorder) != 0:
            raise OSError("unexpected LOCAL_PEERCRED answer")
        uid = int.from_bytes(raw[4:8], sys.byteorder)
    else:
        raise OSError(f"cannot tell who listens on a Unix socket on {sys.platform}")
    if uid == _INVALID:
        raise OSError("the socket has no peer credentials")
    return uid
