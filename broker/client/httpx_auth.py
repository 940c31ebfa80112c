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
is replaced too) and the request is retried once. A 403 `insufficient_scope`
is reported too (`report_insufficient_scope`): the broker asks for that scope
at the next login, and its words for the user are in the response's
`extensions["broker_step_up"]`; the 403 itself is returned.

A token is kept for a few seconds (`KEEP_FOR`), never into the last `min_ttl`
seconds before its `expires_at`, and only while the broker's socket is the
same file: a busy client asks the broker a few times a minute instead of on
every request, while a broker that stopped, a disconnect or a revoked grant
still reaches it within those seconds. A 401 drops the kept token at once. `httpx` itself is
imported only when `BrokerAuth` is first used: the stdio proxy runs on
`httpx2` and need not load both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING, Any

from .api_client import BrokerClient, ServiceError, ServiceUnavailable

if TYPE_CHECKING:
    import httpx

__all__ = ["BrokerAuth", "httpx2_auth", "make_auth_class"]

log = logging.getLogger(__name__)

#: Seconds a token fetched from the broker is used before asking again.
KEEP_FOR = 5.0


class _BrokerAuthFlow:
    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        connection: str,
        *,
        client: BrokerClient | None = None,
        min_ttl: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self.client = client or BrokerClient()
        self.min_ttl = min_ttl
        self._clock = clock
        # The token, until when (the clock's seconds) it is used, and the broker socket it came through.
        self._kept: tuple[str, float, tuple[int, int] | None] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.connection!r})"

    def _socket_id(self) -> tuple[int, int] | None:
        path = getattr(self.client, "socket_path", None)
        if not isinstance(path, str):
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _kept_token(self) -> str | None:
        kept = self._kept
        if kept is None or self._clock() >= kept[1]:
            return None
        if kept[2] is None or self._socket_id() != kept[2]:  # the broker stopped or restarted: ask it
            return None
        return kept[0]

    def _token(self, retry: bool) -> str:
        # After a 401 ask for a token that lives well beyond this request.
        min_ttl = self.min_ttl * 4 if retry else self.min_ttl
        answer = self.client.token(self.connection, min_ttl=min_ttl)
        token = str(answer["access_token"])
        now = self._clock()
        until = now + KEEP_FOR
        expires_at = answer.get("expires_at")
        if isinstance(expires_at, (int, float)) and not isinstance(expires_at, bool):
            until = min(until, float(expires_at) - self.min_ttl)
        self._kept = (token, until, self._socket_id())
        return token

    def _rejected(self, token: str) -> str:
        """Report the rejected token, then fetch the current one."""
        self._kept = None
        try:
            self.client.report_rejected(self.connection, token)
        except (ServiceError, ServiceUnavailable, OSError) as exc:
            log.debug("reporting a rejected token of %s failed: %s", self.connection, exc)  # fetch anyway
        return self._token(True)

    def _insufficient(self, token: str, response: Any) -> None:
        """A 403 `insufficient_scope` (RFC 6750 3.1): report the scope the
        server asked for, so the broker asks for it at the next login; the
        broker's words for the user land in `response.extensions["broker_step_up"]`."""
        from ..oauth.challenge import insufficient_scope

        scopes = insufficient_scope(response.headers.get_list("www-authenticate"))
        if scopes is None:
            return
        try:
            answer = self.client.report_insufficient_scope(self.connection, token, list(scopes))
        except (ServiceError, ServiceUnavailable, OSError) as exc:
            log.debug("reporting insufficient scope of %s failed: %s", self.connection, exc)
            return
        message = answer.get("message")
        if isinstance(message, str):
            response.extensions["broker_step_up"] = message
            log.warning("%s", message)

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        token = self._kept_token() or self._token(False)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self._rejected(token)}"
            yield request
        elif response.status_code == 403:
            self._insufficient(token, response)

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        # The broker answers from memory over a local socket; a thread keeps
        # even that off the event loop.
        token = self._kept_token()
        if token is None:
            token = await asyncio.to_thread(self._token, False)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {await asyncio.to_thread(self._rejected, token)}"
            yield request
        elif response.status_code == 403:
            await asyncio.to_thread(self._insufficient, token, response)


def make_auth_class(base: type) -> type:
    """A broker Auth class for any httpx-compatible `Auth` base class."""
    return type(f"BrokerAuth_{base.__module__}", (_BrokerAuthFlow, base), {})


if TYPE_CHECKING:

    class BrokerAuth(_BrokerAuthFlow, httpx.Auth):
        pass

else:

    def __getattr__(name: str) -> Any:
        # `BrokerAuth` is built on first use, so importing this module does not load httpx.
        if name == "BrokerAuth":
            import httpx

            cls = type("BrokerAuth", (_BrokerAuthFlow, httpx.Auth), {"__module__": __name__})
            globals()["BrokerAuth"] = cls
            return cls
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def httpx2_auth(connection: str, **kwargs: Any) -> Any:
    """A `BrokerAuth` for the `httpx2` package used by the MCP SDK 2.x."""
    import httpx2

    return make_auth_class(httpx2.Auth)(connection, **kwargs)
