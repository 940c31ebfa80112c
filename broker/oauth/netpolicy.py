"""Where a connection may send requests, judged from its MCP server's URL.

A remote MCP server chooses the URLs the broker talks to next: its resource
metadata names the authorization server, whose metadata names every other
endpoint. Left unchecked, `https://mcp.example.com` could list
`http://127.0.0.1:8080/` and have the broker send discovery GETs and a
registration POST to a service on the user's own machine (or their LAN), and
open the browser there.

So every address is given a *reach*: `loopback` (this machine), `private`
(private, link-local, CGNAT, unique-local and other non-global ranges) or
`public`. A connection may only send to endpoints whose reach is no more
inward than its MCP server's own: a public server may name only public
endpoints, a server on the LAN may name LAN and public ones, and only a
server on this machine may name this machine. Plain `http:` is allowed only
between a loopback server and loopback endpoints (development setups and the
tests), never anywhere else.

Host names are judged by every address they resolve to (the most inward
wins), literal addresses directly. IPv4-mapped IPv6 addresses count as their
IPv4 address, and the unspecified address (`0.0.0.0`, `::`) as loopback,
which is where connecting to it ends up.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from ..errors import UnsafeEndpoint

__all__ = ["Reach", "REACHES", "ip_reach", "literal_reach", "innermost", "EndpointPolicy", "STRICT"]

Reach = Literal["public", "private", "loopback"]
#: From outermost to innermost.
REACHES: tuple[Reach, ...] = ("public", "private", "loopback")
_RANK = {reach: i for i, reach in enumerate(REACHES)}


def ip_reach(address: str) -> Reach:
    """The reach of one IP address (a scope id such as `%eth0` is ignored)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:
        return "loopback"
    if not ip.is_global or ip.is_multicast:
        return "private"
    return "public"


def literal_reach(host: str | None) -> Reach | None:
    """The reach of a URL's host when it needs no resolver; None for a DNS name."""
    if not host:
        return None
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"  # RFC 6761: always this machine
    try:
        return ip_reach(host)
    except ValueError:
        return None


def innermost(reaches: list[Reach]) -> Reach:
    return max(reaches, key=_RANK.__getitem__)


@dataclass(frozen=True)
class EndpointPolicy:
    """What one connection may reach: set from its MCP server's URL and reach."""

    server_url: str
    reach: Reach

    def allows(self, reach: Reach) -> bool:
        return _RANK[reach] <= _RANK[self.reach]

    def check(self, url: str, what: str, reach: Reach | None = None) -> None:
        """Refuse `url` (already through `urls.check_endpoint_url`) if it
        reaches further in than the server, or uses http off loopback.
        `reach` is the resolved host's reach when known; else the literal's."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        reach = reach or literal_reach(host)
        if parts.scheme.lower() == "http" and not (self.reach == "loopback" and reach == "loopback"):
            raise UnsafeEndpoint(
                f"{what} uses plain http to {host}; http is allowed only when the MCP server itself "
                "runs on this machine"
            )
        if reach is not None and not self.allows(reach):
            where = {"loopback": "this machine", "private": "a private or link-local network"}[reach]
            raise UnsafeEndpoint(
                f"{what} points at {host}, which is on {where}, but the MCP server {self.server_url} is not; "
                "refusing to send anything there"
            )


#: For requests made outside any connection's context: only public https.
STRICT = EndpointPolicy(server_url="(no MCP server)", reach="public")
