"""`mcp-token-broker proxy NAME` as a real child, spoken to line by line.

The failure tests play the MCP client themselves so they can send what a real
client would not (a line that is not JSON, a request before `initialize` is
answered) and see exactly what comes back on stdout and stderr.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

__all__ = ["INITIALIZE", "StdioProxy", "request"]

WAIT = 30.0  # seconds a read may wait for a line before the test fails


def request(id_: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}


INITIALIZE = request(
    1,
    "initialize",
    {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}},
)


class StdioProxy:
    """The proxy process; `send` writes a line, `answer` reads the next one."""

    def __init__(self, exe: str, name: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [exe, "proxy", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._pending = b""

    def send(self, *messages: dict[str, Any] | str) -> None:
        """Write each message as one line, back to back, without waiting."""
        assert self.proc.stdin is not None
        data = b"".join((m if isinstance(m, str) else json.dumps(m)).encode() + b"\n" for m in messages)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        """The next line on stdout, decoded; fails after WAIT seconds or at EOF."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + WAIT
        while b"\n" not in self._pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the proxy did not answer; stdout so far: {self._pending!r}"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                assert chunk, f"the proxy closed stdout (exit {self.proc.wait(5)}): {self.finish()[1]!r}"
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def answers(self, count: int) -> dict[Any, dict[str, Any]]:
        """The next `count` answers, by id (their order is the server's)."""
        found = {}
        for _ in range(count):
            message = self.answer()
            found[message.get("id")] = message
        return found

    def finish(self) -> tuple[int, str]:
        """Close stdin; (exit status, stderr) once the proxy has exited."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode(errors="replace")
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.finish()
