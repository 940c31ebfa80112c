"""`mcp-token-broker proxy NAME` hosted by the broker (issue 11 §2).

The proxy process passes its stdin, stdout and stderr to a real `serve` over
the socket (SCM_RIGHTS) and the service runs the session. Each test plays the
MCP client on real pipes against the real oidc-provider and MCP server, and
reads the broker's side from its `/v1/health` and its `/proc/PID/fd`.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from broker.client.api_client import BrokerClient
from broker.codes import exit_for

from .conftest import start_service
from .helpers.stdio_proxy import INITIALIZE, StdioProxy, request
from .servers.fixtures import running_stack

pytestmark = pytest.mark.timeout(120)

ACCESS_TTL = 5


@pytest.fixture(scope="module")
def short_stack():
    with running_stack(access_ttl=ACCESS_TTL) as (oidc, mcp):
        yield oidc, mcp


def _connected(cli, mcp, name: str) -> None:
    assert cli("add", name, mcp.url).returncode == 0
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr


def _sessions(service) -> int:
    return int(BrokerClient(str(service.socket_path)).health()["proxy_sessions"])


def _until(condition, what: str, limit: float = 30.0) -> None:
    """A bounded wait for something the broker does on its own (not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _pipe_inode(stream) -> int:
    return os.fstat(stream.fileno()).st_ino


def _broker_holds(service, inode: int) -> bool:
    """Whether the broker process has a descriptor on the pipe with this inode."""
    fd_dir = f"/proc/{service.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") == f"pipe:[{inode}]":
                return True
        except OSError:
            continue
    return False


def _echo(proxy: StdioProxy, id_: int, text: str) -> str:
    proxy.send(request(id_, "tools/call", {"name": "echo", "arguments": {"text": text}}))
    answer = proxy.answer()
    assert answer["id"] == id_ and "result" in answer, answer
    return " ".join(str(c.get("text")) for c in answer["result"]["content"])


def _initialized(proxy: StdioProxy) -> None:
    proxy.send(INITIALIZE)
    assert proxy.answer()["result"]["serverInfo"]["name"] == "mcp-token-broker-test-server"
    proxy.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


def test_the_broker_hosts_the_session_across_a_refresh_and_closes_its_descriptors(cli, short_stack, service):
    oidc, mcp = short_stack
    _connected(cli, mcp, "hosted")
    proxy = StdioProxy(cli.exe, "hosted", cli.env)
    stdin_pipe, stdout_pipe = _pipe_inode(proxy.proc.stdin), _pipe_inode(proxy.proc.stdout)
    try:
        _initialized(proxy)
        assert _sessions(service) == 1
        assert _broker_holds(service, stdin_pipe) and _broker_holds(service, stdout_pipe)
        assert "before" in _echo(proxy, 2, "before")
        before = int(oidc.stats()["grants"].get("refresh_token", 0))
        expires_at = BrokerClient(str(service.socket_path)).token("hosted")["expires_at"]
        _until(lambda: time.time() > expires_at + 0.5, "the token did not expire", 4 * ACCESS_TTL)
        assert "after the refresh" in _echo(proxy, 3, "after the refresh")
        assert int(oidc.stats()["grants"].get("refresh_token", 0)) > before
    finally:
        code, stderr = proxy.finish()  # stdin closed: the session ends
    assert code == 0 and stderr == "", stderr
    assert _sessions(service) == 0
    assert not _broker_holds(service, stdin_pipe) and not _broker_holds(service, stdout_pipe)


def test_a_killed_proxy_ends_its_session_and_the_client_sees_eof(cli, short_stack, service):
    _, mcp = short_stack
    _connected(cli, mcp, "killed")
    proxy = StdioProxy(cli.exe, "killed", cli.env)
    stdout_pipe = _pipe_inode(proxy.proc.stdout)
    _initialized(proxy)
    assert _sessions(service) == 1
    proxy.proc.send_signal(signal.SIGKILL)  # the MCP client killed it; stdin stays open
    proxy.proc.wait(timeout=20)
    _until(lambda: _sessions(service) == 0, "the broker kept the session of a dead proxy")
    assert not _broker_holds(service, stdout_pipe)
    assert proxy.proc.stdout is not None
    assert proxy.proc.stdout.read() == b""  # no writer is left: EOF, not a hang
    proxy.kill()


def test_a_refused_peer_gets_a_json_rpc_error_and_no_session(cli, short_stack):
    _, mcp = short_stack
    service = start_service(cli, "--policy", "ask", "--approval-timeout", "1")
    try:
        _connected(cli, mcp, "asked")
        proxy = StdioProxy(cli.exe, "asked", cli.env)
        proxy.send(INITIALIZE)
        answer = proxy.answer()
        assert answer["id"] == 1 and "result" not in answer, answer
        assert "no answer to the approval request" in answer["error"]["message"]
        assert _sessions(service) == 0
        code, stderr = proxy.finish()
        assert code == exit_for("approval_timeout")
        assert "no answer to the approval request" in stderr and "Traceback" not in stderr
    finally:
        assert service.stop() == 0


def test_denied_by_policy_gets_a_json_rpc_error(cli, short_stack):
    _, mcp = short_stack
    service = start_service(cli, "--policy", "deny")
    try:
        _connected(cli, mcp, "denied")
        proxy = StdioProxy(cli.exe, "denied", cli.env)
        proxy.send(INITIALIZE)
        answer = proxy.answer()
        assert "may not have denied's token" in answer["error"]["message"], answer
        code, _ = proxy.finish()
        assert code == exit_for("access_denied")
    finally:
        assert service.stop() == 0


def test_stdin_that_is_a_terminal_runs_the_proxy_in_process(cli, short_stack, service):
    """The broker hosts only pipes and sockets: on a terminal the proxy runs the session itself."""
    import json

    _, mcp = short_stack
    _connected(cli, mcp, "onatty")
    master, slave = os.openpty()
    proc = subprocess.Popen([cli.exe, "proxy", "onatty"], stdin=slave, stdout=subprocess.PIPE, env=cli.env)
    os.close(slave)
    try:
        os.write(master, json.dumps(INITIALIZE).encode() + b"\n")
        assert proc.stdout is not None
        answer = json.loads(proc.stdout.readline())
        assert answer["result"]["serverInfo"]["name"] == "mcp-token-broker-test-server"
        assert _sessions(service) == 0
    finally:
        proc.kill()
        proc.wait(timeout=20)
        os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()


def _client_ports(server_port: int) -> set[int]:
    """Local ports of every TCP socket to `server_port` the kernel lists, TIME-WAIT included."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    local, remote = line.split()[1:3]
                    if int(remote.rsplit(":", 1)[1], 16) == server_port:
                        ports.add(int(local.rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return ports


def test_calls_reuse_one_connection_to_the_server(cli, short_stack, service):
    """The server answers each call with an SSE stream; the proxy reads it to
    its end, so its connection goes back to the pool (it opened one per call)."""
    from urllib.parse import urlsplit

    _, mcp = short_stack
    _connected(cli, mcp, "reuse")
    port = urlsplit(mcp.url).port
    assert port is not None
    proxy = StdioProxy(cli.exe, "reuse", cli.env)
    try:
        _initialized(proxy)
        _echo(proxy, 2, "warm")
        before = _client_ports(port)
        for i in range(20):
            assert f"call {i}" in _echo(proxy, 10 + i, f"call {i}")
        opened = _client_ports(port) - before
    finally:
        code, stderr = proxy.finish()
    assert code == 0 and stderr == "", stderr
    assert len(opened) <= 1, f"{len(opened)} new connections for 20 calls"


def _broker_holds_path(service, path: str) -> bool:
    fd_dir = f"/proc/{service.proc.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{fd}") == path:
                return True
        except OSError:
            continue
    return False


def test_descriptors_that_are_not_pipes_are_refused_and_closed(cli, short_stack, service, tmp_path):
    """A peer speaking the protocol by hand passes a regular file three times:
    no session, exit status 1, and the broker keeps none of the descriptors."""
    import socket

    _, mcp = short_stack
    _connected(cli, mcp, "byhand")
    target = tmp_path / "not-a-pipe"
    target.write_bytes(b"")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    with sock, open(target, "rb") as f:
        sock.connect(str(service.socket_path))
        sock.sendall(
            b"POST /v1/connections/byhand/proxy HTTP/1.1\r\nHost: broker\r\nConnection: Upgrade\r\n"
            b"Upgrade: mcp-token-broker-proxy\r\nContent-Length: 0\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 "), head
        socket.send_fds(sock, [b"F"], [f.fileno()] * 3)
        status = b""
        while chunk := sock.recv(64):
            status += chunk
    assert status == b"1\n"
    assert not _broker_holds_path(service, str(target))
    assert _sessions(service) == 0


def test_a_broker_where_a_proxy_ran_before_loads_the_sdk_before_the_first_proxy_asks(cli, short_stack):
    # Without it, the first proxy after the broker starts (a client launched at login,
    # beside an autostarted broker) waits for the SDK import: a second instead of 50 ms.
    # Only where a hosted session has run before: the SDK costs the broker some 32 MiB.
    _, mcp = short_stack
    _connected(cli, mcp, "warm")  # directly: no service runs yet
    marker = Path(cli.env["XDG_STATE_HOME"]) / "mcp-token-broker" / "proxy-used"
    service = start_service(cli)
    try:
        assert not marker.exists()  # no session ran here yet: no SDK loaded at start
        proxy = StdioProxy(cli.exe, "warm", cli.env)
        _initialized(proxy)
        code, stderr = proxy.finish()
        assert code == 0 and stderr == "", stderr
        assert stat.S_IMODE(marker.stat().st_mode) == 0o600
    finally:
        service.stop()
    service = start_service(cli, log_name="serve-again.log")
    try:
        health = BrokerClient(str(service.socket_path)).health
        _until(lambda: health()["proxy_ready"] is True, "the broker never loaded the SDK on its own")
        assert _sessions(service) == 0  # loaded before any session asked
    finally:
        service.stop()


def _served_lines(cli, name: str) -> int:
    import json
    from pathlib import Path

    log = Path(cli.env["XDG_STATE_HOME"]) / "mcp-token-broker" / "audit.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return sum(1 for e in lines if e.get("connection") == name and e.get("outcome") == "served")


def test_a_session_audits_its_token_once_and_each_new_token_once(cli, short_stack, service):
    """Every request of a hosted session takes the token from the service
    (checked each time), but the audit log gets one `served` line per session
    and one per token the session newly uses, not one per request."""
    oidc, mcp = short_stack
    _connected(cli, mcp, "audited")
    before = int(oidc.stats()["grants"].get("refresh_token", 0))
    proxy = StdioProxy(cli.exe, "audited", cli.env)
    try:
        _initialized(proxy)
        for i in range(10):
            assert f"call {i}" in _echo(proxy, 10 + i, f"call {i}")
    finally:
        code, stderr = proxy.finish()
    assert code == 0 and stderr == "", stderr
    refreshes = int(oidc.stats()["grants"].get("refresh_token", 0)) - before
    served = _served_lines(cli, "audited")
    assert 1 <= served <= 1 + refreshes, f"{served} served lines for 12 requests and {refreshes} refreshes"
