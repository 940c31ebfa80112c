"""Smoke tests of the real-server test infrastructure, without the product code.

Drives the stack (oidc-provider authorization server + SDK-based MCP server +
fake browser) by hand with httpx and the official MCP client, so a failure here
points at the infrastructure, not at the broker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.servers.fixtures import BROWSER_SCRIPT, McpServer, OidcServer, running_stack, start_oidc_server

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[OidcServer, McpServer]]:
    with running_stack(access_ttl=300) as servers:
        yield servers


@pytest.fixture(scope="module")
def as_meta(stack: tuple[OidcServer, McpServer]) -> dict[str, Any]:
    oidc, _ = stack
    resp = httpx.get(f"{oidc.issuer}/.well-known/openid-configuration")
    resp.raise_for_status()
    return resp.json()


class CallbackListener:
    """The app's loopback redirect URI: records the query of each GET /callback."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.got_one = threading.Event()
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/callback":
                    self.send_error(404)
                    return
                listener.received.append(dict(urllib.parse.parse_qsl(url.query)))
                listener.got_one.set()
                body = b"You can close this window."
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.redirect_uri = f"http://127.0.0.1:{self.port}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def callback() -> Iterator[CallbackListener]:
    listener = CallbackListener()
    yield listener
    listener.close()


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register_client(as_meta: dict[str, Any], redirect_uri: str) -> dict[str, Any]:
    resp = httpx.post(
        as_meta["registration_endpoint"],
        json={
            "client_name": "smoke test",
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [redirect_uri],
        },
    )
    assert resp.status_code == 201, resp.text
    client = resp.json()
    assert client["client_id"]
    assert "client_secret" not in client
    return client


def run_browser(url: str, log_path: Path, mode: str = "follow") -> None:
    env = dict(os.environ, BROWSER_MODE=mode, BROWSER_LOG=str(log_path))
    proc = subprocess.run([BROWSER_SCRIPT, url], env=env, capture_output=True, timeout=30)
    log = log_path.read_text() if log_path.exists() else ""
    assert proc.returncode == 0, f"browser exited {proc.returncode}; log:\n{log}"


def authorize(
    as_meta: dict[str, Any],
    client: dict[str, Any],
    callback: CallbackListener,
    resource: str,
    log_path: Path,
    mode: str = "follow",
) -> tuple[dict[str, str], str, str]:
    """Run the browser through /auth; returns (callback params, state, code_verifier)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = urllib.parse.urlencode(
        {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": callback.redirect_uri,
            "scope": "mcp:read offline_access",
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": resource,
            "prompt": "consent",
        }
    )
    run_browser(f"{as_meta['authorization_endpoint']}?{query}", log_path, mode)
    assert callback.got_one.wait(10), "the browser never delivered the callback"
    assert len(callback.received) == 1
    return callback.received[0], state, verifier


def token_request(as_meta: dict[str, Any], **form: str) -> httpx.Response:
    return httpx.post(as_meta["token_endpoint"], data=form)


def mcp_tools_and_whoami(url: str, access_token: str) -> tuple[list[str], str]:
    """List tools and call whoami with the official MCP client (SDK 2.x)."""

    async def go() -> tuple[list[str], str]:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {access_token}"}) as http_client:
            async with Client(streamable_http_client(url, http_client=http_client)) as client:
                tools = await client.list_tools()
                result = await client.call_tool("whoami", {})
                assert not result.is_error, result
                text = "".join(getattr(block, "text", "") for block in result.content)
                return [tool.name for tool in tools.tools], text

    return asyncio.run(go())


# --------------------------------------------------------------------------- #
# tests
# --------------------------------------------------------------------------- #


def test_unauthenticated_request_gets_401_with_resource_metadata(stack: tuple[OidcServer, McpServer]) -> None:
    _, mcp = stack
    resp = httpx.post(
        mcp.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{mcp.resource_metadata_url}"' in challenge


def test_invalid_token_gets_401(stack: tuple[OidcServer, McpServer]) -> None:
    _, mcp = stack
    resp = httpx.post(
        mcp.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream", "Authorization": "Bearer not-a-jwt"},
    )
    assert resp.status_code == 401
    assert "resource_metadata=" in resp.headers["WWW-Authenticate"]


def test_discovery_documents(stack: tuple[OidcServer, McpServer], as_meta: dict[str, Any]) -> None:
    oidc, mcp = stack
    prm = httpx.get(mcp.resource_metadata_url)
    assert prm.status_code == 200
    assert prm.json()["resource"] == mcp.url
    assert prm.json()["authorization_servers"] == [oidc.issuer]
    assert prm.json()["scopes_supported"] == ["mcp:read"]

    assert as_meta["issuer"] == oidc.issuer
    assert as_meta["code_challenge_methods_supported"] == ["S256"]
    assert as_meta["authorization_response_iss_parameter_supported"] is True
    assert as_meta["registration_endpoint"].startswith(oidc.issuer)
    assert as_meta["revocation_endpoint"].startswith(oidc.issuer)
    # RFC 8414 metadata is served too.
    rfc8414 = httpx.get(f"{oidc.issuer}/.well-known/oauth-authorization-server")
    assert rfc8414.status_code == 200
    assert rfc8414.json()["token_endpoint"] == as_meta["token_endpoint"]


def test_full_flow(
    stack: tuple[OidcServer, McpServer], as_meta: dict[str, Any], callback: CallbackListener, tmp_path: Path
) -> None:
    oidc, mcp = stack
    oidc.reset_stats()
    client = register_client(as_meta, callback.redirect_uri)

    params, state, verifier = authorize(as_meta, client, callback, mcp.url, tmp_path / "browser.log")
    assert params["state"] == state
    assert params["iss"] == oidc.issuer
    assert "error" not in params, params
    log = (tmp_path / "browser.log").read_text()
    assert "callback GET" in log

    resp = token_request(
        as_meta,
        grant_type="authorization_code",
        client_id=client["client_id"],
        code=params["code"],
        redirect_uri=callback.redirect_uri,
        code_verifier=verifier,
        resource=mcp.url,
    )
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["refresh_token"]
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["aud"] == mcp.url
    assert claims["iss"] == oidc.issuer
    assert claims["sub"] == "alice"
    assert "mcp:read" in claims["scope"].split()

    # Refresh (without `resource`: the granted one is reused) rotates the refresh token.
    resp = token_request(
        as_meta, grant_type="refresh_token", client_id=client["client_id"], refresh_token=tokens["refresh_token"]
    )
    assert resp.status_code == 200, resp.text
    refreshed = resp.json()
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert jwt.decode(refreshed["access_token"], options={"verify_signature": False})["aud"] == mcp.url

    stats = oidc.stats()
    assert stats["grants"] == {"authorization_code": 1, "refresh_token": 1}
    assert stats["registrations"]["created"] == 1
    assert stats["authorizations"]["success"] == 1  # one code issued to the client

    # The refreshed access token works against the real MCP server.
    tools, whoami = mcp_tools_and_whoami(mcp.url, refreshed["access_token"])
    assert {"whoami", "echo"} <= set(tools)
    assert whoami == "alice"

    # A tampered token is refused.
    header, payload, signature = refreshed["access_token"].split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    resp = httpx.post(
        mcp.url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {forged}"},
    )
    assert resp.status_code == 401

    # Replaying the rotated-out refresh token fails ...
    resp = token_request(
        as_meta, grant_type="refresh_token", client_id=client["client_id"], refresh_token=tokens["refresh_token"]
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"
    # ... and oidc-provider treats it as replay: the whole grant is revoked,
    # including the current refresh token.
    resp = token_request(
        as_meta, grant_type="refresh_token", client_id=client["client_id"], refresh_token=refreshed["refresh_token"]
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"

    stats = oidc.stats()
    assert stats["grants"]["refresh_token"] == 1
    assert stats["grant_errors"] == {"invalid_grant": 2}
    assert stats["grant_errors_by_grant_type"] == {"refresh_token": {"invalid_grant": 2}}


def test_mcp_server_checks_audience_issuer_expiry_and_scope(stack: tuple[OidcServer, McpServer]) -> None:
    """Mint tokens with the authorization server's own key to probe the verifier."""
    oidc, mcp = stack
    jwk = json.loads(Path(oidc.keys_file).read_text())
    key = jwt.PyJWK(jwk).key
    now = int(time.time())
    good = {
        "iss": oidc.issuer,
        "aud": mcp.url,
        "sub": "minted",
        "client_id": "c",
        "scope": "mcp:read",
        "iat": now,
        "exp": now + 300,
    }

    def mint(**changes: Any) -> str:
        return jwt.encode({**good, **changes}, key, algorithm="RS256", headers={"kid": jwk["kid"], "typ": "at+jwt"})

    def status(token: str) -> int:
        return httpx.post(
            mcp.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {token}"},
        ).status_code

    assert mcp_tools_and_whoami(mcp.url, mint())[1] == "minted"
    assert status(mint(aud="http://127.0.0.1:9/mcp")) == 401
    assert status(mint(iss="http://127.0.0.1:9")) == 401
    assert status(mint(exp=now - 60, iat=now - 400)) == 401
    assert status(mint(scope="mcp:write")) == 403


def test_deny_mode_yields_access_denied(
    stack: tuple[OidcServer, McpServer], as_meta: dict[str, Any], callback: CallbackListener, tmp_path: Path
) -> None:
    oidc, mcp = stack
    client = register_client(as_meta, callback.redirect_uri)
    params, state, _ = authorize(as_meta, client, callback, mcp.url, tmp_path / "browser.log", mode="deny")
    assert params["error"] == "access_denied"
    assert params["state"] == state
    assert params["iss"] == oidc.issuer
    assert "code" not in params


def test_print_mode_only_logs(tmp_path: Path) -> None:
    log_path = tmp_path / "browser.log"
    url = "http://127.0.0.1:9/auth?client_id=x&state=y"  # port 9: nothing listens there
    run_browser(url, log_path, mode="print")
    assert url in log_path.read_text()


def test_revocation_and_forgotten_client(
    stack: tuple[OidcServer, McpServer], as_meta: dict[str, Any], callback: CallbackListener, tmp_path: Path
) -> None:
    oidc, mcp = stack
    client = register_client(as_meta, callback.redirect_uri)
    params, _, verifier = authorize(as_meta, client, callback, mcp.url, tmp_path / "browser.log")
    tokens = token_request(
        as_meta,
        grant_type="authorization_code",
        client_id=client["client_id"],
        code=params["code"],
        redirect_uri=callback.redirect_uri,
        code_verifier=verifier,
        resource=mcp.url,
    ).json()
    oidc.reset_stats()

    # RFC 7009 revocation of the refresh token.
    resp = httpx.post(
        as_meta["revocation_endpoint"],
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token", "client_id": client["client_id"]},
    )
    assert resp.status_code == 200
    resp = token_request(
        as_meta, grant_type="refresh_token", client_id=client["client_id"], refresh_token=tokens["refresh_token"]
    )
    assert resp.json()["error"] == "invalid_grant"
    stats = oidc.stats()
    assert stats["revocations"]["refresh_token"] == 1
    assert stats["revocations"]["total"] == 1

    # JWT access tokens cannot be revoked at oidc-provider (unsupported_token_type).
    resp = httpx.post(
        as_meta["revocation_endpoint"], data={"token": tokens["access_token"], "client_id": client["client_id"]}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "unsupported_token_type"
    assert oidc.stats()["revocation_errors"] == {"unsupported_token_type": 1}

    # RFC 7592: the client can read its registration ...
    reg = httpx.get(
        client["registration_client_uri"], headers={"Authorization": f"Bearer {client['registration_access_token']}"}
    )
    assert reg.status_code == 200
    # ... until the server forgets all clients.
    assert oidc.forget_clients() >= 1
    assert oidc.stats()["clients"] == 0
    resp = token_request(as_meta, grant_type="refresh_token", client_id=client["client_id"], refresh_token="whatever")
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"
    reg = httpx.get(
        client["registration_client_uri"], headers={"Authorization": f"Bearer {client['registration_access_token']}"}
    )
    assert reg.status_code == 401


def test_restart_keeps_port_issuer_and_key_but_forgets_state() -> None:
    with start_oidc_server(["http://127.0.0.1:9/mcp"], access_ttl=60) as oidc:
        jwks_before = httpx.get(f"{oidc.issuer}/jwks").json()
        reg = httpx.post(
            f"{oidc.issuer}/reg",
            json={
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "redirect_uris": ["http://127.0.0.1/callback"],
            },
        )
        assert reg.status_code == 201, reg.text
        issuer, port = oidc.issuer, oidc.port

        oidc.restart()

        assert (oidc.issuer, oidc.port) == (issuer, port)
        assert httpx.get(f"{oidc.issuer}/jwks").json() == jwks_before
        assert oidc.stats()["clients"] == 0
        assert oidc.stats()["resources"] == ["http://127.0.0.1:9/mcp"]
    assert not oidc.running


def test_startup_failure_reports_stderr() -> None:
    # An invalid argument makes server.mjs exit; the error carries its stderr.
    with pytest.raises(RuntimeError, match="invalid --access-ttl"):
        start_oidc_server(access_ttl=-1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
