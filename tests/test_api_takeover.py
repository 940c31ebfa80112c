"""The socket API's connection takeover (`101 Switching Protocols`), on a
real Unix socket: when the broker cannot take the connection over (out of
descriptors), the client gets an error answer, not a 101 and a close."""

from __future__ import annotations

import asyncio
import errno
import os

import pytest

from broker.service import api
from broker.service.api import ApiRequest, ApiServer, Takeover

pytestmark = pytest.mark.timeout(30)

UPGRADE_REQUEST = (
    b"POST /v1/connections/demo/proxy HTTP/1.1\r\nHost: broker\r\n"
    b"Upgrade: test-upgrade\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
)


def test_out_of_descriptors_is_an_error_answer_and_gives_the_place_back(tmp_path, monkeypatch):
    ran: list[object] = []
    abandoned: list[bool] = []

    async def run(sock: object) -> None:
        ran.append(sock)

    async def handler(request: ApiRequest) -> tuple[int, object]:
        return 101, Takeover("test-upgrade", run, abandon=lambda: abandoned.append(True))

    def no_descriptors(fd: int) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    async def scenario() -> bytes:
        server = ApiServer(handler, tmp_path / "s.sock")
        await server.start()
        try:
            monkeypatch.setattr(api.os, "dup", no_descriptors)
            reader, writer = await asyncio.open_unix_connection(str(tmp_path / "s.sock"))
            writer.write(UPGRADE_REQUEST)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # the server answers and closes
            writer.close()
            return answer
        finally:
            monkeypatch.undo()
            await server.close()

    answer = asyncio.run(scenario())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer  # before: a 101, then the socket closed
    assert b'"too_many_sessions"' in body and b"too many open files" in body
    assert ran == [] and abandoned == [True]
