"""Proxy sessions hosted by the service: `POST /v1/connections/NAME/proxy`.

`mcp-token-broker proxy NAME` (`broker.client.proxy_thin`) hands its stdin,
stdout and stderr to the service over the socket (SCM_RIGHTS, after a `101`),
and the service runs the same proxy the process would have run
(`broker.client.proxy.run_proxy`, the official SDK's transports), in its own
event loop. So a proxy starts without importing the SDK and holds no copy of
it, and the token never leaves the service: each HTTP request takes it from
the service's memory (`token_for`, checked each time; audited once per
session and once per new token, not per request) and a 401 is reported to
the service directly.

The session ends when the client closes stdin, when the thin client's socket
closes (the MCP client killed it), or when the service stops. The received
descriptors are closed on every path, and the thin client is told the exit
status (one line) before its socket closes.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import select
import socket
import stat
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from ..client.probe import leaf
from ..client.proxy_thin import UPGRADE
from ..errors import BrokerError, TooManySessions
from ..oauth.tokens import TokenSet
from ..storage.atomic import atomic_write, off_loop
from .identity import ClientIdentity

__all__ = ["MAX_SESSIONS", "UPGRADE", "ProxySessions"]

log = logging.getLogger(__name__)

#: stdin, stdout, stderr.
FD_COUNT = 3
_SDK_LOCK = threading.Lock()
#: Seconds the thin client has, after the 101, to send its descriptors.
FD_WAIT = 10.0
#: A line from the client longer than this ends the session (the service's memory is shared).
MAX_LINE = 16 * 1024 * 1024
#: Hosted sessions at once (`serve --max-proxy-sessions`): each holds three of
#: the client's descriptors, a socket and an HTTP client; a runaway client that
#: starts proxies in a loop is refused past this, not served until the broker runs out.
MAX_SESSIONS = 128
#: The `min_ttl` asked for the token of each request (as the in-process proxy's `BrokerAuth`).
MIN_TTL = 30

#: `BrokerService.token_for`: (name, client, min_ttl, held) -> the token set; `held` is not audited again.
TokenFor = Callable[[str, ClientIdentity, float, TokenSet | None], Awaitable[TokenSet]]
Rejected = Callable[[str, ClientIdentity, str], Awaitable[Any]]
#: `BrokerService.report_insufficient_scope`: (name, client, token_sha256, scopes) -> its answer.
Insufficient = Callable[[str, ClientIdentity, str, list[str]], Awaitable[dict[str, Any]]]


def receive_fds(sock: socket.socket) -> list[int]:
    """The descriptors of one SCM_RIGHTS message (one byte `F`); all of them or none."""
    fds = array.array("i")
    data, ancdata, flags, _ = sock.recvmsg(1, socket.CMSG_SPACE(FD_COUNT * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    received = list(fds)
    if data != b"F" or len(received) != FD_COUNT or flags & socket.MSG_CTRUNC:
        close_all(received)
        raise OSError("the proxy did not pass its stdin, stdout and stderr")
    return received


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class _Lines:
    """The client's lines from a pipe (stdio_server's `stdin`), without a thread.

    The descriptor is registered with the event loop once (`add_reader`) and
    stays registered while the session reads: one wake-up and one `read` per
    message, not an epoll add and remove per read as `anyio.wait_readable`
    does. Reading pauses only while more than `MAX_LINE` bytes wait unread,
    so a session holds at most one line and one read of 64 KiB. The buffer is
    searched from where the last search stopped: a long line costs one pass.
    The same on asyncio's loop and uvloop (no transport owns the descriptor;
    the session closes it)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()
        self._scanned = 0  # the first bytes of _buf that hold no newline
        self._eof = False
        self._error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._waiter: asyncio.Future[None] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    def _resume(self) -> None:
        if not self._reading and not self._eof and self._loop is not None:
            self._loop.add_reader(self._fd, self._readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def close(self) -> None:
        """Stop watching the descriptor for good (the session closes it)."""
        self._pause()
        self._eof = True  # _resume never registers it again

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # a socket stdin reset by the client: the session ends with it
            self._error, chunk = exc, b""
        if chunk:
            self._buf += chunk
            if len(self._buf) > MAX_LINE:
                self._pause()  # until a line is taken, or the reader fails on the long one
        else:
            self._eof = True
            self._pause()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __anext__(self) -> str:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                line = self._buf[: end + 1].decode("utf-8", "replace")
                del self._buf[: end + 1]
                self._scanned = 0
                if len(self._buf) <= MAX_LINE:
                    self._resume()
                return line
            self._scanned = len(self._buf)
            if self._eof or self._error is not None:
                if self._buf:  # a last line without its newline
                    line = self._buf.decode("utf-8", "replace")
                    self._buf.clear()
                    self._scanned = 0
                    return line
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            if len(self._buf) > MAX_LINE:
                self.close()
                raise OSError("a line from the client is too long")
            self._resume()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Output:
    """Lines to the client's pipe, without a thread (stdio_server's `stdout`)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    async def write(self, text: str) -> None:
        self._buf += text.encode()

    async def flush(self) -> None:
        import anyio

        while self._buf:
            try:
                done = os.write(self._fd, self._buf)
            except BlockingIOError:
                await anyio.wait_writable(self._fd)
                continue
            del self._buf[:done]


def _stderr_writer(fd: int) -> Callable[[str], None]:
    """The Reporter's lines to the client's stderr, only when they go through at once."""

    def write(text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            poller = select.poll()  # not select.select: it cannot watch a descriptor above 1023
            poller.register(fd, select.POLLOUT)
            if any(events & select.POLLOUT for _, events in poller.poll(0)):
                os.write(fd, text.encode())

    return write


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def _load_sdk() -> None:
    """The SDK, once per service. Its import builds some 80,000 container
    objects and collections in between free nothing: the collector waits
    (as in `broker.client.proxy.main`), and what was built is frozen."""
    import gc

    with _SDK_LOCK:  # a second session waits here, on its worker thread, not on the loop
        if "broker.client.proxy_errors" in sys.modules:
            return
        enabled = gc.isenabled()
        gc.disable()
        try:
            import mcp.client.streamable_http  # noqa: F401
            import mcp.server.stdio  # noqa: F401

            from ..client import proxy_errors  # noqa: F401
        finally:
            if enabled:
                gc.freeze()
                gc.enable()


def _service_auth(
    name: str,
    identity: ClientIdentity,
    token_for: TokenFor,
    rejected: Rejected,
    insufficient: Insufficient | None = None,
) -> Any:
    """An `httpx2.Auth` that takes the token from the service's memory. It
    passes back the token set it used last, so the service audits a token once
    per session rather than once per request (every request is still checked)."""
    import httpx2

    class ServiceAuth(httpx2.Auth):
        requires_request_body = False
        requires_response_body = False

        def __init__(self) -> None:
            self._held: TokenSet | None = None

        def __repr__(self) -> str:
            return f"ServiceAuth({name!r})"

        async def _token(self, min_ttl: float) -> str:
            self._held = await token_for(name, identity, min_ttl, self._held)
            return self._held.access_token.reveal()

        async def async_auth_flow(self, request: Any) -> Any:
            token = await self._token(MIN_TTL)
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code == 401:
                digest = hashlib.sha256(token.encode()).hexdigest()
                with contextlib.suppress(BrokerError):
                    await rejected(name, identity, digest)
                token = await self._token(MIN_TTL * 4)
                request.headers["Authorization"] = f"Bearer {token}"
                yield request
            elif response.status_code == 403 and insufficient is not None:
                await _step_up(name, identity, token, response, insufficient)

    return ServiceAuth()


async def _step_up(name: str, identity: ClientIdentity, token: str, response: Any, insufficient: Insufficient) -> None:
    """A 403 `insufficient_scope` goes to the service (`broker.stepup`); its
    words for the client ride on the response (`GuardedClient` answers them)."""
    from ..oauth.challenge import insufficient_scope

    scopes = insufficient_scope(response.headers.get_list("www-authenticate"))
    if scopes is None:
        return
    try:
        answer = await insufficient(name, identity, hashlib.sha256(token.encode()).hexdigest(), list(scopes))
    except BrokerError as exc:
        log.info("reporting insufficient scope of %s failed: %s", name, exc)
        return
    if isinstance(answer.get("message"), str):
        response.extensions["broker_step_up"] = answer["message"]


class ProxySessions:
    """Runs hosted proxy sessions and counts them (`/v1/health`), each from its
    `101`; at most `max_sessions` at once (`reserve`).

    `marker`, a file written (empty, 0600) when the first session starts, says
    a proxy has been used with this broker: only then is the SDK worth loading
    at start (`warm`, some 32 MiB), for users who never run one it is not."""

    def __init__(
        self,
        token_for: TokenFor,
        rejected: Rejected,
        insufficient: Insufficient | None = None,
        *,
        marker: Path | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._token_for = token_for
        self._rejected = rejected
        self._insufficient = insufficient
        self._marker = marker
        self._marked = False
        self.max_sessions = max_sessions
        self.count = 0

    def used_before(self) -> bool:
        """Whether a hosted session ran with this broker before (its marker exists)."""
        return self._marker is not None and self._marker.exists()

    async def _mark(self) -> None:
        if self._marker is None or self._marked:
            return
        self._marked = True
        try:
            if not await off_loop(self._marker.exists):
                await off_loop(atomic_write, self._marker, b"")
        except OSError as exc:  # only the next start's warm-up is lost
            log.info("could not note that a proxy session ran: %s", exc)

    @property
    def ready(self) -> bool:
        """Whether the SDK is loaded, so a session starts without importing it."""
        return "broker.client.proxy_errors" in sys.modules and "mcp.server.stdio" in sys.modules

    async def warm(self) -> None:
        """Load the SDK now rather than in the first session (`_load_sdk`)."""
        await off_loop(_load_sdk)

    def reserve(self) -> Callable[[], None]:
        """A place for one session, taken before its `101` (check and count in
        one step, no await between): a session waiting for its descriptors
        counts, so proxies that got their 101 meanwhile cannot overshoot the
        limit. At the limit, `TooManySessions`. The place is given back by
        the function returned, at most once however often it is called: by
        `run`'s end, or by the API server when `run` never starts."""
        if self.count >= self.max_sessions:
            raise TooManySessions(self.max_sessions)
        self.count += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.count -= 1

        return release

    async def run(
        self, name: str, server_url: str, identity: ClientIdentity, sock: socket.socket, release: Callable[[], None]
    ) -> None:
        """One session over `sock` (non-blocking, after the `101`) in the place `release` gives back."""
        try:
            await self._run(name, server_url, identity, sock, release)
        finally:
            release()

    async def _run(
        self, name: str, server_url: str, identity: ClientIdentity, sock: socket.socket, release: Callable[[], None]
    ) -> None:
        import anyio

        with anyio.move_on_after(FD_WAIT):
            await anyio.wait_readable(sock)
        try:
            fds = receive_fds(sock)  # nothing yet after FD_WAIT: BlockingIOError
        except OSError as exc:
            log.warning("a proxy for %s did not pass its descriptors: %s", name, exc)
            return
        status = 1
        try:
            await self._mark()
            stdin, stdout, stderr = fds
            if not (_pollable(stdin) and _pollable(stdout)):
                raise OSError("stdin and stdout must be pipes or sockets")
            _nonblocking(stdin)
            _nonblocking(stdout)
            await off_loop(_load_sdk)  # the first session imports the SDK, off the loop
            status = await self._serve(name, server_url, identity, sock, stdin, stdout, stderr)
        except Exception as exc:  # noqa: BLE001 - routine ends come wrapped in the SDK's ExceptionGroups
            cause = leaf(exc)
            if isinstance(cause, (OSError, BrokerError)):
                log.warning("proxy session for %s ended: %s", name, cause)
            else:
                log.exception("proxy session for %s failed", name)
        finally:
            for fd in fds[:2]:  # as they came: the thin client may answer on them itself
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, True)
            close_all(fds)
            release()  # before the exit status: the client that reads it may start the next session
        with contextlib.suppress(OSError):
            sock.send(f"{status}\n".encode())

    async def _serve(self, name: str, server_url: str, identity: ClientIdentity, sock: socket.socket, *fds: int) -> int:
        import anyio

        from ..client.proxy import run_proxy
        from ..client.proxy_errors import Reporter

        stdin, stdout, stderr = fds
        auth = _service_auth(name, identity, self._token_for, self._rejected, self._insufficient)
        report = Reporter(write=_stderr_writer(stderr))
        ended_by_client = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal ended_by_client
                # The thin client sends nothing more: readable means it closed (it died).
                await anyio.wait_readable(sock)
                ended_by_client = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            lines = _Lines(stdin)
            try:
                await run_proxy(name, server_url, stdio=(lines, _Output(stdout)), auth=auth, report=report)
            finally:
                lines.close()
            tg.cancel_scope.cancel()
        if ended_by_client:
            log.info("the proxy for %s went away; its session ended", name)
        return 0
