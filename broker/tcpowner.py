"""Which local user owns the other end of a loopback TCP connection.

TCP has no `SO_PEERCRED`. On Linux, though, both ends of a loopback
connection are rows of /proc/net/tcp (/proc/net/tcp6 for IPv6 sockets), each
with the UID that created the socket. The peer's end is the row whose local
address is our peer's address and whose remote address is ours. The redirect
listener (loopback.py) uses this to ignore callbacks from other local users,
who could otherwise finish someone else's login with their own account, or
cancel it with `error=`.

On Linux an unknown peer (no such row, /proc unreadable) counts as another
user: fail closed. Elsewhere (macOS, the BSDs) there is no such table for an
unprivileged process, so `peer_is_us` answers True and the `state` check is
the only guard there.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import sys
from pathlib import Path
from typing import Any

__all__ = ["CAN_SEE_PEERS", "peer_is_us", "peer_uid"]

#: Whether this platform tells us who is on the other end.
CAN_SEE_PEERS = sys.platform.startswith("linux")

_TIME_WAIT = "06"  # such rows carry no owner (uid 0)

Address = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


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


def peer_uid(local: tuple[Any, ...], remote: tuple[Any, ...], *, proc_net: Path = Path("/proc/net")) -> int | None:
    """UID owning the socket at `remote` that is connected to our `local`, or
    None if no table lists it. `local`/`remote` are `getsockname()` and
    `getpeername()` of our accepted socket."""
    theirs, ours = _normal(remote), _normal(local)
    port_suffix = f":{theirs[1]:04X}"
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc_net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            fields = row.split()
            if len(fields) < 8 or not fields[1].endswith(port_suffix) or fields[3] == _TIME_WAIT:
                continue
            if _parse(fields[1]) == theirs and _parse(fields[2]) == ours:
                return int(fields[7])
    return None


def peer_is_us(local: tuple[Any, ...], remote: tuple[Any, ...]) -> bool:
    """True if the peer runs as our (effective) user; see the module docstring."""
    if not CAN_SEE_PEERS:
        return True
    return peer_uid(local, remote) == os.geteuid()
