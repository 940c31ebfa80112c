"""Keep the proxy's connection to the MCP server open between calls.

A streamable HTTP server may answer a POST with an SSE stream that it ends
right after the JSON-RPC response. The SDK's transport stops reading at that
response and closes the response at once, before the stream's last chunk
arrived; the HTTP client cannot reuse a connection whose answer was not read
to its end, so it closes it, and the next call opens a new TCP connection
(and resolves the host again, on a worker thread). Behind a client that
calls tool after tool, that was one connection per call.

`keep_alive(response)` makes closing such a response read what is left of it
first, briefly and boundedly (a server that keeps the stream open is closed
as before), so the connection goes back to the pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import httpx2

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "keep_alive"]

#: At most this long, and this much, is read from a stream being closed.
DRAIN_SECONDS = 0.5
DRAIN_BYTES = 64 * 1024


class _DrainOnClose(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(httpx2.HTTPError, httpx2.StreamError, OSError):
                read = 0
                async for chunk in self._stream:
                    read += len(chunk)
                    if read > DRAIN_BYTES:
                        break
        finally:
            await self._stream.aclose()


def keep_alive(response: httpx2.Response) -> None:
    """Closing this SSE response reads its end first, so its connection is reused."""
    stream = response.stream
    if isinstance(stream, httpx2.AsyncByteStream) and (
        response.headers.get("content-type", "").lower().startswith("text/event-stream")
    ):
        response.stream = _DrainOnClose(stream)
