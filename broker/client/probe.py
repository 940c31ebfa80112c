"""`mcp-token-broker test NAME` and the app's Test button: does the MCP server
answer, with the broker's current token?

One MCP `initialize` and one `tools/list` (every page), through the official
SDK client over streamable HTTP. The token comes from the broker through
`httpx2_auth`, as in the proxy: a 401 is reported to the broker and retried
once with a fresh token, so a 401 seen here survived a fresh token.

The SDK folds every HTTP failure into a generic JSON-RPC error ("Server
returned an error response"), so `_Watched` looks at each HTTP exchange on the
way and keeps the first failure in the user's words: the host and the reason
it cannot be reached, the status of a 5xx, the scope of a 403
`insufficient_scope`, an answer that is not MCP, or the broker's own error
(not running, needs login). That failure is what `probe` raises.

No Qt: the CLI runs `probe` with a `BrokerClient` (the socket), the app with
`ServiceTokens` (the service in its own process, as a client named
"MCP Token Broker (Test)", so the client policy and the audit apply to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2

from ..errors import BrokerError, ProbeFailed, describe_remote_text
from ..oauth.challenge import bearer_challenge, parse_www_authenticate
from .httpx_auth import httpx2_auth

if TYPE_CHECKING:
    from ..service.identity import ClientIdentity
    from ..service.service import BrokerService

__all__ = ["APP_CLIENT_NAME", "ProbeResult", "ServiceTokens", "failure_json", "leaf", "probe", "probe_in_process"]

#: Who asks for the token when the app's Test button runs (audit, approval).
APP_CLIENT_NAME = "MCP Token Broker (Test)"

#: tools/list pages followed at most: a server that pages forever is still answered.
MAX_PAGES = 50


@dataclass(frozen=True)
class ProbeResult:
    connection: str
    server_url: str
    server_name: str | None
    server_version: str | None
    protocol_version: str
    tools: int
    #: Milliseconds for the `initialize` handshake and for `tools/list` (the round trip shown).
    initialize_ms: float
    round_trip_ms: float

    def server(self) -> str:
        """The server's name and version, as it gave them (shortened, control characters dropped)."""
        name = describe_remote_text(self.server_name or "(unnamed server)", 80)
        version = describe_remote_text(self.server_version or "", 40)
        return f"{name} {version}" if version else f"{name} (no version given)"

    def summary(self) -> str:
        """One line: how fast, what it offers, and who answered (last: the longest, elided first)."""
        tools = "1 tool" if self.tools == 1 else f"{self.tools} tools"
        return f"{self.round_trip_ms:.0f} ms · {tools} · protocol {self.protocol_version} · {self.server()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "connection": self.connection,
            "server_url": self.server_url,
            "server": {"name": self.server_name, "version": self.server_version},
            "protocol_version": self.protocol_version,
            "tools": self.tools,
            "round_trip_ms": round(self.round_trip_ms, 1),
            "initialize_ms": round(self.initialize_ms, 1),
        }


def failure_json(connection: str, exc: BrokerError) -> dict[str, Any]:
    """The machine form of a failed test (`test --json`)."""
    doc: dict[str, Any] = {"ok": False, "connection": connection, "error": exc.code, "kind": exc.code}
    doc.update(message=str(exc), status=None, scope=None)
    if isinstance(exc, ProbeFailed):
        doc.update(kind=exc.kind, status=exc.status, scope=list(exc.scope) if exc.scope is not None else None)
    return doc


def _where(url: httpx2.URL) -> str:
    return f"{url.host}:{url.port}" if url.port else str(url.host)


def _reason(exc: BaseException) -> str:
    """Why: the first errno down the exception chain ("connection refused",
    "no address associated with hostname"), else the exception's own words."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "the host name could not be looked up"
        if isinstance(cause, OSError) and isinstance(cause.errno, int) and cause.errno > 0:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip() or type(exc).__name__
    return describe_remote_text(text[:1].lower() + text[1:], 120)


def _http_failure(response: httpx2.Response) -> ProbeFailed | None:
    """What a final answer to a POST says went wrong, or None if it is MCP's to judge."""
    status = response.status_code
    where = _where(response.request.url)
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if status == 401:
        return ProbeFailed(
            "unauthorized",
            f"the MCP server at {where} refused the broker's token even after a fresh one (HTTP 401)",
            status=status,
        )
    if status == 403:
        values = response.headers.get_list("www-authenticate")
        challenge = bearer_challenge(values)
        if challenge is not None and challenge.error == "insufficient_scope":
            scope = challenge.scope
            need = f"scope {' '.join(scope)}" if scope else f"more scope{_description(values)}"
            return ProbeFailed(
                "insufficient_scope",
                f"the MCP server at {where} needs {describe_remote_text(need, 160)} (403 insufficient_scope)",
                status=status,
                scope=scope,
            )
        return ProbeFailed("forbidden", f"the MCP server at {where} refused access (HTTP 403)", status=status)
    if status >= 500:
        return ProbeFailed("server_error", f"the MCP server at {where} answered HTTP {status}", status=status)
    if status >= 400 and content_type != "application/json":
        return ProbeFailed(
            "not_mcp",
            f"{where} answered HTTP {status} ({content_type or 'no content type'}): not an MCP endpoint",
            status=status,
        )
    if status < 300 and content_type not in ("application/json", "text/event-stream") and status != 202:
        return ProbeFailed(
            "not_mcp",
            f"{where} answered with {content_type or 'no content type'}, not MCP (JSON or an event stream)",
            status=status,
        )
    return None


def _description(values: list[str]) -> str:
    """The Bearer challenge's `error_description`, as " (text)" (servers that name no `scope` say it there)."""
    for value in values:
        for challenge in parse_www_authenticate(value):
            if challenge.scheme == "bearer" and challenge.get("error_description"):
                return f" ({describe_remote_text(challenge.get('error_description'), 120)})"
    return ""


class _Watched(httpx2.AsyncClient):
    """An `httpx2.AsyncClient` that keeps the first failure of a message
    (a POST) in words, and turns exceptions into HTTP answers the SDK resolves
    the request with (an exception in its task group would end everything as
    an ExceptionGroup)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failure: BrokerError | None = None

    async def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
        try:
            response = await super().send(request, **kwargs)
        except BrokerError as exc:  # from the token: not running, needs login, refused
            return self._failed(request, exc)
        except httpx2.TimeoutException:
            text = f"the MCP server at {_where(request.url)} did not answer in time"
            return self._failed(request, ProbeFailed("timeout", text))
        except httpx2.TransportError as exc:
            text = f"cannot reach {_where(request.url)} ({_reason(exc)})"
            return self._failed(request, ProbeFailed("unreachable", text))
        if request.method == "POST" and self.failure is None:
            self.failure = _http_failure(response)
        return response

    def _failed(self, request: httpx2.Request, exc: BrokerError) -> httpx2.Response:
        if request.method == "DELETE":
            return httpx2.Response(204, request=request)  # ending the session: nobody to tell
        if request.method == "POST" and self.failure is None:
            self.failure = exc
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": str(exc)}}
        return httpx2.Response(
            502, headers={"content-type": "application/json"}, content=json.dumps(body).encode(), request=request
        )


def _load_sdk() -> Any:
    from mcp.client.client import Client

    return Client


async def probe(name: str, server_url: str, *, tokens: Any, timeout: float = 30.0) -> ProbeResult:
    """Run `initialize` and `tools/list` against `server_url` with `name`'s
    token from `tokens` (a `BrokerClient`, or `ServiceTokens`). Raises the
    first failure as a `BrokerError` (`ProbeFailed` for the server's part)."""
    import anyio

    # The SDK takes a second to import: not on an event loop the app shares.
    client_class = await asyncio.to_thread(_load_sdk)
    from mcp.client.streamable_http import streamable_http_client

    auth = httpx2_auth(name, client=tokens)
    where = _where(httpx2.URL(server_url))
    http = _Watched(auth=auth, timeout=httpx2.Timeout(timeout))
    try:
        async with http:
            with anyio.fail_after(timeout):
                started = time.perf_counter()
                transport = streamable_http_client(server_url, http_client=http)
                async with client_class(transport, mode="legacy", cache=None) as session:
                    initialized = time.perf_counter()
                    count, cursor = 0, None
                    for _ in range(MAX_PAGES):
                        page = await session.list_tools(cursor=cursor)
                        count += len(page.tools)
                        cursor = page.next_cursor
                        if not cursor:
                            break
                    listed = time.perf_counter()
                    info = session.server_info
                    return ProbeResult(
                        connection=name,
                        server_url=server_url,
                        server_name=info.name if info else None,
                        server_version=info.version if info else None,
                        protocol_version=session.protocol_version,
                        tools=count,
                        initialize_ms=(initialized - started) * 1000,
                        round_trip_ms=(listed - initialized) * 1000,
                    )
    except Exception as exc:  # noqa: BLE001 - every way the exchange can fail becomes one line
        raise _explain(exc, http.failure, where, timeout) from None
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside the SDK's (nested) task-group exception groups
    (the probe's and the hosted proxy session's, `broker.service.proxy_session`)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _explain(exc: Exception, seen: BrokerError | None, where: str, timeout: float) -> BrokerError:
    """The failure to report: what the HTTP exchanges showed first, else what the SDK raised."""
    from mcp.shared.exceptions import MCPError

    if seen is not None:
        return seen
    first = leaf(exc)
    if isinstance(first, BrokerError):
        return first
    if isinstance(first, MCPError):
        if first.code == -32700:  # the SDK could not parse the answer (its text quotes the body: not shown)
            return ProbeFailed("not_mcp", f"{where} answered something that is not MCP JSON-RPC")
        text = describe_remote_text(first.message, 160)
        return ProbeFailed("mcp_error", f"the MCP server at {where} answered with an error: {text}")
    if isinstance(first, TimeoutError):
        return ProbeFailed("timeout", f"the MCP server at {where} did not answer within {timeout:g} s")
    return ProbeFailed("not_mcp", f"the MCP exchange with {where} failed ({_reason(first)})")


class ServiceTokens:
    """The in-process service as the token source `httpx2_auth` expects (the
    shape of `BrokerClient.token` and `.report_rejected`,
    `.report_insufficient_scope`). Its methods run in
    worker threads and wait on the service's loop, which stays free."""

    def __init__(self, service: BrokerService, identity: ClientIdentity, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._identity = identity
        self._loop = loop

    def __repr__(self) -> str:
        return f"ServiceTokens({self._identity.name!r})"

    def token(self, name: str, *, min_ttl: int | None = None) -> dict[str, Any]:
        call = self._service.token_for(name, self._identity, min_ttl=min_ttl or 0)
        tokens = asyncio.run_coroutine_threadsafe(call, self._loop).result()
        return {"access_token": tokens.access_token.reveal()}

    def report_rejected(self, name: str, token: str) -> dict[str, Any]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        call = self._service.report_rejected(name, self._identity, digest)
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def report_insufficient_scope(self, name: str, token: str, scopes: list[str]) -> dict[str, Any]:
        """A 403 `insufficient_scope` to the app's Test is a step-up like any client's."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        call = self._service.report_insufficient_scope(name, self._identity, digest, list(scopes))
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()


async def probe_in_process(service: BrokerService, name: str, *, timeout: float = 30.0) -> ProbeResult:
    """The app's Test button: run on the service's own loop, tokens straight from it."""
    from ..service.identity import ClientIdentity

    view = await service.show(name)
    me = ClientIdentity(
        pid=os.getpid(), app_pid=os.getpid(), exe=None, script=None, name=APP_CLIENT_NAME, in_process=True
    )
    tokens = ServiceTokens(service, me, asyncio.get_running_loop())
    return await probe(name, str(view["server_url"]), tokens=tokens, timeout=timeout)
