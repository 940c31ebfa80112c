"""`mcp-token-broker proxy NAME` fails as JSON-RPC, with one line on stderr.

A stdio MCP client shows a JSON-RPC error to its user; a proxy that dies, hangs
or prints a traceback leaves the user with "server disconnected". Each case
runs the real proxy against a real `serve`, the real oidc-provider and the
test MCP server, and plays the client itself, line by line.
"""

from __future__ import annotations

import httpx
import pytest

from .conftest import start_service
from .helpers.stdio_proxy import INITIALIZE, StdioProxy, request
from .servers.fixtures import start_mcp_server

pytestmark = pytest.mark.timeout(120)

NOT_RUNNING = "MCP Token Broker is not running: start it with `mcp-token-broker serve` or open the app"


def _proxy(cli, name: str) -> StdioProxy:
    return StdioProxy(cli.exe, name, cli.env)


def _connected(cli, stack, name: str, url: str | None = None) -> None:
    _, mcp = stack
    assert cli("add", name, url or mcp.url).returncode == 0
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr


def _error(answer: dict, id_: object) -> dict:
    assert answer["id"] == id_, answer
    assert "result" not in answer, answer
    error: dict = answer["error"]
    return error


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "ExceptionGroup" not in stderr
    return lines[0]


@pytest.fixture
def own_server(stack):
    """An MCP server of this test's own, trusted by the shared authorization server."""
    oidc, _ = stack
    server = start_mcp_server(oidc.issuer)
    oidc.add_resource(server.url)
    yield server
    server.stop()


def test_broker_not_running_answers_initialize_with_what_to_do(cli):
    proxy = _proxy(cli, "anything")
    proxy.send(INITIALIZE)
    error = _error(proxy.answer(), 1)
    assert error["message"] == NOT_RUNNING
    code, stderr = proxy.finish()
    assert NOT_RUNNING in _one_line(stderr)
    assert code == 6


def test_unknown_connection_answers_initialize(cli, service):
    proxy = _proxy(cli, "nosuch")
    proxy.send(INITIALIZE)
    error = _error(proxy.answer(), 1)
    assert "nosuch" in error["message"]
    _, stderr = proxy.finish()
    assert "nosuch" in _one_line(stderr)


def test_connection_that_needs_login(cli, stack, service):
    _, mcp = stack
    assert cli("add", "fresh", mcp.url).returncode == 0  # never connected
    proxy = _proxy(cli, "fresh")
    proxy.send(INITIALIZE)
    error = _error(proxy.answer(), 1)
    assert "mcp-token-broker connect fresh" in error["message"]
    proxy.send(request(2, "tools/list"))  # still there, still saying so
    assert "mcp-token-broker connect fresh" in _error(proxy.answer(), 2)["message"]
    code, stderr = proxy.finish()
    assert code == 0
    assert "mcp-token-broker connect fresh" in _one_line(stderr)


def test_server_unreachable(cli, stack, service, own_server):
    _connected(cli, stack, "gone", own_server.url)
    own_server.stop()
    proxy = _proxy(cli, "gone")
    proxy.send(INITIALIZE)
    error = _error(proxy.answer(), 1)
    assert f"cannot reach 127.0.0.1:{own_server.port}" in error["message"]
    proxy.send(request(2, "tools/list"))
    assert "cannot reach" in _error(proxy.answer(), 2)["message"]
    code, stderr = proxy.finish()
    assert code == 0
    assert "cannot reach" in _one_line(stderr)


def test_server_5xx(cli, stack, service, own_server):
    _connected(cli, stack, "flaky", own_server.url)
    httpx.post(f"http://127.0.0.1:{own_server.port}/__test/outage", json={"status": 503}).raise_for_status()
    proxy = _proxy(cli, "flaky")
    proxy.send(INITIALIZE)
    error = _error(proxy.answer(), 1)
    assert "HTTP 503" in error["message"] and f"127.0.0.1:{own_server.port}" in error["message"]
    httpx.post(f"http://127.0.0.1:{own_server.port}/__test/outage", json={"status": 0}).raise_for_status()
    proxy.send({**INITIALIZE, "id": 2})  # the outage is over: the same proxy gets through
    assert "result" in proxy.answer()
    code, stderr = proxy.finish()
    assert code == 0
    assert "HTTP 503" in _one_line(stderr)


def test_non_json_input_is_a_parse_error(cli, stack, service):
    _connected(cli, stack, "garbled")
    proxy = _proxy(cli, "garbled")
    proxy.send("this is not json")
    answer = proxy.answer()
    assert answer["jsonrpc"] == "2.0"
    assert _error(answer, None)["code"] == -32700
    proxy.send(INITIALIZE)  # and the proxy carries on
    assert proxy.answer()["result"]["serverInfo"]["name"] == "mcp-token-broker-test-server"
    code, stderr = proxy.finish()
    assert code == 0
    line = _one_line(stderr)
    assert "not JSON" in line and "http" not in line  # no pydantic text with its URL


def test_requests_before_initialize_is_answered_wait_for_the_session(cli, stack, service):
    _connected(cli, stack, "eager")
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    for round_ in range(5):  # the race was lost often, not always
        proxy = _proxy(cli, "eager")
        proxy.send(INITIALIZE, initialized, request(2, "tools/list"), request(3, "tools/call", {"name": "whoami"}))
        answers = proxy.answers(3)
        assert "result" in answers[1], answers
        assert "whoami" in {t["name"] for t in answers[2].get("result", {}).get("tools", [])}, (round_, answers)
        assert "alice" in str(answers[3].get("result")), (round_, answers)
        code, stderr = proxy.finish()
        assert code == 0 and stderr == "", stderr


def test_broker_stopped_under_a_running_proxy(cli, stack):
    service = start_service(cli)
    try:
        _connected(cli, stack, "orphan")
        proxy = _proxy(cli, "orphan")
        proxy.send(INITIALIZE)
        assert "result" in proxy.answer()
    finally:
        assert service.stop() == 0
    proxy.send(request(2, "tools/list"))
    assert _error(proxy.answer(), 2)["message"] == NOT_RUNNING
    code, stderr = proxy.finish()
    assert code == 0
    assert NOT_RUNNING in _one_line(stderr)


def test_a_listener_that_resets_the_connection_is_one_line_not_a_traceback(cli, tmp_path):
    """Something listens on the socket, as us, but closes each connection
    unread (ECONNRESET at the proxy): the client is answered, stderr has one line."""
    import select
    import socket
    import threading

    from broker.client.socketpath import SOCKET_ENV

    folder = tmp_path / "sock"
    folder.mkdir(mode=0o700)
    path = str(folder / "broker.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()

    def close_unread() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            select.select([conn], [], [])  # the request is there, unread: closing now resets
            conn.close()

    threading.Thread(target=close_unread, daemon=True).start()
    try:
        proxy = StdioProxy(cli.exe, "demo", {**cli.env, SOCKET_ENV: path})
        proxy.send(INITIALIZE)
        error = _error(proxy.answer(), 1)
        code, stderr = proxy.finish()
    finally:
        listener.close()
    assert "broker" in error["message"], error
    assert error["message"] in _one_line(stderr)
    assert code == 1
