"""Connect only to addresses the endpoint policy allows, from one lookup.

`Transport.check_url` judges a host by what it resolves to, but httpx would
resolve it again to connect. A server that controls its DNS can answer the
first lookup with a public address and the second with 127.0.0.1 (DNS
rebinding). Here the lookup whose addresses are checked is the one whose
addresses are connected to: httpcore's network backend is wrapped so that
`connect_tcp` resolves, checks every address against the current
`EndpointPolicy`, and connects to an IP literal. TLS still verifies the
certificate against the host name (httpcore passes the origin's host as SNI).

Requests that go through an HTTP proxy connect to the proxy instead; the
proxy resolves the target, and the pre-flight check in `Transport` is what
applies to them.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable

import httpcore
import httpx

from ..errors import UnsafeEndpoint
from ..oauth.netpolicy import EndpointPolicy, ip_reach, literal_reach

__all__ = ["CheckedBackend", "checked_transport"]

Resolver = Callable[[str, int], Awaitable[list[str]]]


class CheckedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, resolver: Resolver, policy: Callable[[], EndpointPolicy]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._resolver = resolver
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        policy = self._policy()
        if literal_reach(host) is not None and host != "localhost":
            addresses = [host.strip("[]")]
        else:
            try:
                addresses = await self._resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        for address in addresses:
            reach = ip_reach(address)
            if not policy.allows(reach):
                where = "this machine" if reach == "loopback" else "a private or link-local network"
                raise UnsafeEndpoint(
                    f"{host} resolves to {address}, which is on {where}, but the MCP server "
                    f"{policy.server_url} is not; refusing to connect"
                )
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} has no address")

    async def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("the broker's HTTP client does not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def checked_transport(resolver: Resolver, policy: Callable[[], EndpointPolicy]) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go through `CheckedBackend`.

    httpx has no public hook for the network backend, so the connection pool
    it builds is replaced by an equal one that has the backend: the only
    reach into httpx's internals (`_pool`), checked by tests/test_netpolicy.py.
    """
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
    transport = httpx.AsyncHTTPTransport(trust_env=True, limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=True),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=CheckedBackend(resolver, policy),
    )
    return transport
