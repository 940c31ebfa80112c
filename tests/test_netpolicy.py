"""A remote MCP server may not point the broker at this machine or its LAN.

Unit tests on the rule (`broker.oauth.netpolicy`), on the transport's check of
resolved names, and an end-to-end `add` where a remote server's metadata
names endpoints on this machine: the engine refuses, and a real capture
server on 127.0.0.1 receives not a single connection.

The remote server itself cannot be real here (nothing public is reachable),
so its two documents come from an `httpx.MockTransport` mounted for its host
only, and the resolver says what public DNS would say for it. Everything else
goes over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest

from broker.driver.engine import Engine
from broker.driver.transport import Transport
from broker.errors import UnsafeEndpoint
from broker.oauth.http import HttpRequest
from broker.oauth.netpolicy import EndpointPolicy, ip_reach, literal_reach
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

pytestmark = pytest.mark.timeout(30)

REMOTE = "https://mcp.remote.test/mcp"
PUBLIC_IP = "93.184.215.14"  # what DNS would answer for a public host; never contacted


@pytest.mark.parametrize(
    ("address", "reach"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "loopback"),
        ("::", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "private"),  # cloud metadata
        ("100.64.0.1", "private"),  # CGNAT
        ("fd00::1", "private"),
        ("fe80::1%eth0", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("224.0.0.1", "private"),
        (PUBLIC_IP, "public"),
        ("2606:4700:4700::1111", "public"),
    ],
)
def test_ip_reach(address, reach):
    assert ip_reach(address) == reach


def test_literal_reach_names_need_a_resolver():
    assert literal_reach("localhost") == "loopback"
    assert literal_reach("api.localhost") == "loopback"
    assert literal_reach("[::1]") == "loopback"
    assert literal_reach("mcp.example.com") is None


@pytest.mark.parametrize(
    ("server", "endpoint", "reach", "allowed"),
    [
        ("public", "https://as.example.com/token", "public", True),
        ("public", "https://127.0.0.1/token", None, False),
        ("public", "https://localhost/token", None, False),
        ("public", "https://10.0.0.5/token", None, False),
        ("public", "https://as.example.com/token", "private", False),  # resolved inward
        ("public", "https://as.example.com/token", "loopback", False),
        ("private", "https://10.0.0.5/token", None, True),
        ("private", "https://as.example.com/token", "public", True),
        ("private", "https://127.0.0.1/token", None, False),
        ("loopback", "https://127.0.0.1/token", None, True),
        ("loopback", "http://127.0.0.1:9/token", None, True),
        ("loopback", "https://as.example.com/token", "public", True),
        # Plain http only between a loopback server and loopback endpoints.
        ("private", "http://10.0.0.5/token", None, False),
        ("public", "http://127.0.0.1/token", None, False),
        ("loopback", "http://as.example.com/token", "public", False),
    ],
)
def test_endpoint_rule(server, endpoint, reach, allowed):
    policy = EndpointPolicy(server_url="https://mcp.example/", reach=server)
    if allowed:
        policy.check(endpoint, "the endpoint", reach)
    else:
        with pytest.raises(UnsafeEndpoint):
            policy.check(endpoint, "the endpoint", reach)


def fake_dns(table):
    async def resolve(host, port):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return list(table[host])

    return resolve


def test_transport_judges_names_by_what_they_resolve_to():
    """A public-looking name that resolves to this machine is this machine."""
    transport = Transport(resolver=fake_dns({"mcp.remote.test": [PUBLIC_IP], "sneaky.remote.test": ["127.0.0.1"]}))

    async def main():
        async with transport.for_server(REMOTE) as policy:
            assert policy.reach == "public"
            await transport.check_url("https://mcp.remote.test/other", "x")
            with pytest.raises(UnsafeEndpoint, match="this machine"):
                await transport.check_url("https://sneaky.remote.test:1/x", "the token endpoint")
        async with transport.for_server("http://127.0.0.1:5/mcp") as policy:
            assert policy.reach == "loopback"
            await transport.check_url("https://sneaky.remote.test:1/x", "the token endpoint")

    asyncio.run(main())


def test_a_server_name_that_does_not_resolve_gets_the_strictest_reach():
    transport = Transport(resolver=fake_dns({}))

    async def main():
        async with transport.for_server("https://nowhere.test/mcp") as policy:
            return policy.reach

    assert asyncio.run(main()) == "public"


class CaptureServer:
    """Counts every TCP connection made to it; answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def capture():
    server = CaptureServer()
    yield server
    server.close()


def remote_server(as_url: str, as_metadata: dict | None):
    """The remote MCP server's and its authorization server's answers."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/mcp":
            challenge = 'Bearer resource_metadata="https://mcp.remote.test/.well-known/oauth-protected-resource/mcp"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if path == "/.well-known/oauth-protected-resource/mcp":
            return httpx.Response(200, json={"resource": REMOTE, "authorization_servers": [as_url]})
        if as_metadata is not None and path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=as_metadata)
        return httpx.Response(404)

    return httpx.MockTransport(handle)


def as_document(issuer: str, **overrides: str) -> dict:
    doc = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "registration_endpoint": f"{issuer}/register",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }
    doc.update(overrides)
    return doc


def add_remote(tmp_path, mock: httpx.MockTransport, dns: dict):
    client = httpx.AsyncClient(mounts={"https://mcp.remote.test": mock, "https://as.remote.test": mock})
    transport = Transport(client, resolver=fake_dns(dns))
    paths = Paths(tmp_path / "c", tmp_path / "d", tmp_path / "s")
    engine = Engine(Store(paths, lambda: FileKeyStore(tmp_path / "key")), transport)

    async def main():
        try:
            return await engine.add("remote", REMOTE)
        finally:
            await client.aclose()

    return asyncio.run(main())


DNS = {"mcp.remote.test": [PUBLIC_IP], "as.remote.test": [PUBLIC_IP]}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0"])
def test_remote_server_naming_this_machine_as_authorization_server_is_refused_unsent(tmp_path, capture, host):
    with pytest.raises(UnsafeEndpoint):
        add_remote(tmp_path, remote_server(f"http://{host}:{capture.port}", None), DNS)
    assert capture.connections == 0


@pytest.mark.parametrize("key", ["registration_endpoint", "token_endpoint", "authorization_endpoint"])
def test_remote_endpoints_on_this_machine_are_refused_before_any_request(tmp_path, capture, key):
    """Over https and via a name, so only the resolved-address check can catch it."""
    issuer = "https://as.remote.test"
    doc = as_document(issuer, **{key: f"https://internal.remote.test:{capture.port}/x"})
    dns = {**DNS, "internal.remote.test": ["127.0.0.1"]}
    with pytest.raises(UnsafeEndpoint, match="this machine"):
        add_remote(tmp_path, remote_server(issuer, doc), dns)
    assert capture.connections == 0


def test_remote_server_with_public_endpoints_is_added(tmp_path):
    issuer = "https://as.remote.test"
    settings = add_remote(tmp_path, remote_server(issuer, as_document(issuer)), DNS)
    assert settings.discovered.auth_server.token_endpoint == f"{issuer}/token"
    assert json.loads((tmp_path / "c" / "connections.json").read_text())["connections"]["remote"]


def test_sending_outside_the_connections_context_is_strict(capture):
    with pytest.raises(UnsafeEndpoint):
        asyncio.run(Transport().send(HttpRequest("GET", f"http://127.0.0.1:{capture.port}/", "test")))
    assert capture.connections == 0


def test_dns_rebinding_between_check_and_connect_is_refused(capture):
    """The token endpoint's name resolves to a public address when discovery
    checks it, and to 127.0.0.1 when the request connects: the connection
    uses its own, checked lookup and is refused before a byte is sent."""
    answers = {"mcp.remote.test": [[PUBLIC_IP]] * 3, "as.remote.test": [[PUBLIC_IP], ["127.0.0.1"]]}

    async def rebinding(host, port):
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    transport = Transport(resolver=rebinding)
    assert transport.pinned
    url = f"https://as.remote.test:{capture.port}/token"

    async def main():
        async with transport.for_server(REMOTE):
            await transport.check_url(url, "the token endpoint")  # first lookup: public
            await transport.send(HttpRequest("POST", url, "token endpoint", (), b"grant_type=x"))

    with pytest.raises(UnsafeEndpoint, match="resolves to 127.0.0.1"):
        asyncio.run(main())
    assert capture.connections == 0


def test_a_pinned_client_connects_to_the_address_it_checked():
    """httpx's pool really uses the checked backend (the one reach into its
    internals): a name only our resolver knows is connected to."""

    async def main():
        server = await asyncio.start_server(answer_204, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        transport = Transport(resolver=fake_dns({"localhost": ["127.0.0.1"]}))
        try:
            async with transport.for_server(f"http://127.0.0.1:{port}/mcp"):
                response = await transport.send(HttpRequest("GET", f"http://localhost:{port}/", "test"))
            return response.status, transport._client._transport._pool._network_backend
        finally:
            await transport.aclose()
            server.close()

    status, backend = asyncio.run(main())
    assert status == 204
    assert type(backend).__name__ == "CheckedBackend"


async def answer_204(reader, writer):
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    await writer.drain()
    writer.close()
