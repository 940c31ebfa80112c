"""`mcp-token-broker test NAME`: MCP initialize and tools/list with the current token.

Against the real parts: `serve` as a child, oidc-provider, the OAuth-protected
test MCP server (and a second one of the test's own to stop or break), plain
loopback HTTP servers for answers that are not MCP. What the server really
lists is read with the official SDK client and the broker's token, so the
tool count is compared, not assumed.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest

from broker.client.api_client import BrokerClient
from broker.client.probe import probe
from broker.errors import ProbeFailed

from .servers.fixtures import start_mcp_server

pytestmark = pytest.mark.timeout(120)

SERVER_NAME = "mcp-token-broker-test-server"


def _connected(cli, url: str, name: str, *scopes: str) -> None:
    args = ["add", name, url]
    for scope in scopes:
        args += ["--scope", scope]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Error" not in stderr.split(":")[0]
    return lines[0]


def _listed_tools(url: str, token: str) -> list[str]:
    """What the server lists, asked with the official SDK client directly."""
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    async def run() -> list[str]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None) as client:
                return [tool.name for tool in (await client.list_tools()).tools]

    return anyio.run(run)


@pytest.fixture
def own_server(stack):
    """An MCP server of this test's own, trusted by the shared authorization server."""
    oidc, _ = stack
    server = start_mcp_server(oidc.issuer)
    oidc.add_resource(server.url)
    yield server
    server.stop()


class _Plain:
    """A loopback HTTP server that answers every POST with `status`, `content_type` and `body`."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        answer = (status, content_type, body)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                code, kind, data = answer
                self.send_response(code)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_DELETE(self) -> None:  # noqa: N802
                self.send_response(405)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mcp"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_success_shows_server_tools_protocol_and_round_trip(cli, stack, service):
    _, mcp = stack
    _connected(cli, mcp.url, "demo")
    listed = _listed_tools(mcp.url, cli("token", "demo").stdout.strip())
    assert "whoami" in listed

    served = cli("audit", "--raw", "--connection", "demo").stdout.count(" served ")
    r = cli("test", "demo")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    assert SERVER_NAME in out
    assert re.search(rf"^\s*tools\s+{len(listed)}$", out, re.M), out
    assert re.search(r"^\s*protocol\s+\d{4}-\d\d-\d\d$", out, re.M), out
    assert re.search(r"^\s*round trip\s+\d+ ms", out, re.M), out

    r = cli("test", "demo", "--json")
    assert r.returncode == 0, r.stderr
    doc = r.json()
    assert doc["ok"] is True and doc["connection"] == "demo" and doc["server_url"] == mcp.url
    assert doc["server"]["name"] == SERVER_NAME and isinstance(doc["server"]["version"], str)
    assert doc["tools"] == len(listed)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", doc["protocol_version"])
    assert isinstance(doc["round_trip_ms"], float) and isinstance(doc["initialize_ms"], float)

    # The token it used is audited like any other hand-out.
    assert cli("audit", "--raw", "--connection", "demo").stdout.count(" served ") > served


def test_stopped_server_names_host_and_reason(cli, stack, service, own_server):
    _connected(cli, own_server.url, "gone")
    own_server.stop()  # the port is closed now
    r = cli("test", "gone")
    assert r.returncode == 5, (r.returncode, r.stderr)
    assert r.stdout == ""
    line = _one_line(r.stderr)
    assert f"cannot reach 127.0.0.1:{own_server.port} (connection refused)" in line.lower(), line

    r = cli("test", "gone", "--json")
    assert r.returncode == 5
    doc = r.json()
    assert doc["ok"] is False and doc["error"] == "remote_error" and doc["kind"] == "unreachable"
    assert f"127.0.0.1:{own_server.port}" in doc["message"]


def test_needs_login(cli, stack, service):
    _, mcp = stack
    assert cli("add", "fresh", mcp.url).returncode == 0  # never connected
    r = cli("test", "fresh")
    assert r.returncode == 8, (r.returncode, r.stderr)
    assert "mcp-token-broker connect fresh" in _one_line(r.stderr)
    doc = cli("test", "fresh", "--json").json()
    assert doc["ok"] is False and doc["error"] == doc["kind"] == "authorization_required"


def test_broker_not_running(cli):
    r = cli("test", "anything")
    assert r.returncode == 6, (r.returncode, r.stderr)
    assert "mcp-token-broker serve" in _one_line(r.stderr)


def test_unknown_connection(cli, service):
    r = cli("test", "nosuch")
    assert r.returncode == 2
    assert "nosuch" in _one_line(r.stderr)


def test_server_5xx_names_the_status(cli, stack, service, own_server):
    _connected(cli, own_server.url, "flaky")
    httpx.post(f"http://127.0.0.1:{own_server.port}/__test/outage", json={"status": 503}).raise_for_status()
    r = cli("test", "flaky", "--json")
    assert r.returncode == 5, r.stderr
    doc = r.json()
    assert doc["kind"] == "server_error" and doc["status"] == 503
    assert f"127.0.0.1:{own_server.port} answered HTTP 503" in doc["message"]
    assert "HTTP 503" in _one_line(r.stderr)
    httpx.post(f"http://127.0.0.1:{own_server.port}/__test/outage", json={"status": 0}).raise_for_status()
    assert cli("test", "flaky").returncode == 0  # the outage is over


def test_insufficient_scope_names_the_scope(cli, stack, service):
    _, mcp = stack
    _connected(cli, mcp.url, "narrow", "mcp:write")  # the server requires mcp:read
    r = cli("test", "narrow", "--json")
    assert r.returncode == 5, r.stderr
    doc = r.json()
    assert doc["kind"] == "insufficient_scope" and doc["status"] == 403
    assert "mcp:read" in doc["message"] and "insufficient_scope" in doc["message"]


def test_401_even_after_a_fresh_token(cli, stack, service, own_server):
    """A server that is not the token's audience refuses it; the broker is told
    and refreshes once, and the second token is refused too."""
    oidc, mcp = stack
    _connected(cli, mcp.url, "demo")
    refreshes = oidc.stats()["grants"].get("refresh_token", 0)
    client = BrokerClient(str(service.socket_path))
    with pytest.raises(ProbeFailed) as info:
        anyio.run(lambda: probe("demo", own_server.url, tokens=client, timeout=30))
    assert info.value.kind == "unauthorized" and info.value.status == 401
    assert "even after a fresh one" in str(info.value)
    assert oidc.stats()["grants"].get("refresh_token", 0) == refreshes + 1


@pytest.mark.parametrize(
    ("status", "content_type", "body", "words"),
    [
        (200, "text/html", b"<html>hello</html>", "text/html, not MCP"),
        (200, "application/json", b"{not json", "not MCP JSON-RPC"),
        (404, "text/html", b"<html>no</html>", "HTTP 404 (text/html): not an MCP endpoint"),
    ],
)
def test_not_an_mcp_server(cli, stack, service, status, content_type, body, words):
    _, mcp = stack
    _connected(cli, mcp.url, "demo")
    plain = _Plain(status, content_type, body)
    try:
        with pytest.raises(ProbeFailed) as info:
            client = BrokerClient(str(service.socket_path))
            anyio.run(lambda: probe("demo", plain.url, tokens=client, timeout=30))
    finally:
        plain.close()
    assert info.value.kind == "not_mcp"
    assert words in str(info.value)
    assert json.dumps(str(info.value))  # one plain line
    assert "\n" not in str(info.value)
