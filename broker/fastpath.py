"""`mcp-token-broker token NAME` and `headers NAME`, over the socket.

Returns None for arguments it does not understand, so the full CLI can
report them properly.
"""

from __future__ import annotations

import json
import sys

from .client import BrokerClient, ServiceError, ServiceUnavailable

__all__ = ["run"]

PROG = "mcp-token-broker"
_EXIT = {"unknown_connection": 2, "bad_request": 2, "access_denied": 7, "authorization_required": 8, "refresh_failed": 9}


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
    if name is None:
        return None
    return command, name, min_ttl


def run(args: list[str]) -> int | None:
    parsed = _parse(args)
    if parsed is None:
        return None
    command, name, min_ttl = parsed
    client = BrokerClient()
    try:
        answer = client.token(name, min_ttl=min_ttl)
    except ServiceUnavailable:
        sys.stderr.write(f"{PROG}: no broker service is running; start one with `{PROG} serve` (or the desktop app)\n")
        return 6
    except ServiceError as exc:
        sys.stderr.write(f"{PROG}: {exc.message}\n")
        return _EXIT.get(exc.code, 1)
    token = answer["access_token"]
    if command == "headers":
        sys.stdout.write(json.dumps({"Authorization": f"Bearer {token}"}) + "\n")
    else:
        sys.stdout.write(token + "\n")
    return 0
