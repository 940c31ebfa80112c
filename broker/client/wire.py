"""One HTTP/1.1 exchange over the broker's Unix socket, with only `_socket`.

Shared by `broker.client.api_client` and the `token` fast path. One request per
connection (`Connection: close`), the answer read to EOF with a size cap and
a timeout. Interim `1xx` answers before it (the service's `102 Processing`
while a person is asked) are handed to `on_interim` as they arrive. The
answer is parsed only as far as the status line and the Content-Length:
the server is our own, and its bodies are small.

"Our own" is checked, not assumed: the socket's directories must be ours
alone (`broker.client.socketdir`), and after connecting, before a byte is sent, the
kernel must say the listener runs as our UID (`broker.client.peeruid`). Otherwise
`UntrustedListener` (or `UnsafeSocketDir`), and nothing was sent.
"""

from __future__ import annotations

import _socket
import os

from .peeruid import peer_uid
from .socketdir import check_socket_dir

TYPE_CHECKING = False  # not `typing`: this is the hot path
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Unavailable", "BadAnswer", "exchange", "MAX_ANSWER", "NO_SERVICE"]

MAX_ANSWER = 1 << 20
#: What every command that needs the service says when none runs.
NO_SERVICE = "no broker service is running; start one with `mcp-token-broker serve` (or the desktop app)"


class Unavailable(Exception):
    """Nothing listens on the socket."""


class BadAnswer(Exception):
    """The answer was too large, truncated, or not HTTP."""


def exchange(
    socket_path: str,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str = "application/json",
    timeout: float = 30.0,
    base: str | None = None,
    on_interim: Callable[[bytes], None] | None = None,
) -> tuple[int, bytes]:
    """Send one request; return (status, body). `base` is the runtime base the
    socket's directories are checked from (default: the socket's directory).
    `on_interim(head)` gets the head of each interim 1xx answer as it arrives.
    Raises Unavailable, BadAnswer, TimeoutError, OSError, or the storage errors
    UnsafeSocketDir, SocketPathTooLong and UntrustedListener."""
    head = f"{method} {path} HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    data = head.encode("ascii") + b"\r\n" + (body or b"")
    try:
        check_socket_dir(socket_path, base)
    except FileNotFoundError as exc:
        raise Unavailable(f"no broker service at {socket_path}") from exc
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unavailable(f"no broker service at {socket_path}") from exc
        _check_listener(sock, socket_path)
        sock.sendall(data)
        chunks = []
        size = 0
        start = b""  # the answer's first bytes, until its status is known to be final
        final = False
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER:
                raise BadAnswer("the broker's answer is too large")
            if final:
                chunks.append(chunk)
                continue
            start += chunk
            # "HTTP/1.1 1xx ...\r\n\r\n" heads come first, each whole, then the final answer.
            while len(start) >= 12 and start[9:10] == b"1":
                end = start.find(b"\r\n\r\n")
                if end < 0:
                    break
                if on_interim is not None:
                    on_interim(start[:end])
                start = start[end + 4 :]
            # Final only once its status is known not to be 1xx: an interim head
            # split across reads is still waiting for its "\r\n\r\n".
            if len(start) >= 12 and start[9:10] != b"1":
                final = True
                chunks.append(start)
        if not final:
            chunks.append(start)
    finally:
        sock.close()
    raw = b"".join(chunks)
    head_bytes, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BadAnswer("the broker closed the connection without an answer")
    lines = head_bytes.split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise BadAnswer("the broker's answer is not HTTP") from None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            rest = rest[: int(value.strip())]
    return status, rest


def _check_listener(sock: _socket.socket, socket_path: str) -> None:
    """Before the first byte: the listener must run as us."""
    me = os.geteuid()
    try:
        uid: int | None = peer_uid(sock)
    except OSError:
        uid = None
    if uid != me:
        from ..errors import UntrustedListener

        who = f"uid {uid}" if uid is not None else "an unknown user"
        raise UntrustedListener(
            f"refusing to talk to {socket_path}: the process listening there runs as {who}, not as you (uid {me}); "
            "nothing was sent"
        )
