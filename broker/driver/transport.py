"""The one place that sends `HttpRequest`s, with the limits every call needs.

Every request gets: the URL policy (https, or http on loopback), the
connection's endpoint policy (`broker.oauth.netpolicy`: no endpoint further inward
than the MCP server, judged by every address the host resolves to), no
redirect following, a connect/read timeout, a total deadline (so a server
that drips one byte a second cannot hold a flow forever) and a cap on the
body size.

The endpoint policy comes from `Transport.for_server(server_url)`, which the
engine enters around everything it does for one connection. A request sent
outside it gets `netpolicy.STRICT`: public https only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..errors import NetworkError, ResponseTooLarge
from ..oauth.http import HttpRequest, HttpResponse
from ..oauth.netpolicy import STRICT, EndpointPolicy, Reach, innermost, ip_reach, literal_reach
from ..oauth.urls import check_endpoint_url
from .pinning import checked_transport

__all__ = ["Limits", "Transport"]

USER_AGENT = f"mcp-token-broker/{__version__}"

#: host, port -> the IP addresses it resolves to.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_POLICY: contextvars.ContextVar[EndpointPolicy] = contextvars.ContextVar("endpoint_policy", default=STRICT)


def _proxied() -> bool:
    """An HTTP(S) proxy from the environment, which httpx would use: it then
    resolves the targets, and only the pre-flight check applies."""
    import urllib.request

    proxies = urllib.request.getproxies()
    return any(proxies.get(k) for k in ("http", "https", "all"))


async def resolve(host: str, port: int) -> list[str]:
    """The system resolver, as httpx will use it to connect."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Limits:
    #: Seconds for connecting and between reads.
    timeout: float = 10.0
    #: Seconds for the whole exchange, headers and body.
    deadline: float = 30.0
    #: Bytes of response body accepted.
    max_body: int = 1 << 20


class Transport:
    """Sends requests with httpx. Owns its client unless one is passed in."""

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        limits: Limits = Limits(),
        *,
        resolver: Resolver = resolve,
    ) -> None:
        self.limits = limits
        self._resolver = resolver
        self._owns_client = client is None
        #: Whether connections are made by `pinning.CheckedBackend` (no proxy):
        #: then the address connected to is the address checked.
        self.pinned = client is None and not _proxied()
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(limits.timeout),
            follow_redirects=False,
            trust_env=True,
            headers={"User-Agent": USER_AGENT},
            transport=checked_transport(resolver, _POLICY.get) if self.pinned else None,
        )

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- endpoint policy ------------------------------------------------------

    async def _reach(self, host: str, port: int) -> Reach | None:
        """The innermost reach among the host's addresses; None if it does not
        resolve here (a proxy may still reach it, and then decides)."""
        literal = literal_reach(host)
        if literal is not None:
            return literal
        try:
            async with asyncio.timeout(self.limits.timeout):
                addresses = await self._resolver(host, port)
        except (OSError, TimeoutError, UnicodeError):
            return None
        reaches = [ip_reach(a) for a in addresses]
        return innermost(reaches) if reaches else None

    @contextlib.asynccontextmanager
    async def for_server(self, server_url: str) -> AsyncIterator[EndpointPolicy]:
        """Send everything inside on behalf of the MCP server at `server_url`."""
        parts = urlsplit(server_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        # A server whose name does not resolve here gets the strictest reach.
        reach = await self._reach(parts.hostname or "", port) or "public"
        policy = EndpointPolicy(server_url=server_url, reach=reach)
        token = _POLICY.set(policy)
        try:
            yield policy
        finally:
            _POLICY.reset(token)

    @property
    def policy(self) -> EndpointPolicy:
        return _POLICY.get()

    async def check_url(self, url: str, what: str, *, resolve: bool = True) -> str:
        """Refuse `url` unless the current connection may send to it (or
        the user's browser to it): scheme, literal host and, with `resolve`,
        every address the host resolves to."""
        check_endpoint_url(url, what)
        parts = urlsplit(url)
        policy = _POLICY.get()
        policy.check(url, what)  # the literal host, before any lookup
        if not resolve:
            return url
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        reach = await self._reach(parts.hostname or "", port)
        if reach is not None:
            policy.check(url, what, reach)
        return url

    # -- sending ------------------------------------------------------------

    async def send(self, request: HttpRequest) -> HttpResponse:
        # A pinned client checks the addresses it connects to; else check here.
        await self.check_url(request.url, f"the {request.purpose} URL", resolve=not self.pinned)
        where = _where(request.url)
        try:
            async with asyncio.timeout(self.limits.deadline):
                return await self._send(request)
        except TimeoutError:
            raise NetworkError(
                f"{where} did not answer within {self.limits.deadline:g} s ({request.purpose})"
            ) from None
        except httpx.ConnectTimeout:
            raise NetworkError(f"cannot reach {where}: connection timed out ({request.purpose})") from None
        except httpx.TimeoutException:
            raise NetworkError(f"{where} stopped answering ({request.purpose})") from None
        except httpx.HTTPError as exc:
            raise NetworkError(f"cannot reach {where}: {_reason(exc)} ({request.purpose})") from None

    async def _send(self, request: HttpRequest) -> HttpResponse:
        req = self._client.build_request(
            request.method, request.url, headers=list(request.headers), content=request.body or None
        )
        response = await self._client.send(req, stream=True, follow_redirects=False)
        try:
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.limits.max_body:
                raise ResponseTooLarge(
                    f"{request.purpose} sent {int(declared)} bytes; the limit is {self.limits.max_body}"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.limits.max_body:
                    raise ResponseTooLarge(f"{request.purpose} sent more than {self.limits.max_body} bytes")
                chunks.append(chunk)
        finally:
            await response.aclose()
        return HttpResponse(response.status_code, tuple(response.headers.multi_items()), b"".join(chunks))


def _where(url: str) -> str:
    """The host a person would recognise, with the port when the URL names one."""
    parts = urlsplit(url)
    host = parts.hostname or "the server"
    return host if parts.port is None else f"{host}:{parts.port}"


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def _reason(exc: BaseException) -> str:
    """Why a request failed, in words, from the exception chain: the user
    gets "connection refused", never an exception class name."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            if cause.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                return "no such host name"
            return "the host name could not be looked up"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"its certificate is not trusted ({cause.verify_message})"
        if isinstance(cause, ssl.SSLError):
            return "the secure connection (TLS) failed"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[cause.errno]
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server broke off the exchange"
    if isinstance(exc, httpx.ProxyError):
        return "the HTTP proxy refused"
    return "network error"
