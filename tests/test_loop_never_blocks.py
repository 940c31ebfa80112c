"""Nothing blocks the service's event loop (issue 8, item 5).

Every store transaction waits for the vault's `flock` (up to 15 s), and every
config or grants write touches the disk: all of it runs on worker threads.
Here another process holds the vault lock while the service adds, connects,
disconnects and removes over its socket, answers a question with a lasting
grant and saves its settings, on a loop in asyncio's debug mode: asyncio
reports any callback that holds the loop for more than 50 ms, and none may.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest

from broker.service.events import ClientAsked
from broker.storage.paths import Paths

from .test_service import api, make_service

pytestmark = pytest.mark.timeout(120)

#: Holds the vault lock between "lock" and "unlock" lines on its stdin.
_HOLDER = """
import fcntl, os, sys
os.makedirs(os.path.dirname(sys.argv[1]), mode=0o700, exist_ok=True)
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
for line in sys.stdin:
    fcntl.flock(fd, fcntl.LOCK_EX if line.strip() == "lock" else fcntl.LOCK_UN)
    print(line.strip() + "ed", flush=True)
"""


class SlowCallbacks(logging.Handler):
    """asyncio's debug-mode reports: "Executing <callback> took 0.123 seconds"."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.reports.append(message)


def _opened_by_us(path: Path) -> bool:
    """Whether this process has `path` open: a store transaction has started to take its lock."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


class LockHolder:
    """Another process that holds the vault lock while an operation runs."""

    def __init__(self, proc: asyncio.subprocess.Process, path: Path, slow: SlowCallbacks) -> None:
        self.proc, self.path, self.slow = proc, path, slow

    async def _say(self, line: str) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        assert (await self.proc.stdout.readline()).decode().strip() == line + "ed"

    async def during(self, operation):
        """Run `operation` while the lock is held; let go once it waits for the lock."""
        await self._say("lock")
        task = asyncio.ensure_future(operation)
        # No event to wait on (a worker thread opening a file); the loop stays free meanwhile.
        while not task.done() and not _opened_by_us(self.path):  # noqa: ASYNC110 - polled: no event to await
            await asyncio.sleep(0.01)
        waited = not task.done()
        await self._say("unlock")
        result = await task
        assert self.slow.reports == []
        assert waited, "the operation never tried to take the vault lock"
        return result


def test_store_and_file_writes_never_block_the_loop(stack, user_dirs, tmp_path):
    _, mcp = stack
    slow = SlowCallbacks()
    logging.getLogger("asyncio").addHandler(slow)

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 0.05
        paths = Paths.default()
        service = make_service(tmp_path, policy="ask", ui=True)

        def answer(event):  # as the desktop app's dialog does, through call_soon_threadsafe
            if isinstance(event, ClientAsked):
                loop.call_soon_threadsafe(event.request.answer, "allow_always")

        service.events.subscribe(answer)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _HOLDER, str(paths.lock_file), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        holder = LockHolder(proc, paths.lock_file, slow)
        await service.start()
        try:
            async with api(service) as client:
                added = await holder.during(client.post("/v1/connections", json={"name": "a", "server_url": mcp.url}))
                assert added.status_code == 201, added.text

                async def connect():
                    flow = (await client.post("/v1/connections/a/connect", json={"mode": "browser"})).json()
                    while not flow["done"]:
                        wait = {"wait": 5, "after": flow["next"]}
                        flow = (await client.get(f"/v1/flows/{flow['flow_id']}", params=wait)).json()
                    return flow

                flow = await holder.during(connect())
                assert flow["error"] is None, flow

                token = await client.get("/v1/connections/a/token")  # asked, answered "always": grants.json written
                assert token.status_code == 200, token.text
                assert [g["scope"] for g in (await client.get("/v1/grants")).json()["grants"]] == ["always"]

                config = await service.apply_settings("ask", 600)
                assert config.refresh_margin == 600

                detail = await client.get("/v1/connections/a", params={"detail": "full"})
                assert detail.status_code == 200 and detail.json()["status"] == "connected"

                disconnected = await holder.during(client.post("/v1/connections/a/disconnect"))
                assert disconnected.status_code == 200, disconnected.text
                assert disconnected.json()["connection"]["status"] == "not_connected"

                removed = await holder.during(client.delete("/v1/connections/a"))
                assert removed.status_code == 200, removed.text
                assert (await client.get("/v1/grants")).json()["grants"] == []  # forgotten with the connection
        finally:
            await service.stop()
            if proc.stdin:
                proc.stdin.close()
            await proc.wait()

    try:
        asyncio.run(main())
    finally:
        logging.getLogger("asyncio").removeHandler(slow)
    assert slow.reports == []
