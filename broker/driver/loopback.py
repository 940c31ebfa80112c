"""The RFC 8252 loopback redirect listener.

Listens on 127.0.0.1 (never 0.0.0.0), answers exactly one path, and ends the
flow on the first callback that carries the right `state`. Callbacks with a
wrong `state` are answered with an error page and ignored, so a local web
page cannot cancel a login by firing forged redirects at the port. HTTP is
parsed by h11, with a size cap and a timeout per connection.

Connections from another local user get a 403 page before anything they send
is looked at (tcpowner.py finds the peer's UID on Linux; elsewhere every
local peer is let through and `state` is the only guard). Another user who
learned the `state` could otherwise finish the login with their own account,
or cancel it with `error=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
from collections.abc import Callable
from typing import Any, TypeVar

import h11

from ..errors import (
    BadResponse,
    BrokerError,
    CallbackRejected,
    FlowTimeout,
    OAuthError,
    RedirectPortUnavailable,
    StateMismatch,
)
from ..oauth.authorization import callback_params_from_url
from .tcpowner import peer_is_us

__all__ = ["LoopbackListener", "DEFAULT_CALLBACK_PATH"]

DEFAULT_CALLBACK_PATH = "/callback"
MAX_REQUEST_BYTES = 16 * 1024
READ_TIMEOUT = 10.0

T = TypeVar("T")

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>MCP Token Broker</title>
<style>body{{font:16px system-ui,sans-serif;margin:4em auto;max-width:34em;color:#222}}
h1{{font-size:1.3em}}.ok{{color:#1a7f37}}.bad{{color:#cf222e}}</style></head>
<body><h1 class="{cls}">{title}</h1><p>{body}</p></body></html>"""


def _page(ok: bool, title: str, body: str) -> bytes:
    return _PAGE.format(cls="ok" if ok else "bad", title=html.escape(title), body=html.escape(body)).encode()


class LoopbackListener:
    """One-shot receiver for an authorization response.

    `validate` turns the query parameters into a result or raises: a
    `StateMismatch` is shown and ignored; any other error ends the flow.
    `is_us(sockname, peername)` decides whether a connection comes from our
    own user; others are refused and counted in `foreign`.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        path: str = DEFAULT_CALLBACK_PATH,
        host: str = "127.0.0.1",
        is_us: Callable[[tuple[Any, ...], tuple[Any, ...]], bool] = peer_is_us,
    ) -> None:
        if not path.startswith("/"):
            path = "/" + path
        self.host = host
        self.path = path
        self._requested_port = port
        self._server: asyncio.base_events.Server | None = None
        self._future: asyncio.Future[object] | None = None
        self._validate: Callable[[dict[str, str]], object] | None = None
        self.rejected = 0
        self.foreign = 0
        self._is_us = is_us
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port; still known after the listener closed."""
        if self._port is None:
            raise RuntimeError("listener not started")
        return self._port

    @property
    def redirect_uri(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        if self._server is not None:
            return
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._requested_port, reuse_address=True)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise RedirectPortUnavailable(
                    f"port {self._requested_port} on {self.host} is taken; the redirect listener cannot use it"
                ) from None
            raise
        self._port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> LoopbackListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def deliver(self, params: dict[str, str]) -> tuple[bool, str]:
        """Feed parameters from elsewhere (a pasted URL); same rules as HTTP.
        Returns (accepted, what the browser page would have said)."""
        ok, _title, text = self._consider(params)
        return ok, text

    async def wait(self, validate: Callable[[dict[str, str]], T], timeout: float) -> T:
        """Wait for the first callback that passes `validate` (or ends the flow)."""
        loop = asyncio.get_running_loop()
        self._future = loop.create_future()
        self._validate = validate
        try:
            async with asyncio.timeout(timeout):
                return await self._future  # type: ignore[return-value]  # it holds what `validate` returned: a T
        except TimeoutError:
            raise FlowTimeout(f"no answer from the browser within {timeout:g} s") from None
        finally:
            await self.aclose()

    # -- internals ----------------------------------------------------------

    def _consider(self, params: dict[str, str]) -> tuple[bool, str, str]:
        """Apply `validate`; return (ok, title, text) for the browser page."""
        if self._future is None or self._future.done() or self._validate is None:
            return False, "No login in progress", "This login has already finished. You can close this tab."
        try:
            result = self._validate(params)
        except StateMismatch:
            self.rejected += 1
            return (
                False,
                "Not for this login",
                "This response does not belong to the login in progress (state mismatch) and was ignored.",
            )
        except OAuthError as exc:
            self._future.set_exception(exc)
            return False, "Login failed", f"The authorization server said: {exc.error}. Return to the terminal or app."
        except CallbackRejected as exc:
            self._future.set_exception(exc)
            return False, "Login refused", "The response failed a security check and was discarded."
        except BrokerError as exc:
            self._future.set_exception(exc)
            return False, "Login failed", "The response was not understood. Return to the terminal or app."
        self._future.set_result(result)
        return True, "Connected", "MCP Token Broker received the authorization. You can close this tab."

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            # Looked up at once, while the peer's socket certainly exists.
            ours = self._is_us(writer.get_extra_info("sockname"), writer.get_extra_info("peername"))
            async with asyncio.timeout(READ_TIMEOUT):
                request = await self._read_request(conn, reader)
            if request is None:
                return
            target = request.target.decode("ascii", "replace")
            path = target.split("?", 1)[0]
            if not ours:
                self.foreign += 1
                status, ok, title, text = (
                    403,
                    False,
                    "Not your login",
                    "This login belongs to another user of this computer. Nothing was passed on.",
                )
            elif request.method != b"GET":
                status, ok, title, text = 405, False, "Method not allowed", "Only GET is answered here."
            elif path != self.path:
                status, ok, title, text = 404, False, "Not found", "Nothing here."
            else:
                try:
                    params = callback_params_from_url(target)
                except BadResponse as exc:
                    self.rejected += 1
                    status, ok, title, text = 400, False, "Not understood", f"{exc}. It was ignored."
                else:
                    ok, title, text = self._consider(params)
                    status = 200 if ok else 400
            await self._respond(conn, writer, status, _page(ok, title, text))
        except (TimeoutError, h11.RemoteProtocolError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        received = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(4096)
                received += len(data)
                if received > MAX_REQUEST_BYTES:
                    return None
                conn.receive_data(data)
                if not data:
                    return None
                continue
            if isinstance(event, h11.Request):
                return event
            return None

    @staticmethod
    async def _respond(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
            ("Connection", "close"),
        ]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
