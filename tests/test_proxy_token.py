"""The proxy's token: kept between requests, dropped on a 401 or when the broker goes.

`httpx2_auth` (what `mcp-token-broker proxy` sends with) against a real
`serve` holding a real connection (oidc-provider, a real `connect`); the
broker client counts the token requests it sends, nothing else is changed.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import pytest

from broker.client.api_client import BrokerClient

pytestmark = pytest.mark.timeout(120)


class CountingClient(BrokerClient):
    """The real socket client; it counts its token requests."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(socket_path)
        self.fetched: list[str] = []

    def token(self, name, *, min_ttl=None):  # type: ignore[no-untyped-def]
        answer = super().token(name, min_ttl=min_ttl)
        self.fetched.append(str(answer["access_token"]))
        return answer


def _connected(cli, stack, name: str) -> None:
    _, mcp = stack
    assert cli("add", name, mcp.url).returncode == 0
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr


class _Rejecting:
    """A loopback HTTP server that answers 401 to the first token it sees, 200 after."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                seen.append(str(self.headers.get("Authorization")))
                self.send_response(401 if seen[0] == seen[-1] else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _get(url: str, auth, times: int) -> list[int]:
    import httpx2

    async def main() -> list[int]:
        async with httpx2.AsyncClient(auth=auth) as http:
            return [(await http.get(url)).status_code for _ in range(times)]

    return anyio.run(main)


def test_the_token_is_kept_between_requests(cli, stack, service):
    from broker.client.httpx_auth import httpx2_auth

    _connected(cli, stack, "kept")
    _, mcp = stack
    client = CountingClient(str(service.socket_path))
    statuses = _get(mcp.url, httpx2_auth("kept", client=client), 10)
    assert 401 not in statuses  # the MCP server took the token every time
    assert len(client.fetched) == 1  # one trip to the broker, not ten


def test_a_401_drops_the_kept_token_and_the_next_request_uses_the_new_one(cli, stack, service):
    from broker.client.httpx_auth import httpx2_auth

    _connected(cli, stack, "dropped")
    server = _Rejecting()
    client = CountingClient(str(service.socket_path))
    try:
        statuses = _get(server.url, httpx2_auth("dropped", client=client), 3)
    finally:
        server.close()
    assert len(client.fetched) == 2  # the first, then the one fetched after the 401 was reported
    first, second = client.fetched
    assert first != second  # the broker refreshed the rejected token
    assert statuses == [200, 200, 200]  # the 401 was retried once with the new token
    assert server.seen == [f"Bearer {first}", f"Bearer {second}", f"Bearer {second}", f"Bearer {second}"]


def test_a_stopped_broker_is_asked_again_not_trusted(cli, stack):
    from broker.client.httpx_auth import httpx2_auth
    from broker.errors import ServiceUnavailable

    from .conftest import start_service

    running = start_service(cli)
    try:
        _connected(cli, stack, "gone")
        auth = httpx2_auth("gone", client=CountingClient(str(running.socket_path)))
        _, mcp = stack
        assert 401 not in _get(mcp.url, auth, 1)
    finally:
        assert running.stop() == 0
    with pytest.raises(ServiceUnavailable):  # not a request sent with the kept token
        _get(mcp.url, auth, 1)
