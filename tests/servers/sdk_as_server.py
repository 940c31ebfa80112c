"""An MCP server that is its own authorization server, built on the official
``mcp`` SDK's AS handlers (``mcp.server.auth``: metadata, authorize, token,
RFC 7591 registration, RFC 7009 revocation), as many MCP servers are.

Usage::

    python tests/servers/sdk_as_server.py [--port 0] [--access-ttl 300] [--refuse-revocation]

* Issuer ``http://127.0.0.1:PORT``; the protected MCP endpoint is
  ``http://127.0.0.1:PORT/mcp`` (scope ``mcp:read``), tokens bound to it as
  the RFC 8707 resource.
* The provider keeps clients, codes and opaque tokens in memory. The
  authorize step approves at once (redirects to the client's callback with
  a code), so tests/helpers/browser.py can follow it.
* Refresh tokens rotate. Revoking a token ends that token only, so a test
  can tell that both the refresh token and the access token were revoked.
* The SDK's ``RevocationHandler`` authenticates with ``ClientAuthenticator``:
  ``client_id`` must be in the form body, a ``client_secret`` field must be
  present too (its form model requires it), and a client registered for
  ``client_secret_basic`` must also send HTTP Basic.
* ``--refuse-revocation`` (or ``POST /__test/revocation {"refuse": true}``)
  makes ``/revoke`` answer 401 ``unauthorized_client`` to everything, as a
  server that will not revoke.
* ``GET /__test/stats``: what was revoked, and the status of every answer
  ``/revoke`` gave.

When listening it prints one line to stdout: ``{"url": ..., "issuer": ..., "port": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SCOPES = ["mcp:read", "offline_access"]


class MemoryProvider:
    """`OAuthAuthorizationServerProvider` in memory; approves every authorization."""

    def __init__(self, access_ttl: int) -> None:
        self.access_ttl = access_ttl
        self.clients: dict[str, OAuthClientInformationFull] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access: dict[str, AccessToken] = {}
        self.refresh: dict[str, RefreshToken] = {}
        self.revoked: Counter[str] = Counter()

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: OAuthClientInformationFull, params: AuthorizationParams) -> str:
        code = secrets.token_urlsafe(32)
        assert client.client_id is not None
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
            subject="alice",
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        code = self.codes.get(authorization_code)
        return code if code is not None and code.client_id == client.client_id else None

    def _issue(self, client_id: str, scopes: list[str], resource: str | None) -> OAuthToken:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = int(time.time()) + self.access_ttl
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, expires_at=expires, resource=resource, subject="alice"
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource, subject="alice"
        )
        return OAuthToken(
            access_token=access, expires_in=self.access_ttl, scope=" ".join(scopes), refresh_token=refresh
        )

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        self.codes.pop(authorization_code.code, None)
        return self._issue(authorization_code.client_id, authorization_code.scopes, authorization_code.resource)

    async def load_refresh_token(self, client: OAuthClientInformationFull, refresh_token: str) -> RefreshToken | None:
        token = self.refresh.get(refresh_token)
        return token if token is not None and token.client_id == client.client_id else None

    async def exchange_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: RefreshToken, scopes: list[str]
    ) -> OAuthToken:
        self.refresh.pop(refresh_token.token, None)  # rotation
        return self._issue(refresh_token.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token: str) -> AccessToken | None:
        found = self.access.get(token)
        if found is None or (found.expires_at is not None and found.expires_at < time.time()):
            return None
        return found

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        if isinstance(token, RefreshToken):
            self.revoked["refresh_token"] += int(self.refresh.pop(token.token, None) is not None)
        else:
            self.revoked["access_token"] += int(self.access.pop(token.token, None) is not None)

    async def exchange_identity_assertion(self, client: Any, params: Any) -> OAuthToken:
        raise NotImplementedError


class RevocationGate:
    """ASGI wrapper around the app: counts `/revoke` answers, refuses them on demand."""

    def __init__(self, app: ASGIApp, *, refuse: bool) -> None:
        self.app = app
        self.refuse = refuse
        self.answers: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/revoke" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.refuse:
            self.answers["401"] += 1
            body = {"error": "unauthorized_client", "error_description": "this server does not revoke tokens"}
            await JSONResponse(body, status_code=401)(scope, receive, send)
            return

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answers[str(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counting)


def build_app(issuer: str, access_ttl: int, refuse: bool) -> tuple[ASGIApp, MemoryProvider]:
    provider = MemoryProvider(access_ttl)
    server = MCPServer(
        name="mcp-token-broker-sdk-as-server",
        log_level="WARNING",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=f"{issuer}/mcp",
            required_scopes=["mcp:read"],
            validate_token_resource=True,
            client_registration_options=ClientRegistrationOptions(
                enabled=True, valid_scopes=SCOPES, default_scopes=SCOPES
            ),
            revocation_options=RevocationOptions(enabled=True),
        ),
    )

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    gate: RevocationGate

    @server.custom_route("/__test/stats", methods=["GET"])
    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "revoked": dict(provider.revoked),
                "revocation_answers": dict(gate.answers),
                "clients": {cid: c.token_endpoint_auth_method for cid, c in provider.clients.items()},
            }
        )

    @server.custom_route("/__test/revocation", methods=["POST"])
    async def revocation(request: Request) -> Response:
        gate.refuse = bool((await request.json())["refuse"])
        return JSONResponse({"refuse": gate.refuse})

    @server.custom_route("/__test/clients", methods=["POST"])
    async def add_client(request: Request) -> Response:
        """Pre-register a confidential client: {"redirect_uri", "method"} -> {"client_id", "client_secret"}."""
        doc = await request.json()
        client = OAuthClientInformationFull(
            client_id=secrets.token_hex(8),
            client_secret=secrets.token_hex(16),
            redirect_uris=[doc["redirect_uri"]],
            token_endpoint_auth_method=doc["method"],
            scope=" ".join(SCOPES),
        )
        await provider.register_client(client)
        return JSONResponse({"client_id": client.client_id, "client_secret": client.client_secret})

    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    gate = RevocationGate(app, refuse=refuse)
    return gate, provider


async def serve(port: int, access_ttl: int, refuse: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}"
    app, _ = build_app(issuer, access_ttl, refuse)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise SystemExit("uvicorn exited during startup")
        await asyncio.sleep(0.02)
    sys.stdout.write(json.dumps({"url": f"{issuer}/mcp", "issuer": issuer, "port": port}) + "\n")
    sys.stdout.flush()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: ephemeral)")
    parser.add_argument("--access-ttl", type=int, default=300, help="access token lifetime in seconds")
    parser.add_argument("--refuse-revocation", action="store_true", help="answer every revocation with 401")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.run(serve(args.port, args.access_ttl, args.refuse_revocation))


if __name__ == "__main__":
    main()
