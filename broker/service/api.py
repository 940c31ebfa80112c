"""The socket API's HTTP/1.1 server: h11 on an asyncio Unix socket.

Security and robustness, in the order a connection meets them:

1. The socket lives in a 0700 directory and is bound under umask 0177, so
   it is 0600 from the first instant.
2. Every accepted connection's peer credentials are checked before a byte is
   read; another UID is dropped.
3. h11 parses; a request head may be at most `max_head` bytes and a body at
   most `max_body`. A started request must be complete within
   `request_timeout`; an idle keep-alive connection is closed after
   `idle_timeout`. Each connection is its own task, so slow or idle clients
   never hold up others.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import h11

from ..codes import status_for
from ..errors import AlreadyRunning, IdentityChanged, UnsafeSocketDir
from .identity import ClientIdentity, identify
from .peercred import PeerCredentials, peer_credentials
from .procfs import ProcessStamp

__all__ = ["ApiRequest", "ApiServer", "Handler", "Peer", "PlainText", "Takeover", "error_body"]

log = logging.getLogger(__name__)


class PlainText(str):
    """A handler's answer sent as text/plain instead of JSON (the `token` fast path)."""


@dataclass
class Takeover:
    """A handler's answer that takes the connection over (`101 Switching
    Protocols` to an `Upgrade: <upgrade>` request): `run` gets the socket, a
    non-blocking duplicate, once the 101 is sent; the server reads no more.
    `abandon`, if any, is called instead when `run` never starts (no `Upgrade:`
    in the request, the client gone before the 101): what the handler took
    for `run` (a proxy session's place) is given back."""

    upgrade: str
    run: Callable[[socket.socket], Awaitable[None]]
    abandon: Callable[[], None] | None = None


def error_body(code: str, message: str) -> dict[str, str]:
    """The body of every error answer."""
    return {"error": code, "message": message}


@dataclass
class Peer:
    """The process on the other end of one socket connection, identified when it connected.

    Identifying at accept time, not at the first token request, means a
    process cannot connect, then exec a granted program (or hand the socket
    to a child and let the parent become one) and be credited as it. Each
    use of `identity` re-checks the stamp taken at accept.
    """

    creds: PeerCredentials
    _identity: ClientIdentity
    _stamp: ProcessStamp | None = None
    _on_changed: Callable[[ClientIdentity, str], None] | None = None

    @property
    def identity(self) -> ClientIdentity:
        """Raises `IdentityChanged` if the process exec'd or exited since it connected."""
        if self._stamp is not None:
            problem = self._stamp.changed()
            if problem is not None:
                if self._on_changed is not None:
                    self._on_changed(self._identity, problem)
                raise IdentityChanged(f"process {self.creds.pid} {problem}; its requests are refused, connect again")
        return self._identity

    def close(self) -> None:
        if self._stamp is not None:
            self._stamp.close()


@dataclass
class _Deadline:
    """When the connection's current wait must end (loop time); None: no wait."""

    reader: asyncio.StreamReader
    at: float | None = None
    expired: bool = False


@dataclass
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any = field(repr=False)  # may carry a client secret (add)
    peer: Peer
    segments: tuple[str, ...] = field(default=())
    #: Send an interim `102 Processing` answer with these headers (a request
    #: that waits for a person says so); does nothing for HTTP/1.0 clients.
    interim: Callable[[list[tuple[str, str]]], None] = field(default=lambda _headers: None, repr=False)


Handler = Callable[[ApiRequest], Awaitable[tuple[int, Any]]]

_JSON = [("Content-Type", "application/json")]
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # built once, not per response


class ApiServer:
    def __init__(
        self,
        handler: Handler,
        socket_path: str | Path,
        *,
        max_head: int = 16 * 1024,
        max_body: int = 64 * 1024,
        request_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        identify: Callable[[int | None], ClientIdentity] = identify,
    ) -> None:
        self.handler = handler
        self.socket_path = Path(socket_path)
        self.max_head = max_head
        self.max_body = max_body
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self._identify = identify
        #: Called with (identity at accept, what changed) when a peer's process is no longer what connected.
        self.on_identity_changed: Callable[[ClientIdentity, str], None] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: dict[asyncio.Task[None], _Deadline] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.rejected_peers = 0

    # -- socket setup ---------------------------------------------------------

    def prepare_dir(self) -> None:
        """Every directory from the runtime base down must be ours alone, and none
        above it changeable by another user (broker.client.socketdir): else UnsafeSocketDir."""
        from ..client.socketdir import prepare_socket_dir
        from ..client.socketpath import base_for

        prepare_socket_dir(str(self.socket_path), base_for(str(self.socket_path)))

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    def _remove_stale_socket(self) -> None:
        """A socket file nobody listens on is left over from a crash."""
        path = str(self.socket_path)
        if not os.path.lexists(path):
            return
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise UnsafeSocketDir(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("removing stale socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
        finally:
            probe.close()
        raise AlreadyRunning(f"another broker is already serving on {path}")

    @staticmethod
    def _raise_fd_limit() -> None:
        """Idle clients each hold a descriptor: allow thousands of them, as far
        as the hard limit lets us, instead of stalling accept() at 1024."""
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = hard if hard != resource.RLIM_INFINITY else 65536
            want = min(want, 65536)
            if soft < want:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ImportError, ValueError, OSError):
            pass

    async def start(self) -> None:
        self._raise_fd_limit()
        self.prepare_dir()
        self._remove_stale_socket()
        sock = self._bind()
        self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=self.max_head)
        self._sweeper = asyncio.create_task(self._sweep(), name="api-timeouts")

    async def _sweep(self) -> None:
        """Enforce idle and request timeouts for every connection from one task,
        twice a second, instead of arming a timer per request on the hot path."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            now = loop.time()
            for deadline in list(self._deadlines.values()):
                if deadline.at is not None and now >= deadline.at and not deadline.expired:
                    deadline.expired = True
                    deadline.reader.feed_eof()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    @property
    def connections(self) -> int:
        return len(self._tasks)

    # -- connections ----------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer: Peer | None = None
        try:
            sock = writer.get_extra_info("socket")
            try:
                creds = peer_credentials(sock)
            except OSError:
                creds = None
            if creds is None or creds.uid != os.getuid():
                # Before reading a single byte.
                self.rejected_peers += 1
                log.warning("refused a connection from uid %s", creds.uid if creds else "unknown")
                return
            # Stamp first, then identify: an exec from here on no longer matches the stamp.
            stamp = ProcessStamp.take(creds.pid)
            peer = Peer(creds, self._identify(creds.pid), stamp, self.on_identity_changed)
            self._deadlines[task] = _Deadline(reader)
            await self._serve(reader, writer, peer, self._deadlines[task])
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            if peer is not None:
                peer.close()
            self._tasks.discard(task)
            self._deadlines.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer, deadline: _Deadline
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        loop = asyncio.get_running_loop()
        while True:
            try:
                request, body = await self._read_request(conn, reader, loop, deadline)
            except TimeoutError:
                # Idle keep-alive: just close. Half-sent request: say why.
                if conn.their_state is h11.SEND_BODY or conn.trailing_data[0]:
                    await self._send_error(
                        conn, writer, status_for("timeout"), "timeout", "request not completed in time"
                    )
                return
            except _TooLarge:
                await self._send_error(conn, writer, 413, "bad_request", "request too large")
                return
            except _HeadTooLarge:
                await self._send_error(conn, writer, 431, "bad_request", "request headers too large")
                return
            except h11.RemoteProtocolError as exc:
                await self._send_error(conn, writer, exc.error_status_hint, "bad_request", "malformed HTTP request")
                return
            if request is None:
                return  # the client closed the connection
            status, payload = await self._dispatch(request, body, peer, _interim(conn, writer, request))
            if isinstance(payload, Takeover):
                await self._take_over(conn, writer, payload)
                return
            keep_alive = await self._send(conn, writer, status, payload)
            if not keep_alive:
                return
            conn.start_next_cycle()

    async def _read_request(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
        deadline: _Deadline,
    ) -> tuple[h11.Request | None, bytes]:
        """One request: idle until its first byte, then `request_timeout` to
        finish it. The sweeper ends an overdue wait by feeding the reader EOF."""
        request: h11.Request | None = None
        body = bytearray()
        received = len(conn.trailing_data[0])  # bytes of this request seen so far
        started = bool(received)
        deadline.at = loop.time() + (self.request_timeout if started else self.idle_timeout)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if deadline.expired:
                        raise TimeoutError
                    if not started:
                        started = True
                        deadline.at = loop.time() + self.request_timeout
                    received += len(data)
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.IDLE:
                        return None, b""
                    continue
                if isinstance(event, h11.Request):
                    request = event
                    # h11 caps only heads that arrive in pieces; cap whole ones
                    # too: what it consumed for this event is the head.
                    if received - len(conn.trailing_data[0]) > self.max_head:
                        raise _HeadTooLarge
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        raise _TooLarge
                elif isinstance(event, h11.EndOfMessage):
                    return request, bytes(body)
                else:
                    return None, b""
        finally:
            deadline.at = None  # handling the request is not bounded by these timeouts

    async def _dispatch(
        self, request: h11.Request, body: bytes, peer: Peer, interim: Callable[[list[tuple[str, str]]], None]
    ) -> tuple[int, Any]:
        """Parse the target and the JSON body, then ask the handler, which answers
        its own errors (`broker.service.routes`); what it raises is an internal error."""
        target = request.target.decode("ascii", "replace")
        path, _, query_string = target.partition("?")
        try:
            query = dict(parse_qsl(query_string, max_num_fields=20)) if query_string else {}
            parsed: Any = None
            if body:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    return status_for("bad_request"), error_body("bad_request", "the body is not JSON")
            stripped = path.strip("/")
            if not stripped:
                segments: tuple[str, ...] = ()
            elif "%" in stripped:
                segments = tuple(unquote(s) for s in stripped.split("/"))
            else:
                segments = tuple(stripped.split("/"))
            api_request = ApiRequest(request.method.decode(), path, query, parsed, peer, segments, interim)
            return await self.handler(api_request)
        except ValueError:
            return status_for("bad_request"), error_body("bad_request", "malformed query string")
        except Exception:
            log.exception("internal error answering %s %s", request.method.decode(), path)
            return status_for("internal_error"), error_body(
                "internal_error", "the broker hit an internal error; see its log"
            )

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, payload: Any) -> bool:
        if isinstance(payload, PlainText):
            data = payload.encode() + b"\n"
            content_type = "text/plain; charset=utf-8"
        else:
            data = _ENCODE(payload).encode() + b"\n"
            content_type = "application/json"
        # One write (one syscall) for head, body and end.
        writer.write(
            conn.send(_response(status, len(data), content_type)) + conn.send(h11.Data(data=data)) + conn.send(_END)
        )
        if writer.transport.get_write_buffer_size():
            await writer.drain()
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _take_over(self, conn: h11.Connection, writer: asyncio.StreamWriter, takeover: Takeover) -> None:
        """Answer 101 and hand the socket to `takeover.run` (its own error answers
        otherwise, and `takeover.abandon`)."""
        started = False
        try:
            if conn.their_state is not h11._state.MIGHT_SWITCH_PROTOCOL:
                await self._send_error(conn, writer, 400, "bad_request", f"send Upgrade: {takeover.upgrade}")
                return
            # The session's own socket first: out of descriptors, the client hears why, not a 101 and a close.
            own = writer.get_extra_info("socket")
            try:
                sock = socket.socket(fileno=os.dup(own.fileno()))
            except OSError as exc:
                why = os.strerror(exc.errno).lower() if exc.errno else type(exc).__name__
                message = (
                    f"the broker cannot take another session now ({why}); close some MCP clients, then restart this one"
                )
                await self._send_error(conn, writer, 503, "too_many_sessions", message)
                return
            try:
                sock.setblocking(False)
                # Before the 101 goes out: what the client sends next (descriptors) is not for the stream reader.
                transport: Any = writer.transport  # asyncio's or uvloop's (not registered as a ReadTransport)
                transport.pause_reading()
                headers = [("Upgrade", takeover.upgrade), ("Connection", "Upgrade")]
                writer.write(conn.send(h11.InformationalResponse(status_code=101, headers=headers)))
                await writer.drain()
                started = True
                await takeover.run(sock)
            finally:
                sock.close()
        finally:
            if not started and takeover.abandon is not None:
                takeover.abandon()

    async def _send_error(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, code: str, message: str
    ) -> None:
        """An answer to a request that never reached the handler (too slow, too large, not HTTP)."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        data = json.dumps(error_body(code, message)).encode()
        try:
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=status,
                        headers=[*_JSON, ("Content-Length", str(len(data))), ("Connection", "close")],
                    )
                )
            )
            writer.write(conn.send(h11.Data(data=data)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError):
            pass


def _interim(
    conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request
) -> Callable[[list[tuple[str, str]]], None]:
    def send(headers: list[tuple[str, str]]) -> None:
        # HTTP/1.0 clients may not get a 1xx (RFC 9110 §15.2); nor may an answer that began.
        if request.http_version != b"1.0" and conn.our_state is h11.SEND_RESPONSE:
            with contextlib.suppress(h11.LocalProtocolError, ConnectionError):
                writer.write(conn.send(h11.InformationalResponse(status_code=102, headers=headers)))

    return send


_END = h11.EndOfMessage()
_RESPONSES: dict[tuple[int, int, str], h11.Response] = {}


def _response(status: int, length: int, content_type: str) -> h11.Response:
    """h11 events are immutable: reuse a validated Response per (status, length,
    type) rather than building and validating a new one for every token."""
    key = (status, length, content_type)
    event = _RESPONSES.get(key)
    if event is None:
        if len(_RESPONSES) > 512:
            _RESPONSES.clear()
        headers = [("Content-Type", content_type), ("Content-Length", str(length))]
        event = _RESPONSES[key] = h11.Response(status_code=status, headers=headers)
    return event


class _TooLarge(Exception):
    pass


class _HeadTooLarge(Exception):
    pass
