"""The append-only audit log: who got which token, who was refused.

One JSON object per line under the state dir: time, connection, outcome,
and the application (name, pid, exe, script; `peer_pid` when it asked
through the broker's own `token`/`headers` command). Answers to approval
requests (`answered`, `answer_refused`) also say who answered
(`answered_by`, `answered_by_pid`, or "desktop app") and the `decision`. Each line is one `write(2)` on
an `O_APPEND` descriptor: no fsync per line (auditing stays cheap on the
token path), yet a line written is in the kernel's page cache and survives a
crash of the process. Never a token.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..storage.paths import ensure_private_dir

__all__ = ["AuditLog", "read_audit", "Client"]

MAX_BYTES = 10 << 20
_CHECK_EVERY = 512


class Client(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def pid(self) -> int | None: ...

    def to_json(self) -> dict[str, Any]: ...


class AuditLog:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.clock = clock
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self._writes = 0
        # The client part of a line, serialised once per client (the token path).
        self._clients: dict[Any, str] = {}
        self._middles: dict[tuple[str | None, str], str] = {}

    def _open(self) -> int:
        if self._fd is None:
            ensure_private_dir(self.path.parent)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def _rotate_if_big(self) -> None:
        try:
            if os.fstat(self._open()).st_size < self.max_bytes:
                return
        except OSError:
            return
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))

    def record(
        self,
        *,
        connection: str | None,
        client: Client,
        outcome: str,
        detail: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """One line. `fields` adds keys (e.g. who answered an approval); never pass a secret."""
        try:
            who = self._clients.get(client)
        except TypeError:  # an unhashable stand-in for an identity
            who = None
        if who is None:
            info = client.to_json()  # paths made printable by the identity module
            app_pid = getattr(client, "app_pid", None) or client.pid
            about = {"client": client.name, "pid": app_pid, "exe": info.get("exe"), "script": info.get("script")}
            if client.pid != app_pid:
                about["peer_pid"] = client.pid  # the broker command the application ran
            who = json.dumps(about, separators=(",", ":"))[1:-1]
            if len(self._clients) > 1024:
                self._clients.clear()
            try:
                self._clients[client] = who
            except TypeError:  # an unhashable stand-in: just do not cache
                pass
        middle = self._middles.get((connection, outcome))
        if middle is None:
            if len(self._middles) > 4096:
                self._middles.clear()
            middle = self._middles[(connection, outcome)] = (
                f'"connection":{json.dumps(connection)},"outcome":{json.dumps(outcome)},'
            )
        extra = f',"detail":{json.dumps(detail)}' if detail else ""
        if fields:
            extra += "," + json.dumps(fields, separators=(",", ":"))[1:-1]
        line = f'{{"time":{self.clock():.3f},{middle}{who}{extra}}}\n'
        self._writes += 1
        if self._writes % _CHECK_EVERY == 0:
            self._rotate_if_big()
        os.write(self._open(), line.encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_audit(path: Path, *, connection: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries oldest first (the rotated file, then the current one). A torn
    last line from a crash is skipped, not fatal."""
    entries: list[dict[str, Any]] = []
    for file in (path.with_name(path.name + ".1"), path):
        try:
            with open(file, "rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and (connection is None or entry.get("connection") == connection):
                        entries.append(entry)
        except FileNotFoundError:
            continue
    return entries[-limit:] if limit else entries
