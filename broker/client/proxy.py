"""`mcp-token-broker proxy NAME`: a stdio MCP server that forwards to the
remote one, for clients that only start local (stdio) servers.

Messages pass through unchanged between the official SDK's stdio server
transport and its streamable HTTP client transport. Each HTTP request carries
a current token from the broker service (`httpx2_auth`), so a long session
never runs on an expired token and the proxy never refreshes on its own. A
401 from the server is reported to the broker (`/token/rejected`, by hash)
before the token is fetched again, so a token the server revoked early, or
one without an expiry, is replaced. The token is kept in the proxy until
`min_ttl` before it expires, so a call costs no trip to the broker.

Start-up is mostly the SDK's import (`mcp` loads its client, server and both
protocol versions' pydantic models, about half a second). `main` starts that
import on a thread at once, while the main thread hardens the process and asks
the broker for the connection, and it keeps the garbage collector off until
the import is done: the import builds some 80,000 container objects, and
collections in between find nothing to free. What the import built is then
frozen out of later collections (`gc.freeze`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .proxy_errors import Reporter

__all__ = ["main", "run_proxy", "serve_error"]

log = logging.getLogger(__name__)


class _Handshake:
    """Holds the client's messages back while its `initialize` is unanswered.

    The streamable HTTP transport sends each request as soon as it gets it; a
    `tools/list` written right behind `initialize` would reach the server
    before the session id exists ("Missing session ID"). So after an
    `initialize` request nothing more goes out until its answer has come back.
    Other messages pass without an event or an await of their own (hot path).
    """

    def __init__(self) -> None:
        self._pending: Any = None  # the id of the unanswered initialize
        self._answered: Any = None  # an anyio.Event, set when it is answered

    def sent(self, message: Any) -> None:
        if getattr(message, "method", None) == "initialize" and hasattr(message, "id"):
            import anyio

            self._pending, self._answered = message.id, anyio.Event()

    def received(self, message: Any) -> None:
        if (
            self._pending is not None
            and not hasattr(message, "method")
            and getattr(message, "id", None) == self._pending
        ):
            self._pending = None
            self._answered.set()

    async def wait(self) -> None:
        if self._pending is not None:
            await self._answered.wait()


async def _upstream(source: Any, sink: Any, local_write: Any, handshake: _Handshake, report: Reporter) -> None:
    from .proxy_errors import invalid_input_answer

    async with sink:
        async for message in source:
            if isinstance(message, Exception):
                answer, text = invalid_input_answer(message)
                report.failed(text)
                await local_write.send(answer)
                continue
            await handshake.wait()
            handshake.sent(message.message)
            await sink.send(message)


async def _downstream(source: Any, sink: Any, handshake: _Handshake, report: Reporter) -> None:
    async for message in source:
        if isinstance(message, Exception):
            report.failed(f"the server sent something that is not JSON-RPC ({type(message).__name__})")
            continue
        await sink.send(message)
        handshake.received(message.message)


async def run_proxy(
    name: str, server_url: str, *, client: Any = None, stdio: Any = None, auth: Any = None, report: Any = None
) -> None:
    """The session. The service hosting it (`broker.service.proxy_session`) passes
    the client's streams (`stdio`), its own `auth` and a `report` to their stderr."""
    import anyio
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    from .api_client import BrokerClient
    from .httpx_auth import httpx2_auth
    from .proxy_errors import GuardedClient, Reporter

    report = report or Reporter()
    auth = auth or httpx2_auth(name, client=client or BrokerClient())
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with GuardedClient(connection=name, reporter=report, auth=auth, timeout=timeout) as http:
        async with stdio_server(*(stdio or ())) as (local_read, local_write):
            async with streamable_http_client(server_url, http_client=http) as (remote_read, remote_write):
                handshake = _Handshake()
                async with local_write, anyio.create_task_group() as tg:

                    async def upstream() -> None:
                        await _upstream(local_read, remote_write, local_write, handshake, report)
                        tg.cancel_scope.cancel()  # the client closed stdin: done

                    tg.start_soon(upstream)
                    tg.start_soon(_downstream, remote_read, local_write, handshake, report)


def _load_sdk() -> None:
    # Whatever fails here fails again, with its traceback, where main imports it.
    try:
        import anyio  # noqa: F401
        import httpx2  # noqa: F401
        from mcp.client.streamable_http import streamable_http_client  # noqa: F401
        from mcp.server.stdio import stdio_server  # noqa: F401

        from . import proxy_errors  # noqa: F401
    except BaseException:  # noqa: BLE001, S110
        pass


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"mcp-token-broker: {record.levelname.lower()}: {record.getMessage()}"


def _why(exc: OSError) -> str:
    """An OSError in a few words ("connection reset by peer"), without its paths."""
    import os

    return os.strerror(exc.errno).lower() if isinstance(exc.errno, int) and exc.errno > 0 else type(exc).__name__


def main(name: str) -> int:
    """`mcp-token-broker proxy NAME`; the exit status. The console script
    calls this without the CLI's parser (`broker.client.launcher`)."""
    import gc
    import threading

    gc.disable()
    loader = threading.Thread(target=_load_sdk, name="sdk-import", daemon=True)
    loader.start()
    try:
        if not logging.getLogger().handlers:  # the full CLI has set its own
            handler = logging.StreamHandler()
            handler.setFormatter(_LineFormatter())
            logging.basicConfig(level=logging.WARNING, handlers=[handler])
        from ..errors import BrokerError, ServiceError
        from ..service.hardening import harden_process
        from .api_client import BrokerClient, quote

        harden_process()
        client = BrokerClient()
        failure: BrokerError | None = None
        try:
            view = client.request("GET", f"/v1/connections/{quote(name)}")
        except BrokerError as exc:
            failure = exc
        except OSError as exc:  # something listens there but reset or closed the connection
            failure = ServiceError(0, "bad_response", f"the broker's socket failed ({_why(exc)})")
        loader.join()
    finally:
        gc.freeze()
        gc.enable()
    import anyio

    if failure is not None:
        # A stdio client shows JSON-RPC errors, not our stderr: answer its requests with the reason.
        from .proxy_errors import describe

        anyio.run(serve_error, describe(failure, name))
        return failure.exit_code
    anyio.run(run_proxy, name, view["server_url"])
    return 0


async def serve_error(text: str) -> None:
    """Answer every request with `text` until the client closes stdin: what the
    proxy does when it cannot start (no broker, no such connection)."""
    from mcp.server.stdio import stdio_server

    from .proxy_errors import Reporter, error_answer, invalid_input_answer

    report = Reporter()
    report.failed(text)
    async with stdio_server() as (local_read, local_write):
        async with local_write:
            async for message in local_read:
                if isinstance(message, Exception):
                    answer, _ = invalid_input_answer(message)
                    await local_write.send(answer)
                elif hasattr(message.message, "method") and hasattr(message.message, "id"):
                    await local_write.send(error_answer(message.message.id, text))
