"""The hosted proxy session's own parts (`broker.service.proxy_session`), on
real pipes and a real socket pair: the client's lines, its stderr, and how a
session that ends badly is logged."""

from __future__ import annotations

import array
import asyncio
import logging
import os
import resource
import socket
import threading
import time

import anyio
import pytest

from broker.service import eventloop, proxy_session
from broker.service.identity import ClientIdentity
from broker.service.proxy_session import ProxySessions, _Lines, _stderr_writer

pytestmark = pytest.mark.timeout(60)


def _feed(data: bytes) -> int:
    """The read end of a pipe a thread writes `data` into, then closes."""
    read, write = os.pipe()
    os.set_blocking(read, False)

    def writer() -> None:
        with open(write, "wb", buffering=0) as pipe:
            pipe.write(data)

    threading.Thread(target=writer, daemon=True).start()
    return read


def _uvloop() -> dict[str, str]:
    pytest.importorskip("uvloop")  # else eventloop would quietly run asyncio's loop under this name
    return {eventloop.ENV: "uvloop"}


LOOPS = [pytest.param(lambda: {eventloop.ENV: "asyncio"}, id="asyncio"), pytest.param(_uvloop, id="uvloop")]


async def _all_lines(fd: int) -> list[str]:
    return [line async for line in _Lines(fd)]


@pytest.mark.parametrize("environ", LOOPS)
def test_lines_longer_than_one_read_arrive_whole_and_the_descriptor_stays_ours(environ):
    loop = environ()
    long = b"x" * (200 * 1024)  # several 64 KiB reads
    fd = _feed(long + b"\nshort\n" + long + b"y\ntail")
    try:
        lines = eventloop.run(_all_lines(fd), environ=loop)
        os.fstat(fd)  # still open: the session closes its descriptors, nothing else does
    finally:
        os.close(fd)
    assert lines == [long.decode() + "\n", "short\n", long.decode() + "y\n", "tail"]


@pytest.mark.parametrize("environ", LOOPS)
def test_a_client_that_writes_ahead_is_buffered_up_to_one_line(monkeypatch, environ):
    loop = environ()
    cap = 100 * 1024
    monkeypatch.setattr(proxy_session, "MAX_LINE", cap)
    line = b"x" * 1023 + b"\n"
    fd = _feed(line * 1024)  # 1 MiB of lines, written as fast as the pipe takes them

    async def read() -> tuple[int, int]:
        lines = _Lines(fd)
        await lines.__anext__()
        # The session's reader takes no more lines for a while: the pipe keeps filling
        # until the reader pauses (a bounded wait for the writer thread, not a timing assertion).
        deadline = time.monotonic() + 30
        while lines._reading and time.monotonic() < deadline:  # noqa: ASYNC110 - no event says "paused"
            await asyncio.sleep(0.001)
        held = len(lines._buf)
        rest = [chunk async for chunk in lines]
        return held, len(rest)

    try:
        held, rest = eventloop.run(read(), environ=loop)
    finally:
        os.close(fd)
    assert cap < held <= cap + 64 * 1024  # read until over one line's cap, then paused
    assert rest == 1023  # and every line still arrives once reading goes on


def test_a_line_over_the_cap_ends_the_reading(monkeypatch):
    monkeypatch.setattr(proxy_session, "MAX_LINE", 100 * 1024)
    fd = _feed(b"ok\n" + b"x" * (300 * 1024) + b"\n")
    seen: list[str] = []

    async def read() -> None:
        async for line in _Lines(fd):
            seen.append(line)

    try:
        with pytest.raises(OSError, match="too long"):
            anyio.run(read)
    finally:
        os.close(fd)
    assert seen == ["ok\n"]


def test_stderr_lines_reach_a_descriptor_above_1023():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    read, write = os.pipe()
    high = os.dup2(write, 1100)
    try:
        _stderr_writer(high)("mcp-token-broker: warning: something\n")
        os.set_blocking(read, False)
        try:
            got = os.read(read, 4096)
        except BlockingIOError:
            got = b""
        assert got == b"mcp-token-broker: warning: something\n"
    finally:
        for fd in (read, write, high):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_line_over_the_cap_ends_the_session_with_one_warning_and_no_traceback(monkeypatch, caplog):
    """The refusal comes out of the SDK's task groups as an ExceptionGroup: it
    is still a routine end, one warning, not a logged traceback."""
    monkeypatch.setattr(proxy_session, "MAX_LINE", 64 * 1024)

    async def no_token(*args: object) -> object:
        raise AssertionError("no request reaches the server")

    sessions = ProxySessions(no_token, no_token)  # type: ignore[arg-type]
    me = ClientIdentity(pid=os.getpid(), app_pid=os.getpid(), exe=None, script=None, name="test", in_process=True)
    ours, theirs = socket.socketpair()
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    fds = array.array("i", [stdin_read, stdout_write, stderr_write])
    theirs.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    for fd in fds:
        os.close(fd)  # the session holds its own copies now
    writer = threading.Thread(target=lambda: _write_and_close(stdin_write, b"x" * (256 * 1024) + b"\n"), daemon=True)
    writer.start()
    ours.setblocking(False)
    caplog.set_level(logging.INFO, logger="broker.service.proxy_session")
    try:
        anyio.run(sessions.run, "demo", "http://127.0.0.1:9/mcp", me, ours, sessions.reserve())
        assert theirs.recv(16) == b"1\n"  # the exit status the thin client is told
        assert sessions.count == 0  # its place given back
    finally:
        writer.join(10)
        for fd in (stdout_read, stderr_read):
            os.close(fd)
        ours.close()
        theirs.close()
    records = [r for r in caplog.records if r.name == "broker.service.proxy_session"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("WARNING", "proxy session for demo ended: a line from the client is too long")
    ], records
    assert all(r.exc_info is None for r in records)
    assert "Traceback" not in caplog.text


def _write_and_close(fd: int, data: bytes) -> None:
    with open(fd, "wb", buffering=0) as pipe:
        pipe.write(data)
