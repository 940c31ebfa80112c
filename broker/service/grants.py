"""Which client may have which connection's token.

A grant is (client identity key, connection) -> allow or deny, for this
session (memory) or always (the grants file in the config dir). Lookups are
dictionary hits: they sit on the token path.

Changes take effect in memory at once. The file is written at once too,
except on an event loop (the service): there the write goes to a worker
thread, in order, and `saved()` waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import SettingsCorrupt, UsageError
from ..storage.atomic import atomic_write
from ..storage.config import POLICIES

log = logging.getLogger(__name__)

__all__ = [
    "Grant",
    "Grants",
    "Decision",
    "ApprovalRequest",
    "DECISIONS",
    "Policy",
    "POLICIES",
    "MAX_CODE_TRIES",
    "UNTIL_STOP",
    "scope_words",
    "new_code",
]

Decision = Literal["allow_session", "allow_always", "deny_session", "deny_always"]
DECISIONS: tuple[str, ...] = ("allow_session", "allow_always", "deny_session", "deny_always")
Policy = Literal["ask", "allow", "deny"]
FORMAT = "mcp-token-broker-grants"


#: The one phrase for a decision that lasts until the broker stops (the API's
#: `*_session`): the dialog's button and tooltips, the Clients view, the CLI
#: and the docs all say it this way.
UNTIL_STOP = "until the broker stops"


def scope_words(scope: str) -> str:
    """A grant's `scope` ("session" or "always") for people."""
    return UNTIL_STOP if scope == "session" else "always"


#: Wrong one-time codes before a held request is refused.
MAX_CODE_TRIES = 3


def new_code() -> str:
    """A one-time approval code, as shown to the user: eight digits, "1234-5678"."""
    digits = f"{secrets.randbelow(10**8):08d}"
    return f"{digits[:4]}-{digits[4:]}"


def _normal_code(code: str) -> str:
    return "".join(ch for ch in code if not ch.isspace() and ch != "-")


def grant_id(client_key: str, connection: str) -> str:
    return hashlib.sha256(f"{client_key}\0{connection}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Grant:
    client_key: str
    client_name: str
    connection: str
    allow: bool
    scope: Literal["session", "always"]
    created_at: int

    @property
    def id(self) -> str:
        return grant_id(self.client_key, self.connection)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}


class Grants:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._grants: dict[tuple[str, str], Grant] = {}
        self._made = 0  # documents made so far
        self._written = 0  # the newest of them on disk
        self._write_lock = threading.Lock()
        self._last_write: asyncio.Future[None] | None = None
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(raw)
            if doc.get("format") != FORMAT:
                raise ValueError
            for item in doc["grants"]:
                g = Grant(
                    client_key=item["client_key"],
                    client_name=item["client_name"],
                    connection=item["connection"],
                    allow=bool(item["allow"]),
                    scope="always",
                    created_at=int(item["created_at"]),
                )
                self._grants[(g.client_key, g.connection)] = g
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SettingsCorrupt(f"the grants file {self.path} is damaged; fix or move it aside") from None

    def _save(self) -> None:
        always = [
            {k: v for k, v in g.to_json().items() if k not in ("id", "scope")}
            for g in self._grants.values()
            if g.scope == "always"
        ]
        doc = {
            "format": FORMAT,
            "schema": 1,
            "grants": sorted(always, key=lambda g: (g["connection"], g["client_name"])),
        }
        self._made += 1
        number, data = self._made, json.dumps(doc, indent=2).encode() + b"\n"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(number, data)
            return
        self._last_write = loop.run_in_executor(None, self._write, number, data)
        self._last_write.add_done_callback(self._write_done)

    def _write(self, number: int, data: bytes) -> None:
        with self._write_lock:
            if number > self._written:  # else a newer document is on disk already
                atomic_write(self.path, data)
                self._written = number

    def _write_done(self, write: asyncio.Future[None]) -> None:
        if not write.cancelled() and write.exception() is not None:
            log.warning(
                "could not save the grants file %s (%s); the change holds until the broker stops",
                self.path,
                write.exception(),
            )

    async def saved(self) -> None:
        """Wait until the file holds every change made so far (raise if its write failed)."""
        if self._last_write is not None:
            await asyncio.shield(self._last_write)

    def decide(self, client_key: str, connection: str) -> bool | None:
        grant = self._grants.get((client_key, connection))
        return None if grant is None else grant.allow

    def record(self, client_key: str, client_name: str, connection: str, decision: Decision) -> Grant:
        if decision not in DECISIONS:
            raise UsageError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
        grant = Grant(
            client_key=client_key,
            client_name=client_name,
            connection=connection,
            allow=decision.startswith("allow"),
            scope="always" if decision.endswith("always") else "session",
            created_at=int(self.clock()),
        )
        previous = self._grants.get((client_key, connection))
        self._grants[(client_key, connection)] = grant
        if grant.scope == "always" or (previous is not None and previous.scope == "always"):
            self._save()
        return grant

    def list(self) -> list[Grant]:
        return sorted(self._grants.values(), key=lambda g: (g.connection, g.client_name))

    def revoke(self, gid: str) -> Grant | None:
        for key, grant in list(self._grants.items()):
            if grant.id == gid:
                del self._grants[key]
                if grant.scope == "always":
                    self._save()
                return grant
        return None

    def forget_connection(self, connection: str) -> None:
        doomed = [key for key in self._grants if key[1] == connection]
        for key in doomed:
            del self._grants[key]
        if doomed:
            self._save()


class ApprovalRequest:
    """A held token request waiting for the user's answer (the `ask` policy).

    Answers come out of band, never from the requester's say-so: in process
    (the desktop app's dialog calls `answer`), or over the socket with the
    one-time `code` that only the user was shown (`check_code`, then
    `answer`). The code is never part of anything this object serialises.

    It waits until `deadline` (in `clock`'s seconds), which windows count
    down to. It ends once, as `outcome` "answered", "refused" or "expired",
    and then calls `on_close` (the service tells open windows).
    """

    def __init__(
        self,
        *,
        connection: str,
        client: Any,
        grants: Grants,
        code: str | None = None,
        on_answer: Callable[[ApprovalRequest, str, str, int | None], None] | None = None,
        on_close: Callable[[ApprovalRequest], None] | None = None,
        deadline: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.connection = connection
        self.client = client
        self._grants = grants
        self._code = _normal_code(code) if code else None
        self.tries_left = MAX_CODE_TRIES
        #: The requester's own pids (peer and application); answers from them are refused.
        self.requester_pids: frozenset[int] = frozenset(p for p in (client.pid, getattr(client, "app_pid", None)) if p)
        #: The requester's ancestors up to init (filled in by the service).
        self.requester_ancestors: frozenset[int] = frozenset()
        self._on_answer = on_answer
        self._on_close = on_close
        self.deadline = deadline
        self._clock = clock
        #: How it ended: "answered", "refused" or "expired"; None while it waits.
        self.outcome: str | None = None
        self._future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()

    def seconds_left(self) -> float:
        """Until the service stops waiting (0 once past): what windows count down."""
        return max(0.0, self.deadline - self._clock())

    def _close(self, outcome: str, result: bool | None) -> None:
        self._code = None  # single use
        self.outcome = outcome
        self._future.set_result(result)
        if self._on_close is not None:
            self._on_close(self)

    @property
    def needs_code(self) -> bool:
        """True when answers over the socket must carry the one-time code (headless)."""
        return self._code is not None

    def answer(self, decision: Decision, *, by: str = "desktop app", by_pid: int | None = None) -> None:
        """Record the decision as a grant and release the waiting request.
        Safe to call from another thread via `loop.call_soon_threadsafe`."""
        if self._future.done():
            return
        if decision not in DECISIONS:
            raise UsageError(f"unknown decision {decision!r}; use one of {', '.join(DECISIONS)}")
        self._code = None  # single use
        if self.client.key:  # an unidentified client gets this answer only, never a grant
            self._grants.record(self.client.key, self.client.name, self.connection, decision)
        if self._on_answer is not None:
            self._on_answer(self, decision, by, by_pid)
        self._close("answered", decision.startswith("allow"))

    def check_code(self, code: str) -> bool:
        """Constant-time comparison with the one-time code. Each wrong code uses
        up a try; the last one refuses the request (no grant is stored)."""
        expected = self._code
        if expected is None or self._future.done():
            return False
        if hmac.compare_digest(_normal_code(code).encode(), expected.encode()):
            return True
        self.tries_left -= 1
        if self.tries_left <= 0:
            self.refuse()
        return False

    def refuse(self) -> None:
        """Release the waiting request with a refusal, storing nothing."""
        self._code = None
        if not self._future.done():
            self._close("refused", False)

    def expire(self) -> None:
        """Nobody answered in time: release the waiting request with None, storing nothing."""
        self._code = None
        if not self._future.done():
            self._close("expired", None)

    @property
    def answered(self) -> bool:
        return self._future.done()

    async def wait(self) -> bool | None:
        """True/False once answered; None once nobody answered by the deadline
        (the request then expires, whoever of its waiters sees it first)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), self.seconds_left())
        except TimeoutError:
            self.expire()
            return None
