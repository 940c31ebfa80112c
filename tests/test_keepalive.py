"""The proxy's HTTP client reads the end of each answered SSE stream in a
task of its own (`broker.client.keepalive`), so the connection is reused and
the read is not on the message's way to the client. Against a real HTTP
server on loopback (asyncio, hand-written answers, so a stream can be left
open on purpose)."""

from __future__ import annotations

import asyncio

import pytest

from broker.client import keepalive
from broker.client.proxy_errors import GuardedClient, Reporter

pytestmark = pytest.mark.timeout(60)

EVENT = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n'


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class SseServer:
    """Answers every POST with an SSE stream of one event; ends the stream
    unless `hold` is set. Counts connections and sees them close."""

    def __init__(self, *, hold: bool = False, end_after: float = 0.0) -> None:
        self.hold = hold
        self.end_after = end_after
        self.connections = 0
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()

    async def __aenter__(self) -> SseServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/mcp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._handlers:  # each ends at the client's close; none is left to be cancelled at loop exit
            await asyncio.wait(self._handlers, timeout=10)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    + _chunk(EVENT)
                )
                await writer.drain()
                if self.hold:
                    await reader.read()  # until the client closes
                    return
                await asyncio.sleep(self.end_after)  # the end in a packet of its own, as servers send it
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed.set()
            writer.close()


async def _answer(client: GuardedClient, url: str) -> None:
    """One POST read up to its first event, then closed: as the SDK's transport does."""
    async with client.stream("POST", url, content=b"{}") as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break


@pytest.mark.parametrize("end_after", [0.0, 0.002])
def test_answered_streams_back_to_back_share_connections_and_log_nothing(end_after):
    async def run() -> tuple[int, list[dict]]:
        errors: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        async with SseServer(end_after=end_after) as server:
            async with GuardedClient(connection="t", reporter=Reporter(write=lambda _: None)) as client:
                for _ in range(20):
                    await _answer(client, server.url)
                    await asyncio.sleep(end_after * 2)  # the client reads the answer; the end arrives meanwhile
            return server.connections, errors

    connections, errors = anyio_run(run)
    # Unread ends close the connection: 20 for 20 answers. Read in the background,
    # the next POST may come before the end is read, and take a second one.
    assert connections <= 2
    # A drain closed under itself logs "Task exception was never retrieved" per call.
    assert [f"{c.get('message')}: {c.get('exception')!r}" for c in errors] == []


def test_closing_the_client_ends_a_drain_the_server_never_finishes(monkeypatch):
    monkeypatch.setattr(keepalive, "DRAIN_SECONDS", 600.0)

    async def run() -> None:
        async with SseServer(hold=True) as server:
            async with GuardedClient(connection="t", reporter=Reporter(write=lambda _: None), timeout=600) as client:
                await _answer(client, server.url)
                await asyncio.sleep(0)  # the drain has started and waits on the open stream
                assert not server.closed.is_set()
                drains = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__name__", "") == "_drain"]
                assert len(drains) == 1
            # Leaving `async with` (not aclose) is how the proxy closes its client: the drain is cancelled.
            assert drains[0].cancelled()
            await asyncio.wait_for(server.closed.wait(), 30)  # a bounded wait, not a timing assertion

    anyio_run(run)


def anyio_run(fn):  # the proxy runs its client under anyio's asyncio backend
    import anyio

    return anyio.run(fn)
