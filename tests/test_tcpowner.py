"""The owner of a loopback TCP peer, on real sockets (Linux)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from broker.driver.tcpowner import _parse, by_proc_tables, by_sock_diag, peer_is_us, peer_uid

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peers are only visible on Linux"),
]

#: Connect as uid 65534, say one byte, and hold the connection until the other side closes it.
CONNECT_AS_NOBODY = """
import encodings.idna, os, socket, sys  # before the stdlib may be out of reach
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])))
sock.sendall(b"x")
sock.recv(1)
"""


def accepted(family: int, host: str):
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen()
    server.settimeout(20)
    return server


def test_parses_the_kernel_format():
    ip, port = _parse("0100007F:1F90" if sys.byteorder == "little" else "7F000001:1F90")
    assert (str(ip), port) == ("127.0.0.1", 8080)
    mapped = (
        "0000000000000000FFFF00000100007F:0050"
        if sys.byteorder == "little"
        else "00000000000000000000FFFF7F000001:0050"
    )
    assert str(_parse(mapped)[0]) == "127.0.0.1"


LOOKUPS = pytest.mark.parametrize("lookup", [by_sock_diag, by_proc_tables], ids=["sock_diag", "proc"])


@LOOKUPS
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_our_own_connection_is_ours(family, host, lookup):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = accepted(family, host)
    except OSError:
        pytest.skip(f"cannot bind {host}")
    with server, socket.socket(family) as client:
        client.connect(server.getsockname()[:2])
        conn, _ = server.accept()
        with conn:
            assert peer_uid(conn.getsockname(), conn.getpeername(), lookups=[lookup]) == os.geteuid()
            assert peer_is_us(conn.getsockname(), conn.getpeername())
            # Looked up from the client's side, the peer is the accepted socket: ours too.
            assert peer_uid(client.getsockname(), client.getpeername(), lookups=[lookup]) == os.geteuid()


@LOOKUPS
def test_an_unknown_peer_is_not_us(lookup):
    with accepted(socket.AF_INET, "127.0.0.1") as server:
        port = server.getsockname()[1]
        # Nothing is connected from port 1 to the listener.
        assert peer_uid(("127.0.0.1", port), ("127.0.0.1", 1), lookups=[lookup]) is None
        assert not peer_is_us(("127.0.0.1", port), ("127.0.0.1", 1))


def test_when_no_way_of_looking_works_the_peer_is_not_us(tmp_path):
    def no_netlink(theirs, ours):
        raise PermissionError("netlink is not allowed here")

    def no_tables(theirs, ours):
        return by_proc_tables(theirs, ours, proc_net=tmp_path)  # an empty directory

    with accepted(socket.AF_INET, "127.0.0.1") as server, socket.create_connection(server.getsockname()):
        conn, _ = server.accept()
        with conn:
            where = (conn.getsockname(), conn.getpeername())
            assert peer_uid(*where, lookups=[no_netlink, by_proc_tables]) == os.geteuid()
            assert peer_uid(*where, lookups=[no_netlink, no_tables]) is None


@LOOKUPS
@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_a_connection_from_another_user_is_theirs(lookup):
    with accepted(socket.AF_INET, "127.0.0.1") as server:
        host, port = server.getsockname()
        child = subprocess.Popen([sys.executable, "-I", "-c", CONNECT_AS_NOBODY, host, str(port)])
        try:
            conn, _ = server.accept()
            with conn:
                assert conn.recv(1) == b"x"
                assert peer_uid(conn.getsockname(), conn.getpeername(), lookups=[lookup]) == 65534
                assert not peer_is_us(conn.getsockname(), conn.getpeername())
        finally:
            assert child.wait(timeout=20) == 0
