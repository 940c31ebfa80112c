"""The engine as a driver: its branches over a `FakeTransport`, fast.

The store, the vault, the loopback listener and the browser's redirect are
real; only the authorization server and the MCP server are a function
(`tests.fake_transport`). The end-to-end versions against oidc-provider
are in test_engine.py and test_cli_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from broker.driver.engine import Engine
from broker.errors import InvalidClient, UnsafeEndpoint
from broker.oauth.http import HttpRequest, HttpResponse
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .fake_transport import PUBLIC_ADDRESS, FakeTransport
from .sansio import ISSUER, as_doc, resp

pytestmark = pytest.mark.timeout(60)

MCP = "https://mcp.example.com/mcp"
PRM_PATH = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
PRM_ROOT = "https://mcp.example.com/.well-known/oauth-protected-resource"
AS_OAUTH = f"{ISSUER}/.well-known/oauth-authorization-server"
AS_OIDC = f"{ISSUER}/.well-known/openid-configuration"
INVALID_CLIENT = resp(401, {"error": "invalid_client"})


def form(request: HttpRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}


class Servers:
    """The MCP server and its authorization server, as one handler. PRM only
    at the root, AS metadata only as OIDC: discovery always falls back."""

    def __init__(self, *, as_doc_overrides=None, refresh_token=True):
        self.as_doc = as_doc(**(as_doc_overrides or {}))
        self.refresh_token = refresh_token
        self.forgotten = False  # the authorization endpoint answers 400
        self.token_answers: list[HttpResponse] = []
        self.revoke_answers: list[HttpResponse] = []
        self.registered: list[str] = []

    def __call__(self, request: HttpRequest) -> HttpResponse:
        url = request.url.split("?", 1)[0]
        if (request.method, url) == ("POST", MCP):
            return resp(401)
        if url == PRM_ROOT:
            return resp(200, {"resource": MCP, "authorization_servers": [ISSUER], "scopes_supported": ["files:read"]})
        if url == AS_OIDC:
            return resp(200, self.as_doc)
        if url == f"{ISSUER}/authorize":
            return resp(400) if self.forgotten else resp(302, headers=[("Location", "https://login.example.com")])
        if url == f"{ISSUER}/register":
            client_id = f"client-{len(self.registered) + 1}"
            self.registered.append(client_id)
            return resp(201, {"client_id": client_id, "redirect_uris": json.loads(request.body)["redirect_uris"]})
        if url == f"{ISSUER}/token":
            if self.token_answers:
                return self.token_answers.pop(0)
            tokens = {"access_token": "at", "token_type": "Bearer", "expires_in": 3600}
            if self.refresh_token:
                tokens["refresh_token"] = "rt"
            return resp(200, tokens)
        if url == f"{ISSUER}/revoke":
            return self.revoke_answers.pop(0) if self.revoke_answers else resp(200)
        return resp(404)


class Browser:
    """Logs in at once: sends the redirect a real browser would, to the
    real loopback listener, from the opener's thread."""

    def __init__(self):
        self.opened: list[str] = []

    def __call__(self, url: str) -> bool:
        self.opened.append(url)
        query = parse_qs(urlsplit(url).query)
        params = {"code": f"code-{len(self.opened)}", "state": query["state"][0], "iss": ISSUER}
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        direct.open(f"{query['redirect_uri'][0]}?{urlencode(params)}", timeout=10).read()
        return True


@pytest.fixture
def make(user_dirs, tmp_path):
    made = []

    def make(servers: Servers, **transport_kw):
        transport = FakeTransport(servers, **transport_kw)
        browser = Browser()
        store = Store(Paths.default(), lambda: FileKeyStore(tmp_path / "key"))
        made.append(transport)
        return Engine(store, transport, opener=browser, flow_timeout=20), transport, browser

    yield make
    for transport in made:
        asyncio.run(transport.aclose())


def run(coro):
    return asyncio.run(coro)


def sent(transport: FakeTransport, url: str) -> list[HttpRequest]:
    return [r for r in transport.requests if r.url.split("?", 1)[0] == url]


# -- discovery ----------------------------------------------------------------------


def test_discovery_falls_back_to_the_root_prm_and_to_oidc(make):
    engine, transport, _ = make(Servers())
    found = run(engine.discover(MCP))
    assert transport.urls() == [MCP, PRM_PATH, PRM_ROOT, AS_OAUTH, AS_OIDC]
    assert found.resource_metadata_url == PRM_ROOT
    assert found.auth_server.source == "openid"


def test_discovery_checks_the_endpoints_against_the_policy(make):
    # The token endpoint's name resolves to a private address: further inward
    # than the MCP server, so discovery refuses it before any request goes there.
    async def resolver(host, port):
        return ["10.0.0.7"] if host == "tokens.example.com" else [PUBLIC_ADDRESS]

    servers = Servers(as_doc_overrides={"token_endpoint": "https://tokens.example.com/token"})
    engine, transport, _ = make(servers, resolver=resolver)
    with pytest.raises(UnsafeEndpoint, match="token_endpoint"):
        run(engine.discover(MCP))
    assert transport.urls() == [MCP, PRM_PATH, PRM_ROOT, AS_OAUTH, AS_OIDC]


# -- a forgotten client -------------------------------------------------------------------


def connect_twice(make, forget: bool):
    servers = Servers()
    engine, transport, _ = make(servers)

    async def main():
        await engine.add("demo", MCP)
        first = await engine.connect("demo")
        servers.forgotten = forget
        second = await engine.connect("demo")
        return first, second

    first, second = run(main())
    return servers, transport, first, second


def test_a_known_client_is_reused(make):
    servers, transport, first, second = connect_twice(make, forget=False)
    assert servers.registered == ["client-1"]
    assert len(sent(transport, f"{ISSUER}/authorize")) == 1  # asked once, on the second connect
    assert second["registration"] == first["registration"]


def test_a_client_the_server_forgot_is_registered_again(make):
    servers, _, first, second = connect_twice(make, forget=True)
    assert servers.registered == ["client-1", "client-2"]
    assert second["registration"]["client_id"] == "client-2"
    assert second["registration"]["redirect_uri"] == first["registration"]["redirect_uri"]  # same port
    assert second["status"] == "connected"


# -- invalid_client at the token endpoint ------------------------------------------------------


def test_invalid_client_at_the_token_endpoint_registers_again_and_logs_in_once_more(make):
    servers = Servers()
    servers.token_answers = [INVALID_CLIENT]
    engine, transport, browser = make(servers)
    events = []

    async def main():
        await engine.add("demo", MCP)
        return await engine.connect("demo", on_event=events.append)

    view = run(main())
    assert view["status"] == "connected"
    assert servers.registered == ["client-1", "client-2"]
    assert view["registration"]["client_id"] == "client-2"
    exchanges = [form(r) for r in sent(transport, f"{ISSUER}/token")]
    assert [(f["client_id"], f["code"]) for f in exchanges] == [("client-1", "code-1"), ("client-2", "code-2")]
    assert exchanges[0]["redirect_uri"] == exchanges[1]["redirect_uri"]  # the same listener port
    assert len(browser.opened) == 2
    assert [e.stage for e in events].count("waiting_for_browser") == 2


def test_invalid_client_twice_gives_up_after_one_retry(make):
    servers = Servers()
    servers.token_answers = [INVALID_CLIENT, INVALID_CLIENT, resp(200, {"access_token": "x", "token_type": "Bearer"})]
    engine, transport, browser = make(servers)

    async def main():
        await engine.add("demo", MCP)
        await engine.connect("demo")

    with pytest.raises(InvalidClient):
        run(main())
    assert servers.registered == ["client-1", "client-2"]
    assert len(sent(transport, f"{ISSUER}/token")) == 2
    assert len(browser.opened) == 2
    assert engine.show("demo")["status"] == "not_connected"


# -- revocation ----------------------------------------------------------------------------------


def connect_then_disconnect(make, servers):
    engine, transport, _ = make(servers)

    async def main():
        await engine.add("demo", MCP)
        await engine.connect("demo")
        return await engine.disconnect("demo")

    warning = run(main()).message(now=0)
    hints = [form(r)["token_type_hint"] for r in sent(transport, f"{ISSUER}/revoke")]
    return engine, warning, hints


def test_revocation_sends_the_refresh_token_first_then_the_access_token(make):
    engine, warning, hints = connect_then_disconnect(make, Servers())
    assert hints == ["refresh_token", "access_token"]
    assert warning is None
    assert engine.show("demo")["status"] == "not_connected"


def test_unsupported_token_type_is_tolerated_after_the_refresh_token_was_revoked(make):
    servers = Servers()
    servers.revoke_answers = [resp(200), resp(400, {"error": "unsupported_token_type"})]
    _, warning, hints = connect_then_disconnect(make, servers)
    assert hints == ["refresh_token", "access_token"]
    assert warning is None


def test_unsupported_token_type_without_a_refresh_token_is_reported(make):
    servers = Servers(refresh_token=False)
    servers.revoke_answers = [resp(400, {"error": "unsupported_token_type"})]
    engine, warning, hints = connect_then_disconnect(make, servers)
    assert hints == ["access_token"]
    assert warning.startswith(f"{ISSUER} refused to revoke the tokens (")
    assert warning.endswith("The broker forgot them.")
    assert engine.show("demo")["status"] == "not_connected"  # forgotten all the same
