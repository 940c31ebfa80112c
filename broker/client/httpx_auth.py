"""`httpx.Auth` that takes tokens from the broker, for Python MCP clients.

    import httpx
    from broker.client.httpx_auth import BrokerAuth
    client = httpx.AsyncClient(auth=BrokerAuth("github"))

The official MCP SDK's 2.x line uses `httpx2`, which has the same Auth
protocol; `httpx2_auth("github")` gives the equivalent for it:

    from mcp.client.streamable_http import streamable_http_client
    http = httpx2.AsyncClient(auth=httpx2_auth("github"))
    async with Client(streamable_http_client(url, http_client=http)) as c: ...

On a 401 the rejected token is reported to the broker (its hash only), which
refreshes it once if it is still the current one: the only way to replace a
token the server revoked early, or one issued without `expires_in`. Then the
token is fetched again once (with `min_ttl` raised so a nearly-expired token
is replaced too) and the request is retried once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from .api_client import BrokerClient, ServiceError, ServiceUnavailable

__all__ = ["BrokerAuth", "httpx2_auth", "make_auth_class"]

log = logging.getLogger(__name__)


class _BrokerAuthFlow:
    requires_request_body = False
    requires_response_body = False

    def __init__(self, connection: str, *, client: BrokerClient | None = None, min_ttl: int = 30) -> None:
        self.connection = connection
        self.client = client or BrokerClient()
        self.min_ttl = min_ttl

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection!r})"

    def _token(self, retry: bool) -> str:
        # After a 401 ask for a token that lives well beyond this request.
        min_ttl = self.min_ttl * 4 if retry else self.min_ttl
        return str(self.client.token(self.connection, min_ttl=min_ttl)["access_token"])

    def _rejected(self, token: str) -> str:
        """Report the rejected token, then fetch the current one."""
        try:
            self.client.report_rejected(self.connection, token)
        except (ServiceError, ServiceUnavailable, OSError) as exc:
            log.debug("reporting a rejected token of %s failed: %s", self.connection, exc)  # fetch anyway
        return self._token(True)

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        token = self._token(False)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._rejected(token)}"
            yield request

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        # The broker answers from memory over a local socket; a thread keeps
        # even that off the event loop.
        token = await asyncio.to_thread(self._token, False)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = await asyncio.to_thread(self._rejected, token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


def make_auth_class(base: type) -> type:
    """A broker Auth class for any httpx-compatible `Auth` base class."""
    return type(f"BrokerAuth_{base.__module__}", (_BrokerAuthFlow, base), {})


class BrokerAuth(_BrokerAuthFlow, httpx.Auth):
    pass


def httpx2_auth(connection: str, **kwargs: Any) -> Any:
    """A `BrokerAuth` for the `httpx2` package used by the MCP SDK 2.x."""
    import httpx2

    return make_auth_class(httpx2.Auth)(connection, **kwargs)
