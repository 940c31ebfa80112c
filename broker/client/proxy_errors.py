"""What the stdio proxy answers when something between client and server fails.

A stdio MCP client shows its user the JSON-RPC error a request got; a proxy
that dies, hangs or prints a traceback only leaves "server disconnected". So
every failure the proxy can meet becomes a JSON-RPC error for the request
that met it, and one line on stderr (once, until a request gets through):

- the broker is not running, or stopped under the proxy;
- the connection needs a login, or the broker refused the token;
- the MCP server cannot be reached, or answers 5xx (or 401 to a fresh token);
- the MCP server wants more scope (403 `insufficient_scope`): the broker's
  words say to reconnect (`broker.stepup`);
- a line from the client is not JSON (-32700) or not JSON-RPC (-32600).

HTTP failures are turned into an HTTP answer with a JSON-RPC error body
(`GuardedClient.send`); the SDK's streamable HTTP transport then gives it the
id of the request it answers, as it does for a server's own error bodies. The
MCP framing stays the SDK's; only the error objects are made here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import httpx2
import mcp_types
from mcp.shared.message import SessionMessage

from ..errors import BrokerError, ServiceUnavailable
from .keepalive import LIMITS, Drains

__all__ = ["NOT_RUNNING", "GuardedClient", "Reporter", "describe", "error_answer", "invalid_input_answer"]

NOT_RUNNING = "MCP Token Broker is not running: start it with `mcp-token-broker serve` or open the app"

#: JSON-RPC "server error" (implementation-defined range): the request never reached the server.
PROXY_ERROR = -32000


class Reporter:
    """One line on stderr per failure; a failure repeated before anything
    succeeds again is not repeated."""

    def __init__(self, write: Callable[[str], object] | None = None) -> None:
        self._write = write or sys.stderr.write
        self._last: str | None = None

    def failed(self, text: str) -> None:
        if text != self._last:
            self._last = text
            self._write(f"mcp-token-broker: {text}\n")
            flush = getattr(sys.stderr, "flush", None)
            if flush is not None:
                flush()

    def succeeded(self) -> None:
        self._last = None


def describe(exc: BrokerError, connection: str) -> str:
    """The user's words for a broker error met while fetching a token."""
    if isinstance(exc, ServiceUnavailable):
        return NOT_RUNNING
    text = str(exc)
    if exc.code == "authorization_required" and "connect" not in text:
        text += f"; run `mcp-token-broker connect {connection}`"
    return text


def error_answer(request_id: Any, message: str, code: int = PROXY_ERROR) -> SessionMessage:
    return SessionMessage(
        mcp_types.JSONRPCError(jsonrpc="2.0", id=request_id, error=mcp_types.ErrorData(code=code, message=message))
    )


def invalid_input_answer(exc: Exception) -> tuple[SessionMessage, str]:
    """The answer to a line the stdio transport could not read, and the stderr text."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors or any(e.get("type") == "json_invalid" for e in errors):
        return error_answer(None, "Parse error: the line is not JSON", mcp_types.PARSE_ERROR), (
            "a line from the client is not JSON; answered with a parse error (-32700)"
        )
    given = errors[0].get("input")
    request_id = given.get("id") if isinstance(given, dict) else None
    if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
        request_id = None
    return error_answer(request_id, "Invalid Request: not a JSON-RPC 2.0 message", mcp_types.INVALID_REQUEST), (
        "a message from the client is not JSON-RPC 2.0; answered with an invalid request error (-32600)"
    )


def _where(request: httpx2.Request) -> str:
    url = request.url
    return f"{url.host}:{url.port}" if url.port else str(url.host)


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("[Errno") and "] " in text:
        text = text.split("] ", 1)[1]
    return text[:1].lower() + text[1:]


class GuardedClient(httpx2.AsyncClient):
    """An `httpx2.AsyncClient` whose failures come back as HTTP answers that
    carry a JSON-RPC error, so the SDK answers the request with it instead of
    dying (an exception in its task group ends the whole proxy)."""

    def __init__(self, *, connection: str, reporter: Reporter, **kwargs: Any) -> None:
        kwargs.setdefault("limits", LIMITS)  # idle connections dropped before servers close them
        super().__init__(**kwargs)
        self._connection = connection
        self._reporter = reporter
        self._drains = Drains()

    async def aclose(self) -> None:
        try:
            await self._drains.aclose()  # before the pool: each closes its stream
        finally:
            await super().aclose()

    async def __aexit__(self, *exc_info: Any) -> None:  # `async with` does not call aclose
        try:
            await self._drains.aclose()
        finally:
            await super().__aexit__(*exc_info)

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            response = await super().send(request, **kwargs)
        except BrokerError as exc:
            return self._failed(request, describe(exc, self._connection))
        except httpx2.TimeoutException:
            return self._failed(request, f"the MCP server at {_where(request)} did not answer in time")
        except httpx2.TransportError as exc:
            return self._failed(request, f"cannot reach {_where(request)} ({_reason(exc)})")
        status = response.status_code
        step_up = response.extensions.get("broker_step_up") if status == 403 else None
        if isinstance(step_up, str):  # insufficient_scope, reported by the auth: say to reconnect
            await response.aclose()
            return self._failed(request, step_up)
        json_body = response.headers.get("content-type", "").lower().startswith("application/json")
        if (status >= 500 or status == 401) and not json_body:
            await response.aclose()
            words = "refused the broker's token" if status == 401 else "answered"
            return self._failed(request, f"the MCP server at {_where(request)} {words} (HTTP {status})")
        if request.method == "POST" and status < 400:
            self._reporter.succeeded()
            self._drains.keep_alive(response)  # one TCP connection for call after call (broker.client.keepalive)
        return response

    def _failed(self, request: httpx2.Request, text: str) -> httpx2.Response:
        if request.method == "POST":  # a message from the client; the GET stream and DELETE fail quietly
            self._reporter.failed(text)
        elif request.method == "DELETE":
            # Ending the session at exit: its only reader is a log warning, and the
            # user has heard why already. The server drops the session on its own.
            return httpx2.Response(204, request=request)
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": PROXY_ERROR, "message": text}}
        return httpx2.Response(
            502, headers={"content-type": "application/json"}, content=json.dumps(body).encode(), request=request
        )
