"""`mcp-token-broker token NAME` and `headers NAME`, over the socket.

This runs for every request some MCP clients make, so it imports almost
nothing: `broker.client.wire` (the C `_socket` module; `socket` pulls in enum and
selectors) and no `json` on success (`json` pulls in `re`). The service answers
`?format=text` with the bare token. Errors are JSON and are decoded only
when they happen. Before sending, `broker.client.wire` checks the socket's
directories and the listener's UID (a few `lstat`s and one `getsockopt`).

`run` returns None for arguments it does not understand, so the full CLI can
report them properly. Exit statuses come from `broker.codes`, the table the
rest of the CLI uses too (loaded only on failure, like `json`).
"""

from __future__ import annotations

import sys

from .socketpath import socket_location
from .wire import NO_SERVICE, BadAnswer, Unavailable, exchange

TYPE_CHECKING = False  # not `typing`: this is the hot path
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run"]

PROG = "mcp-token-broker"
#: Long enough for a person to answer an approval under the `ask` policy (the thin proxy waits as long).
APPROVAL_WAIT = 120.0
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~")


def _parse(args: list[str]) -> tuple[str, str, int | None] | None:
    command, rest = args[0], args[1:]
    name = None
    min_ttl = None
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--min-ttl" and i + 1 < len(rest) and rest[i + 1].isdigit():
            min_ttl = int(rest[i + 1])
            i += 2
        elif arg.startswith("--min-ttl=") and arg[10:].isdigit():
            min_ttl = int(arg[10:])
            i += 1
        elif not arg.startswith("-") and name is None:
            name = arg
            i += 1
        else:
            return None
    if name is None or not name or not set(name) <= _SAFE:
        return None  # the full CLI explains bad names
    return command, name, min_ttl


def _waiting_notice(verbose: bool) -> Callable[[bytes], None]:
    """Under the `ask` policy the service answers `102 Processing` with
    `Broker-Waiting: approval; seconds=N` while it holds the request: say so on
    stderr for a person at a terminal (or with -v), never into a pipe."""

    def notice(head: bytes) -> None:
        lowered = head.lower()
        at = lowered.find(b"\r\nbroker-waiting: approval")
        if at < 0 or not (verbose or sys.stderr.isatty()):
            return
        line = lowered[at + 2 :].split(b"\r\n", 1)[0]
        seconds = line.partition(b"seconds=")[2].strip()
        within = f" (up to {seconds.decode()} s)" if seconds.isdigit() else ""
        sys.stderr.write(f"{PROG}: waiting for approval in MCP Token Broker…{within}\n")
        sys.stderr.flush()

    return notice


def run(args: list[str], *, verbose: bool = False) -> int | None:
    parsed = _parse(args)
    if parsed is None:
        return None
    command, name, min_ttl = parsed
    path = f"/v1/connections/{name}/token?format=text"
    if min_ttl is not None:
        path += f"&min_ttl={min_ttl}"
    socket_path, base = socket_location()
    try:
        # Long enough for a person to answer an approval under the `ask` policy.
        status, body = exchange(
            socket_path, "GET", path, timeout=APPROVAL_WAIT, base=base, on_interim=_waiting_notice(verbose)
        )
    except Unavailable:
        from ..codes import exit_for

        sys.stderr.write(f"{PROG}: {NO_SERVICE}\n")
        return exit_for("no_service")
    except (BadAnswer, OSError) as exc:
        from ..codes import exit_for

        sys.stderr.write(f"{PROG}: the broker did not answer properly ({exc})\n")
        return exit_for("bad_response")
    except Exception as exc:
        # Imported only now: importing it costs as much as this whole path.
        from ..errors import BrokerError

        if not isinstance(exc, BrokerError):  # an unsafe socket directory or listener
            raise
        sys.stderr.write(f"{PROG}: {exc}\n")
        return exc.exit_code
    if status != 200:
        import json

        from ..codes import exit_for

        try:
            doc = json.loads(body)
            code, message = str(doc.get("error")), str(doc.get("message"))
        except (ValueError, AttributeError):
            code, message = "error", f"the broker answered HTTP {status}"
        sys.stderr.write(f"{PROG}: {message}\n")
        return exit_for(code)
    token = body.decode("ascii", "replace").strip()
    if command == "headers":
        if set(token) <= _SAFE:  # JWTs and opaque tokens: nothing to escape
            sys.stdout.write(f'{{"Authorization": "Bearer {token}"}}\n')
        else:
            import json

            sys.stdout.write(json.dumps({"Authorization": f"Bearer {token}"}) + "\n")
    else:
        sys.stdout.write(token + "\n")
    return 0
