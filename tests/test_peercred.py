"""Peer credentials from real AF_UNIX sockets, including a forked child that drops to nobody.

Runs as root on Linux (the CI does), so the privilege-dropping child can really change uid.
"""

from __future__ import annotations

import os
import pwd
import select
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.client.peeruid import peer_uid
from broker.service.peercred import PeerCredentials, peer_credentials

ME = PeerCredentials(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())


@pytest.fixture
def listener(tmp_path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    yield server, path
    server.close()


@pytest.fixture
def public_listener() -> Iterator[tuple[socket.socket, Path]]:
    """A listening socket that an unprivileged user can reach (pytest's tmp_path is root-only)."""
    with tempfile.TemporaryDirectory(prefix="peercred-") as d:
        os.chmod(d, 0o711)
        path = Path(d, "s.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        os.chmod(path, 0o666)
        server.listen()
        yield server, path
        server.close()


def fork(body: Callable[[], None]) -> tuple[int, int]:
    """Run `body` in a child; returns (pid, read end of a pipe carrying the child's error, if any)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            body()
            code = 0
        except BaseException as exc:  # noqa: BLE001 - a forked child reports anything, then _exits
            try:
                os.write(w, repr(exc).encode()[:2000])
            except BaseException:  # noqa: BLE001 - the pipe may be gone; the exit code still tells
                pass
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def accept_from(server: socket.socket, pid: int, errors: int) -> socket.socket:
    """Accept the child's connection, or fail with its error if it died first (no timeouts)."""
    ready, _, _ = select.select([server, errors], [], [])
    if server not in ready:
        message = os.read(errors, 2000).decode(errors="replace")
        os.waitpid(pid, 0)
        pytest.fail(f"child did not connect: {message or 'exited'}")
    conn, _ = server.accept()
    return conn


def reap(pid: int, errors: int) -> None:
    _, status = os.waitpid(pid, 0)
    message = os.read(errors, 2000).decode(errors="replace")
    os.close(errors)
    assert os.waitstatus_to_exitcode(status) == 0, message


def connect_and_wait(path: Path) -> None:
    """Connect, then wait for the parent to hang up, so the child is alive while it is inspected."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.recv(1)


def test_socketpair_reports_this_process():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == ME
        assert peer_credentials(b) == ME


def test_listening_socket_both_ends(listener):
    server, path = listener
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        conn, _ = server.accept()
        with conn:
            assert peer_credentials(conn) == ME
            assert peer_credentials(client) == ME


def test_forked_child_reports_its_own_pid(listener):
    server, path = listener
    pid, errors = fork(lambda: connect_and_wait(path))
    conn = accept_from(server, pid, errors)
    with conn:
        creds = peer_credentials(conn)
    reap(pid, errors)
    assert creds == PeerCredentials(pid=pid, uid=os.geteuid(), gid=os.getegid())
    assert creds.pid != os.getpid()


@pytest.mark.parametrize("group", ["nogroup", "distinct"])
def test_child_that_dropped_to_nobody(public_listener, group):
    """`distinct` uses a gid unlike the uid, so swapped fields cannot pass."""
    assert os.geteuid() == 0, "the CI runs these tests as root"
    server, path = public_listener
    nobody = pwd.getpwnam("nobody")
    uid = nobody.pw_uid
    gid = nobody.pw_gid if group == "nogroup" else 4242
    assert uid != 0 and gid != 0

    def body() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)  # drop first ...
        assert (os.geteuid(), os.getegid()) == (uid, gid)
        connect_and_wait(path)  # ... then connect

    pid, errors = fork(body)
    conn = accept_from(server, pid, errors)
    with conn:
        creds = peer_credentials(conn)
    reap(pid, errors)
    assert creds == PeerCredentials(pid=pid, uid=uid, gid=gid)


def test_credentials_are_the_connectors_not_the_holders(listener):
    """A socket created by the parent and used by a child still names the parent."""
    server, path = listener
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    conn, _ = server.accept()
    pid, errors = fork(lambda: client.sendall(b"x"))
    client.close()
    reap(pid, errors)
    with conn:
        assert conn.recv(1) == b"x"
        assert peer_credentials(conn).pid == os.getpid()


def test_unconnected_socket_raises():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, pytest.raises(OSError):
        peer_credentials(sock)


def test_not_a_unix_socket_raises():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(OSError):
        peer_credentials(sock)


# -- peer_uid: the clients' light check of who listens -------------------------


def test_peer_uid_agrees_with_peer_credentials(listener):
    server, path = listener
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        conn, _ = server.accept()
        with conn:
            assert peer_uid(client) == peer_credentials(client).uid == os.geteuid()
            assert peer_uid(conn) == os.geteuid()


def test_peer_uid_names_a_listener_of_another_user(public_listener):
    """The client's side: a socket that nobody listens on, as after a socket swap."""
    assert os.geteuid() == 0, "the CI runs these tests as root"
    _, path = public_listener
    nobody = pwd.getpwnam("nobody").pw_uid
    theirs_dir = path.with_name("theirs")
    theirs_dir.mkdir()
    os.chown(theirs_dir, nobody, nobody)
    theirs_path = theirs_dir / "s.sock"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child listens as nobody until the parent hangs up
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as theirs:
                theirs.bind(str(theirs_path))
                theirs.listen()
                os.write(w, b"ready")
                conn, _ = theirs.accept()
                conn.recv(1)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 5) == b"ready"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(theirs_path))
            assert peer_uid(client) == nobody
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def test_peer_uid_of_an_unconnected_socket_raises():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock, pytest.raises(OSError):
        peer_uid(sock)
