"""`broker.client.wire.exchange` against a hand-made listener on a real Unix socket."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
import threading

from broker.client.wire import exchange


def _unread(conn: socket.socket) -> int:
    """Bytes this socket sent that its peer has not read yet (SIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0])


def test_an_interim_head_split_across_two_reads_is_not_the_answer(tmp_path):
    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    path = str(folder / "broker.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    body = b'{"ok": true}'

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 102 Processing\r\n")  # the head's first part, alone
            while _unread(conn):  # until the client has read it: its next read gets the rest
                threading.Event().wait(0.01)
            conn.sendall(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = threading.Thread(target=answer, daemon=True)
    server.start()
    interim: list[bytes] = []
    try:
        status, got = exchange(path, "GET", "/v1/health", timeout=10, on_interim=interim.append)
    finally:
        server.join(10)
        listener.close()
    assert (status, got) == (200, body)
    assert interim == [b"HTTP/1.1 102 Processing"]
