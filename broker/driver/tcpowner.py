"""Which local user owns the other end of a loopback TCP connection.

TCP has no `SO_PEERCRED`. On Linux, though, the kernel knows both ends of a
loopback connection and the UID that created each socket. The peer's end is
the socket whose local address is our peer's address and whose remote
address is ours. `sock_diag` (the netlink interface `ss` uses) looks it up
by exactly that 4-tuple, in the kernel's hash table; where netlink is not
allowed, the same rows are read from /proc/net/tcp and tcp6. The redirect
listener (loopback.py) uses this to ignore callbacks from other local users,
who could otherwise finish someone else's login with their own account, or
cancel it with `error=`.

On Linux an unknown peer (no such socket, nothing readable) counts as
another user: fail closed. Elsewhere (macOS, the BSDs) there is no such table for an
unprivileged process, so `peer_is_us` answers True and the `state` check is
the only guard there.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CAN_SEE_PEERS", "by_proc_tables", "by_sock_diag", "peer_is_us", "peer_uid"]

#: Whether this platform tells us who is on the other end.
CAN_SEE_PEERS = sys.platform.startswith("linux")

_TIME_WAIT = "06"  # such rows carry no owner (uid 0)

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]
#: (their address, our address) -> UID, None if there is no such socket;
#: OSError if this way of looking cannot be used here.
Lookup = Callable[[Address, Address], "int | None"]

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_HEADER = struct.Struct("=IHHII")
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF & ~(1 << 6)  # every state but TIME_WAIT, which has no owner


def _normal(address: tuple[Any, ...]) -> Address:
    """(host, port[, flowinfo, scope]) from `getsockname`, IPv4-mapped IPv6 as IPv4."""
    ip = ipaddress.ip_address(str(address[0]).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(address[1])


def _parse(field: str) -> Address:
    """`0100007F:1F90` -> (127.0.0.1, 8080): the kernel prints each 32-bit word
    of the address in host byte order, and the port in hex."""
    host, port = field.split(":")
    packed = b"".join(struct.pack("=I", int(host[i : i + 8], 16)) for i in range(0, len(host), 8))
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip, int(port, 16)


def _diag_request(family: int, theirs: Address, ours: Address) -> bytes:
    def packed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
        if family == socket.AF_INET6 and isinstance(ip, ipaddress.IPv4Address):
            ip = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + ip.packed)
        return ip.packed.ljust(16, b"\0")

    # struct inet_diag_req_v2 with its inet_diag_sockid (ports and addresses big-endian).
    sockid = struct.pack("!HH", theirs[1], ours[1]) + packed(theirs[0]) + packed(ours[0])
    sockid += struct.pack("=III", 0, _INET_DIAG_NOCOOKIE, _INET_DIAG_NOCOOKIE)
    body = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, _ALL_STATES) + sockid
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + body


def by_sock_diag(theirs: Address, ours: Address) -> int | None:
    """Ask the kernel for the one socket with this 4-tuple (netlink sock_diag)."""
    families = [socket.AF_INET6] if theirs[0].version == 6 else [socket.AF_INET, socket.AF_INET6]
    for family in families:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
            nl.settimeout(2)
            nl.sendto(_diag_request(family, theirs, ours), (0, 0))
            reply = nl.recv(8192)
        _length, kind, _flags, _seq, _pid = _NLMSG_HEADER.unpack_from(reply)
        if kind == _NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, _NLMSG_HEADER.size)
            if -code == errno.ENOENT:
                continue
            raise OSError(-code, os.strerror(-code))
        if kind != _SOCK_DIAG_BY_FAMILY:
            raise OSError(errno.EPROTO, "unexpected sock_diag answer")
        # struct inet_diag_msg: family, state, timer, retrans, the 48-byte sockid,
        # expires, rqueue, wqueue, uid, inode.
        if reply[_NLMSG_HEADER.size + 1] == int(_TIME_WAIT, 16):
            return None
        (uid,) = struct.unpack_from("=I", reply, _NLMSG_HEADER.size + 4 + 48 + 12)
        return int(uid)
    return None


def by_proc_tables(theirs: Address, ours: Address, *, proc_net: Path = Path("/proc/net")) -> int | None:
    """Find the socket's row in /proc/net/tcp or tcp6 (slower: reads them all)."""
    port_suffix = f":{theirs[1]:04X}"
    readable = False
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc_net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = row.split()
            if len(fields) < 8 or not fields[1].endswith(port_suffix) or fields[3] == _TIME_WAIT:
                continue
            if _parse(fields[1]) == theirs and _parse(fields[2]) == ours:
                return int(fields[7])
    if not readable:
        raise OSError(errno.ENOENT, f"no TCP tables in {proc_net}")
    return None


def peer_uid(
    local: tuple[Any, ...], remote: tuple[Any, ...], *, lookups: Sequence[Lookup] = (by_sock_diag, by_proc_tables)
) -> int | None:
    """UID owning the socket at `remote` that is connected to our `local`, or
    None if it cannot be found. `local`/`remote` are `getsockname()` and
    `getpeername()` of our accepted socket."""
    theirs, ours = _normal(remote), _normal(local)
    for lookup in lookups:
        try:
            return lookup(theirs, ours)
        except OSError:
            continue  # not allowed here: try the next way
    return None


def peer_is_us(local: tuple[Any, ...], remote: tuple[Any, ...]) -> bool:
    """True if the peer runs as our (effective) user; see the module docstring."""
    if not CAN_SEE_PEERS:
        return True
    return peer_uid(local, remote) == os.geteuid()
