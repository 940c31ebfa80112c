"""A fake broker service run by another user: what a local attacker would run.

Started by tests/test_attack_socket.py under `setpriv` as uid 65534. It binds a
Unix socket where the victim's clients might look, records every byte any
client sends (before answering, so the record is complete once a client has
its answer), and plays along with the socket API far enough to receive a
client secret (`add`), an authorization code (`connect --paste`) and to hand
out a forged token (`token`). Standard library only.

    fake_broker.py squat SOCKET RECORD    make SOCKET's directories, listen, print "ready"
    fake_broker.py swap RUNDIR RECORD     make RUNDIR (0777), print "ready"; on "swap" from
                                          stdin move RUNDIR/mcp-token-broker aside, listen
                                          in a new one, print "swapped"
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading

FORGED_TOKEN = "forged-token-4d2b"

_lock = threading.Lock()
_pasted = threading.Event()


def _record(path: str, data: bytes) -> None:
    with _lock, open(path, "ab") as f:
        f.write(data)
        f.flush()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _answer(request: bytes) -> tuple[int, str, bytes]:
    line = request.split(b"\r\n", 1)[0].decode("ascii", "replace")
    method, _, rest = line.partition(" ")
    target = rest.rpartition(" ")[0]
    path, _, query = target.partition("?")
    if path == "/v1/health":
        return (
            200,
            "application/json",
            json.dumps({"status": "ok", "version": "0", "pid": 1, "policy": "allow", "connections": 0}).encode(),
        )
    if path.endswith("/token") and "format=text" in query:
        return 200, "text/plain", FORGED_TOKEN.encode()
    if path.endswith("/token"):
        return (
            200,
            "application/json",
            json.dumps(
                {"access_token": FORGED_TOKEN, "token_type": "Bearer", "expires_at": None, "scope": ""}
            ).encode(),
        )
    if method == "POST" and path.endswith("/connect"):
        return 200, "application/json", b'{"flow_id": "f1"}'
    if method == "POST" and path == "/v1/flows/f1/paste":
        _pasted.set()
        return 200, "application/json", b"{}"
    if method == "GET" and path == "/v1/flows/f1":
        if "after=0" in query:
            event = {
                "stage": "waiting_for_browser",
                "message": "log in",
                "url": "https://login.example.invalid/authorize",
            }
            return (
                200,
                "application/json",
                json.dumps({"events": [event], "next": 1, "done": False, "error": None}).encode(),
            )
        _pasted.wait(60)
        error = {"error": "flow_error", "message": "the fake broker is done"}
        return 200, "application/json", json.dumps({"events": [], "next": 1, "done": True, "error": error}).encode()
    return 500, "application/json", b'{"error": "error", "message": "the fake broker says no"}'


def _serve_one(conn: socket.socket, record: str) -> None:
    with conn:
        try:
            request = _read_request(conn)
        except OSError:
            return
        if not request:
            return
        _record(record, request)
        status, content_type, body = _answer(request)
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            conn.sendall(head.encode() + body)
        except OSError:
            pass


def _listen(path: str) -> socket.socket:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o666)
    sock.listen(64)
    return sock


def main() -> None:
    mode, where, record = sys.argv[1:4]
    open(record, "ab").close()
    os.chmod(record, 0o644)
    if mode == "squat":
        sock = _listen(where)
        print("ready", flush=True)
    elif mode == "swap":
        os.mkdir(where, 0o777)
        os.chmod(where, 0o777)  # the old service makes its directory in here
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "swap":
            return
        victims = os.path.join(where, "mcp-token-broker")
        if os.path.lexists(victims):
            os.rename(victims, os.path.join(where, "moved-aside"))
        sock = _listen(os.path.join(victims, "broker.sock"))
        print("swapped", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_serve_one, args=(conn, record), daemon=True).start()


if __name__ == "__main__":
    main()
