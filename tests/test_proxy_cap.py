"""The broker hosts at most `serve --max-proxy-sessions` proxy sessions at once.

A runaway client that starts `mcp-token-broker proxy NAME` in a loop must not
make the broker hold any number of sessions (three descriptors, a socket and an
HTTP client each). Past the limit the proxy is refused before the `101`: the
client gets a JSON-RPC error that names the limit, the proxy one stderr line
and a non-zero exit, and the proxy does not run the session itself. A session
holds its place from its `101`, before its descriptors arrive, and gives it
back however it ends. Real `serve`, real proxy processes, the real
oidc-provider and MCP server.
"""

from __future__ import annotations

import re
import socket
import sys

import pytest

from broker.client.api_client import BrokerClient
from broker.codes import exit_for
from broker.service.proxy_session import MAX_SESSIONS

from .conftest import start_service
from .helpers.stdio_proxy import INITIALIZE, StdioProxy
from .test_proxy_hosted import _connected as connected
from .test_proxy_hosted import _sessions, _until

pytestmark = pytest.mark.timeout(120)

UPGRADE_REQUEST = (
    b"POST /v1/connections/capped/proxy HTTP/1.1\r\nHost: broker\r\nConnection: Upgrade\r\n"
    b"Upgrade: mcp-token-broker-proxy\r\nContent-Length: 0\r\n\r\n"
)


def _connected(cli, stack, name: str) -> None:
    connected(cli, stack[1], name)


def _hosted(cli) -> StdioProxy:
    proxy = StdioProxy(cli.exe, "capped", cli.env)
    proxy.send(INITIALIZE)
    answer = proxy.answer()
    assert answer["result"]["serverInfo"]["name"] == "mcp-token-broker-test-server", answer
    return proxy


def _refused(cli, limit: int) -> None:
    """A proxy past the limit: a JSON-RPC error naming it, one stderr line, its exit status."""
    proxy = StdioProxy(cli.exe, "capped", cli.env)
    try:
        proxy.send(INITIALIZE)
        answer = proxy.answer()
    finally:
        code, stderr = proxy.finish()
    assert answer["id"] == 1 and "result" not in answer, answer  # not hosted, and not run in-process
    message = answer["error"]["message"]
    assert f"already runs {limit} proxy session" in message, message
    # The thin proxy never asks again: its client must start it anew.
    assert message.endswith("close some MCP clients, then restart this one"), message
    assert stderr.strip().splitlines() == [f"mcp-token-broker: {message}"], stderr
    assert code == exit_for("too_many_sessions") != 0


def _upgraded(service) -> socket.socket:
    """A peer speaking the protocol by hand, at its `101`, its descriptors not sent."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(service.socket_path))
    sock.sendall(UPGRADE_REQUEST)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def _answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP answer's head and body (Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, body
        body += chunk
    return head, body


def test_past_the_limit_a_proxy_is_refused_and_a_freed_place_is_hosted_again(cli, stack):
    service = start_service(cli, "--max-proxy-sessions", "2")
    proxies: list[StdioProxy] = []
    try:
        _connected(cli, stack, "capped")
        proxies += [_hosted(cli), _hosted(cli)]
        assert _sessions(service) == 2
        _refused(cli, 2)
        assert _sessions(service) == 2
        code, stderr = proxies.pop(0).finish()  # one client closes: its place is free
        assert code == 0 and stderr == "", stderr
        _until(lambda: _sessions(service) == 1, "the ended session kept its place")
        proxies.append(_hosted(cli))
        assert _sessions(service) == 2
    finally:
        for proxy in proxies:
            proxy.kill()
        assert service.stop() == 0


def test_a_session_holds_its_place_from_its_101_until_its_descriptors_come_or_not(cli, stack):
    """Counting from the descriptors' arrival would let every proxy that got its
    101 meanwhile through: the limit counts the session from its 101."""
    service = start_service(cli, "--max-proxy-sessions", "1")
    try:
        _connected(cli, stack, "capped")
        with _upgraded(service):
            assert _sessions(service) == 1
            _refused(cli, 1)
        # It closed without sending its descriptors: its place is given back.
        _until(lambda: _sessions(service) == 0, "a session that never started kept its place")
        proxy = _hosted(cli)
        proxy.kill()
    finally:
        assert service.stop() == 0


def test_an_upgrade_the_broker_cannot_take_over_gives_its_place_back(cli, stack):
    """An authorized request without `Upgrade:` gets a 400, not a 101: its
    session never runs, and its place is not kept."""
    service = start_service(cli, "--max-proxy-sessions", "1")
    try:
        _connected(cli, stack, "capped")
        for _ in range(2):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(30)
                sock.connect(str(service.socket_path))
                sock.sendall(b"POST /v1/connections/capped/proxy HTTP/1.1\r\nHost: broker\r\nContent-Length: 0\r\n\r\n")
                head, body = _answer(sock)
            assert head.startswith(b"HTTP/1.1 400 ") and b"send Upgrade" in body, (head, body)
        assert _sessions(service) == 0
        proxy = _hosted(cli)
        proxy.kill()
    finally:
        assert service.stop() == 0


def test_at_the_limit_a_proxy_is_refused_before_a_person_is_asked(cli, stack, tmp_path):
    """Under `--policy ask` a person approving a session the limit then refuses
    would be asked for nothing: the full broker refuses it before asking."""
    # The first session's client is its own application (a Python script), so the
    # test answers its question as someone else, and the second proxy's client
    # (this test) has no grant from that answer.
    app = tmp_path / "client_app.py"
    wrapper = f"import subprocess, sys\nsys.exit(subprocess.call([{cli.exe!r}, *sys.argv[1:]]))\n"
    app.write_text(f"#!{sys.executable}\n{wrapper}")
    app.chmod(0o755)
    service = start_service(cli, "--max-proxy-sessions", "1", "--policy", "ask", "--approval-timeout", "60")
    client = BrokerClient(str(service.socket_path))
    first = None
    try:
        _connected(cli, stack, "capped")
        first = StdioProxy(str(app), "capped", cli.env)
        first.send(INITIALIZE)
        _until(lambda: client.request("GET", "/v1/approvals")["approvals"], "the first proxy was not asked about")
        [approval] = client.request("GET", "/v1/approvals")["approvals"]
        code = re.search(rf"approval {approval['id']}.*code ([0-9]{{4}}-[0-9]{{4}})", service.log).group(1)
        assert cli("approve", approval["id"], "allow_session", "--code", code).returncode == 0
        assert first.answer()["result"]["serverInfo"]["name"] == "mcp-token-broker-test-server"
        assert _sessions(service) == 1
        _refused(cli, 1)  # at once: not after the 60 s nobody would answer in
        assert client.request("GET", "/v1/approvals")["approvals"] == []
        assert _sessions(service) == 1
        status, stderr = first.finish()
        first = None
        assert status == 0 and stderr == "", stderr
    finally:
        if first is not None:
            first.kill()
        assert service.stop() == 0


def test_the_serve_option_says_its_default_and_takes_only_a_positive_count(cli):
    help_text = " ".join(cli("serve", "--help").stdout.split())
    assert "--max-proxy-sessions N host at most N `proxy` sessions at once" in help_text, help_text
    assert f"({MAX_SESSIONS})" in help_text.split("--max-proxy-sessions", 1)[1]
    r = cli("serve", "--max-proxy-sessions", "0")
    assert r.returncode == exit_for("bad_request") and "at least 1" in r.stderr, r.stderr
