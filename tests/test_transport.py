"""Transport limits against real HTTP servers on loopback."""

from __future__ import annotations

import asyncio

import pytest

from broker.driver.transport import Limits, Transport
from broker.errors import NetworkError, ResponseTooLarge, UnsafeEndpoint
from broker.oauth.http import HttpRequest

pytestmark = pytest.mark.timeout(30)


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"


async def read_head(reader):
    await reader.readuntil(b"\r\n\r\n")


def run(handler, limits, url_override=None):
    async def main():
        server, url = await serve(handler)
        try:
            async with Transport(limits=limits) as t, t.for_server(url):
                return await t.send(HttpRequest("GET", url_override or url, "test endpoint"))
        finally:
            server.close()

    return asyncio.run(main())


def test_declared_oversize_refused():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 999999\r\n\r\n" + b"a" * 1000)
        await writer.drain()
        writer.close()

    with pytest.raises(ResponseTooLarge):
        run(handler, Limits(max_body=1000))


def test_streamed_oversize_refused():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(100):
                writer.write(b"400\r\n" + b"a" * 1024 + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    with pytest.raises(ResponseTooLarge):
        run(handler, Limits(max_body=10_000))


def test_slow_drip_hits_the_deadline():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        try:
            for _ in range(100):
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass
        writer.close()

    with pytest.raises(NetworkError, match="within 1 s"):
        run(handler, Limits(timeout=5, deadline=1))


def test_silent_server_times_out():
    async def handler(reader, writer):
        await asyncio.sleep(10)

    with pytest.raises(NetworkError):
        run(handler, Limits(timeout=0.5, deadline=5))


def test_refused_connection_is_typed():
    async def main():
        t = Transport()
        async with t.for_server("http://127.0.0.1:1/mcp"):
            await t.send(HttpRequest("GET", "http://127.0.0.1:1/x", "test endpoint"))

    with pytest.raises(NetworkError, match="cannot reach"):
        asyncio.run(main())


def test_outside_a_connection_only_public_https_is_sent():
    # No MCP server context: the strictest policy, so loopback is refused unsent.
    with pytest.raises(UnsafeEndpoint, match="plain http"):
        asyncio.run(Transport().send(HttpRequest("GET", "http://127.0.0.1:1/x", "test endpoint")))


def test_policy_checked_before_sending():
    for url in ("http://example.com/x", "file:///etc/passwd", "javascript:alert(1)"):
        with pytest.raises(UnsafeEndpoint):
            asyncio.run(Transport().send(HttpRequest("GET", url, "test endpoint")))


def test_no_redirect_following():
    async def handler(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://example.com/\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    assert run(handler, Limits()).status == 302
