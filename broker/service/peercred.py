"""Who is on the other end of a Unix socket, as the kernel saw it.

The broker hands out tokens to whoever connects, so it asks the kernel rather
than the client: these credentials cannot be forged by the peer. They are the
peer's *effective* ids captured when it called `connect()` (or `socketpair()`),
not whoever holds the descriptor now; a descriptor passed to another process
keeps reporting the original connector.

Any failure raises `OSError`; callers treat that as "reject".
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from dataclasses import dataclass

__all__ = ["PeerCredentials", "peer_credentials"]

# Linux: struct ucred { pid_t pid; uid_t uid; gid_t gid; }
_UCRED = struct.Struct("@iII")

# macOS / FreeBSD / DragonFly, <sys/un.h> and <sys/ucred.h>.
_SOL_LOCAL = 0  # level for local-domain socket options
_LOCAL_PEERCRED = 0x001  # struct xucred
_LOCAL_PEERPID = 0x002  # pid_t; macOS only (on FreeBSD 0x002 is LOCAL_CONNWAIT)
_XUCRED_VERSION = 0
# struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[XU_NGROUPS=16]; ... }
# cr_groups[0] is the effective gid: what getpeereid(3) reports.
_XUCRED = struct.Struct("@IIh16I")
# FreeBSD 13+ appends `union { void *_cr_unused1; pid_t cr_pid; }` (zero on older kernels).
_FREEBSD_CR_PID_OFFSET = struct.calcsize("@IIh16IP") - struct.calcsize("@P")
_INVALID_ID = 0xFFFFFFFF  # (uid_t)-1: "no credentials" (e.g. the socket is not connected)


@dataclass(frozen=True)
class PeerCredentials:
    pid: int | None  # None where the OS cannot tell (or the peer is in a pid namespace we cannot see)
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The connected AF_UNIX peer's pid, effective uid and effective gid."""
    if sock.family != socket.AF_UNIX:
        raise OSError(errno.EAFNOSUPPORT, "peer credentials need an AF_UNIX socket")
    platform = sys.platform  # a variable, so mypy checks every branch, not just this machine's
    if platform.startswith("linux"):
        return _linux(sock)
    if platform == "darwin":
        return _xucred(sock, pid=_darwin_pid(sock))
    if platform.startswith(("freebsd", "dragonfly")):
        return _xucred(sock, pid=None)
    raise OSError(errno.ENOSYS, f"peer credentials are not implemented on {sys.platform}")


def _linux(sock: socket.socket) -> PeerCredentials:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    if len(raw) != _UCRED.size:
        raise OSError(errno.EPROTO, "short SO_PEERCRED answer")
    pid, uid, gid = _UCRED.unpack(raw)
    if uid == _INVALID_ID or gid == _INVALID_ID:
        raise OSError(errno.ENOTCONN, "the socket has no peer credentials")
    return PeerCredentials(pid=pid if pid > 0 else None, uid=uid, gid=gid)


def _xucred(sock: socket.socket, *, pid: int | None) -> PeerCredentials:
    # Ask for a little more than macOS's 76 bytes so FreeBSD's cr_pid fits too;
    # the kernel copies out min(asked, sizeof(struct xucred)).
    raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _FREEBSD_CR_PID_OFFSET + 16)
    if len(raw) < _XUCRED.size:
        raise OSError(errno.EPROTO, "short LOCAL_PEERCRED answer")
    version, uid, ngroups, *groups = _XUCRED.unpack_from(raw)
    if version != _XUCRED_VERSION or ngroups < 1 or uid == _INVALID_ID:
        raise OSError(errno.EPROTO, "unexpected LOCAL_PEERCRED answer")
    if pid is None and sys.platform.startswith("freebsd") and len(raw) >= _FREEBSD_CR_PID_OFFSET + 4:
        (cr_pid,) = struct.unpack_from("@i", raw, _FREEBSD_CR_PID_OFFSET)
        pid = cr_pid if cr_pid > 0 else None
    return PeerCredentials(pid=pid, uid=uid, gid=groups[0])


def _darwin_pid(sock: socket.socket) -> int | None:
    try:
        raw = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, 4)
    except OSError:  # macOS before 10.8
        return None
    if len(raw) != 4:
        return None
    (pid,) = struct.unpack("@i", raw)
    return pid if pid > 0 else None
