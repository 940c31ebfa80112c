"""Keep the proxy's connection to the MCP server open between calls.

A streamable HTTP server may answer a POST with an SSE stream that it ends
right after the JSON-RPC response. The SDK's transport stops reading at that
response and closes the response at once, before the stream's last chunk
arrived; the HTTP client cannot reuse a connection whose answer was not read
to its end, so it closes it, and the next call opens a new TCP connection
(and resolves the host again, on a worker thread). Behind a client that
calls tool after tool, that was one connection per call.

`Drains.keep_alive(response)` makes closing such a response read what is
left of it, briefly and boundedly (a server that keeps the stream open is
closed as before), so the connection goes back to the pool. That read runs
in a task of its own, after the response's message went on: the transport
closes the response right after handing the message over, and reading the
stream's end there came before the message reached the client (one more
network read, h11 and pool bookkeeping on every call's path). The next call
comes after the client has read the answer, by when the end has been read.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import httpx2

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "IDLE_EXPIRY", "LIMITS", "Drains"]

#: Seconds a kept connection may sit idle before the proxy drops it itself. Below
#: the 5 s after which uvicorn (and many servers) close an idle connection: at
#: httpx2's default of 5 s, a call after about 5 s of quiet could go out on a
#: connection the server was closing that instant and fail ("cannot reach …
#: (readError)"). 4 s, as undici (node's fetch) keeps them.
IDLE_EXPIRY = 4.0
LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=IDLE_EXPIRY)

#: At most this long, and this much, is read from a stream being closed.
DRAIN_SECONDS = 0.5
DRAIN_BYTES = 64 * 1024


async def _drain(stream: httpx2.AsyncByteStream, chunks: _Chunks) -> None:
    """Read `chunks`, the stream's one iteration, to its end (bounded); then close."""
    try:
        with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(httpx2.HTTPError, httpx2.StreamError, OSError):
            read = 0
            async for chunk in chunks:
                read += len(chunk)
                if read > DRAIN_BYTES:
                    break
    finally:
        await stream.aclose()


class _Chunks:
    """The stream's one iteration, shared by the reader and the drain. Not an
    async generator itself: httpx2 closes the iterator it read from when its
    own generators are dropped (`aiter_raw`'s `finally`), and the event loop
    closes a dropped unfinished generator; either would close the stream under
    the drain (and raise "asynchronous generator is already running" there)."""

    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._inner = stream.__aiter__()

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        return await self._inner.__anext__()


class _DrainOnClose(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, drains: Drains) -> None:
        self._stream = stream
        self._drains = drains
        self._chunks: _Chunks | None = None
        self._closed = False

    def __aiter__(self) -> _Chunks:
        if self._chunks is None:
            self._chunks = _Chunks(self._stream)
        return self._chunks

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._drains.start(self._stream, self.__aiter__())


class Drains:
    """The ends of answered SSE streams being read, one task each. The HTTP
    client's close (`aclose`) cancels what is left and closes those streams,
    also of drains cancelled before they ran."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], httpx2.AsyncByteStream] = {}

    def keep_alive(self, response: httpx2.Response) -> None:
        """Closing this SSE response reads its end (in a task), so its connection is reused."""
        stream = response.stream
        if isinstance(stream, httpx2.AsyncByteStream) and (
            response.headers.get("content-type", "").lower().startswith("text/event-stream")
        ):
            response.stream = _DrainOnClose(stream, self)

    def start(self, stream: httpx2.AsyncByteStream, chunks: _Chunks) -> None:
        task = asyncio.get_running_loop().create_task(_drain(stream, chunks))
        self._tasks[task] = stream
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def aclose(self) -> None:
        pending = dict(self._tasks)
        for task in pending:
            task.cancel()
        try:
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            for stream in pending.values():  # a task cancelled before its first step never ran its finally
                with contextlib.suppress(Exception):
                    await stream.aclose()
