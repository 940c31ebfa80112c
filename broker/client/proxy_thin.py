"""`mcp-token-broker proxy NAME` as a thin client of a broker-hosted session.

The proxy's start-up was the MCP SDK's import (about half a second) and its
memory the SDK's objects. The broker can run the session instead: this
process, standard library only, asks for `POST /v1/connections/NAME/proxy`
(an HTTP Upgrade), the broker authorizes it exactly as a token request, and
on `101` this process hands over its stdin, stdout and stderr with
SCM_RIGHTS. It then waits on the socket until the broker says the session
ended (one line: the exit status). If this process dies, the broker sees the
socket close and ends the session. If the broker stops first, this process
answers the client's further requests with "not running" (as the in-process
proxy does) until stdin closes. No token ever reaches this process.

`run` returns None when the hosted session is not available (an older broker
answering `not_found`, no broker, no fd passing, stdin or stdout not a pipe
or socket): the caller then runs the in-process proxy (`broker.client.proxy`),
which also says properly why no broker answers. A refusal (no grant, no
answer under `ask`, not connected) is answered as the in-process proxy does:
a JSON-RPC error to every request (`proxy.serve_error`), with its exit status.

The socket's directories and the listener's UID are checked as for every
other request (`broker.client.wire`).
"""

from __future__ import annotations

import _socket
import os
import stat
import sys

from .fastpath import APPROVAL_WAIT
from .socketdir import check_socket_dir
from .socketpath import socket_location
from .wire import MAX_ANSWER, _check_listener

__all__ = ["UPGRADE", "run"]

#: The `Upgrade` token of a hosted proxy session.
UPGRADE = "mcp-token-broker-proxy"
#: `_hosted`'s answer when the broker went away mid-session (no exit status came).
GONE = -1
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~")


def _passable(fd: int) -> bool:
    """The broker polls these: a pipe or a socket (not a file, not /dev/null)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _read_head(sock: _socket.socket, pending: bytes) -> tuple[bytes, bytes]:
    """The next answer head (interim 1xx ones included) and what follows it."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError
        pending += chunk
        if len(pending) > MAX_ANSWER:
            raise EOFError
    head, _, rest = pending.partition(b"\r\n\r\n")
    return head, rest


def _refused(sock: _socket.socket, head: bytes, rest: bytes) -> tuple[int, str, str]:
    """(status, code, message) of a final non-101 answer."""
    import json

    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length" and value.strip().isdigit():
            length = min(int(value.strip()), MAX_ANSWER)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    try:
        doc = json.loads(rest[:length])
        return status, str(doc.get("error")), str(doc.get("message"))
    except (ValueError, AttributeError):
        return status, "bad_response", f"the broker answered HTTP {status}"


def _hosted(name: str) -> int | tuple[int, str, str] | None:
    """The session's exit status, a refusal (status, code, message), or None: not available."""
    if not hasattr(_socket, "SCM_RIGHTS") or not (_passable(0) and _passable(1)):
        return None
    socket_path, base = socket_location()
    try:
        check_socket_dir(socket_path, base)
    except FileNotFoundError:
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(APPROVAL_WAIT)
        try:
            sock.connect(socket_path)
        except OSError:
            return None
        _check_listener(sock, socket_path)
        sock.sendall(
            f"POST /v1/connections/{name}/proxy HTTP/1.1\r\nHost: broker\r\nConnection: Upgrade\r\n"
            f"Upgrade: {UPGRADE}\r\nContent-Length: 0\r\n\r\n".encode("ascii")
        )
        try:
            head, rest = _read_head(sock, b"")
            while head[9:10] == b"1" and head[9:12] != b"101":  # 102 Processing: a person is asked
                head, rest = _read_head(sock, rest)
        except (EOFError, OSError):
            return None
        if head[9:12] != b"101":
            try:
                refusal = _refused(sock, head, rest)
            except (ValueError, IndexError, OSError):
                return None
            return None if refusal[1] == "not_found" else refusal
        fds = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in (0, 1, 2))
        sock.sendmsg([b"F"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        sock.settimeout(None)
        answer = rest
        while True:
            try:
                chunk = sock.recv(64)
            except OSError:
                break
            if not chunk or len(answer) > 64:
                break
            answer += chunk
        text = answer.strip()
        return int(text) if text.isdigit() else GONE
    finally:
        sock.close()


def run(name: str) -> int | None:
    """`mcp-token-broker proxy NAME` hosted by the broker: the exit status, or None
    when the caller should run the in-process proxy instead."""
    if not name or not set(name) <= _SAFE:
        return None
    # It holds no token, but it falls back to the in-process proxy, which does,
    # and it carries the client's stdio: no core dumps, no ptrace, from the start.
    from ..service.hardening import harden_process

    harden_process()
    try:
        outcome = _hosted(name)
    except Exception:  # noqa: BLE001 - an unsafe socket directory or listener: the in-process proxy says so
        return None
    if outcome is GONE:
        # The broker stopped under the session: say so to every request, as the
        # in-process proxy does, until the client closes stdin. (What the
        # broker had read and not answered is lost with it.)
        for fd in (0, 1):
            os.set_blocking(fd, True)  # the broker made them non-blocking
        import anyio

        from .proxy import serve_error
        from .proxy_errors import NOT_RUNNING

        anyio.run(serve_error, NOT_RUNNING)
        return 0
    if outcome is None or isinstance(outcome, int):
        return outcome
    status, code, message = outcome
    import anyio

    from ..errors import ServiceError
    from .proxy import serve_error
    from .proxy_errors import describe

    failure = ServiceError(status, code, message)
    anyio.run(serve_error, describe(failure, name))
    return failure.exit_code
