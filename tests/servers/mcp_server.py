"""OAuth-protected MCP server for the integration tests (official ``mcp`` SDK 2.x).

Usage::

    python tests/servers/mcp_server.py --issuer http://127.0.0.1:PORT [--port 0]

* Streamable HTTP endpoint at ``/mcp``; its resource URL (RFC 8707 / RFC 9728)
  is ``http://127.0.0.1:PORT/mcp``.
* Requests without a valid bearer token get ``401`` with
  ``WWW-Authenticate: Bearer ..., resource_metadata="http://127.0.0.1:PORT/.well-known/oauth-protected-resource/mcp"``.
* RFC 9728 metadata names ``--issuer`` as the only authorization server and
  ``mcp:read`` as the (required) scope.
* Access tokens are RS256 JWTs from the test authorization server
  (tests/servers/oidc/server.mjs), verified locally against its JWKS: ``iss``,
  ``aud`` (== resource URL), ``exp``; a token without ``mcp:read`` gets 403.
* Tools: ``whoami`` (the token's ``sub``), ``echo(text)`` and ``admin_echo(text)``.
  ``admin_echo`` also needs ``mcp:admin``: without it the call gets ``403`` with
  ``WWW-Authenticate: Bearer error="insufficient_scope", scope="mcp:read mcp:admin"``
  (RFC 6750 section 3.1; the MCP spec's scope challenge). The SDK's tools cannot
  answer an HTTP status, so an ASGI wrapper (`ScopeGate`) reads the JSON-RPC body.
* ``POST /__test/outage`` with ``{"status": 503}`` makes ``/mcp`` answer that
  status as plain text, as a failing gateway would; ``{"status": 0}`` ends it.

When listening it prints exactly one line to stdout::

    {"url": "http://127.0.0.1:PORT/mcp", "port": PORT}

Everything else goes to stderr at warning level. SIGTERM/SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import socket
import sys
import urllib.request
from typing import Any

import anyio
import jwt
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

log = logging.getLogger("tests.mcp_server")

REQUIRED_SCOPES = ["mcp:read"]
#: Tools that need more than REQUIRED_SCOPES, and the scope challenge they answer without it.
TOOL_SCOPES = {"admin_echo": ("mcp:read", "mcp:admin")}


class JwtTokenVerifier(TokenVerifier):
    """Verifies the authorization server's JWT access tokens (RFC 9068) locally."""

    def __init__(self, issuer: str, resource: str) -> None:
        self.issuer = issuer
        self.resource = resource
        self._jwks: jwt.PyJWKClient | None = None

    def _jwks_client(self) -> jwt.PyJWKClient:
        # Discovered lazily, so this server does not depend on the
        # authorization server being up when it starts.
        if self._jwks is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=10) as resp:
                jwks_uri = json.load(resp)["jwks_uri"]
            # Short cooldown: an unknown `kid` (e.g. the AS was restarted with a
            # new key) refetches the JWKS right away instead of after 30 s.
            self._jwks = jwt.PyJWKClient(jwks_uri, cache_jwk_set=True, lifespan=60, cooldown_duration=0, timeout=10)
        return self._jwks

    def _verify(self, token: str) -> dict[str, Any]:
        signing_key = self._jwks_client().get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            signing_key.key,
            algorithms=["RS256"],
            audience=self.resource,
            issuer=self.issuer,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            # PyJWKClient does blocking HTTP; keep it off the event loop.
            claims = await anyio.to_thread.run_sync(self._verify, token)
        except (jwt.PyJWTError, OSError, ValueError, KeyError) as err:
            # Never log the token itself.
            log.warning("rejected bearer token: %s", type(err).__name__)
            return None
        aud = claims["aud"]
        resource = self.resource if isinstance(aud, list) and self.resource in aud else aud
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=resource if isinstance(resource, str) else None,
            subject=str(claims["sub"]),
            claims={"iss": claims["iss"]},
        )


def build_server(issuer: str, resource: str) -> MCPServer:
    server = MCPServer(
        name="mcp-token-broker-test-server",
        log_level="WARNING",
        token_verifier=JwtTokenVerifier(issuer, resource),
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=REQUIRED_SCOPES,
            validate_token_resource=True,
        ),
    )

    @server.tool()
    def whoami() -> str:
        """Return the `sub` of the access token this request carried."""
        token = get_access_token()
        return token.subject if token and token.subject else ""

    @server.tool()
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @server.tool()
    def admin_echo(text: str) -> str:
        """Return `text` unchanged; needs the scope mcp:admin (see `ScopeGate`)."""
        return text

    return server


class ScopeGate:
    """ASGI wrapper: a `tools/call` of a tool in TOOL_SCOPES whose bearer token
    lacks one of its scopes gets 403 insufficient_scope. The token's signature
    is not checked here: the SDK's auth checks it for every call that passes."""

    def __init__(self, app: Any, resource_metadata: str) -> None:
        self.app = app
        self.resource_metadata = resource_metadata

    @staticmethod
    def _scopes(scope: Any) -> set[str]:
        for key, value in scope.get("headers", []):
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                try:
                    claims = jwt.decode(value[7:].decode(), options={"verify_signature": False})
                except jwt.PyJWTError:
                    return set()
                return set(str(claims.get("scope", "")).split())
        return set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/mcp":
            await self.app(scope, receive, send)
            return
        events = []
        while True:
            event = await receive()
            events.append(event)
            if event["type"] != "http.request" or not event.get("more_body"):
                break
        body = b"".join(e.get("body", b"") for e in events)
        try:
            message = json.loads(body)
        except ValueError:
            message = None
        params = message.get("params") if isinstance(message, dict) else None
        tool = params.get("name") if isinstance(params, dict) and message.get("method") == "tools/call" else None
        needed = TOOL_SCOPES.get(tool) if isinstance(tool, str) else None
        if needed and not set(needed) <= self._scopes(scope):
            challenge = (
                f'Bearer error="insufficient_scope", scope="{" ".join(needed)}", '
                f'resource_metadata="{self.resource_metadata}", '
                f'error_description="{tool} needs {" ".join(needed)}"'
            )
            out = json.dumps({"error": "insufficient_scope", "error_description": f"{tool} needs more scope"}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
                (b"www-authenticate", challenge.encode()),
            ]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": out})
            return
        pending = list(events)

        async def replay() -> Any:
            return pending.pop(0) if pending else await receive()

        await self.app(scope, replay, send)


class Outage:
    """ASGI wrapper: while `status` is set, `/mcp` answers it (test endpoint `/__test/outage`)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.status = 0

    async def _answer(self, send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/__test/outage" and scope["method"] == "POST":
            body = b""
            while True:
                event = await receive()
                body += event.get("body", b"")
                if not event.get("more_body"):
                    break
            self.status = int(json.loads(body)["status"])
            await self._answer(send, 200, b"ok")
            return
        if scope["type"] == "http" and self.status and scope["path"] == "/mcp":
            await self._answer(send, self.status, b"upstream unavailable")
            return
        await self.app(scope, receive, send)


async def serve(issuer: str, port: int) -> None:
    # Bind first so the resource URL carries the real (possibly ephemeral) port.
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it a JSON answer (head, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/mcp"

    metadata = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
    mcp_app = build_server(issuer, url).streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    app = Outage(ScopeGate(mcp_app, metadata))
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # Open SSE streams must not hold up a test teardown.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task  # startup failed: surface the error
            raise SystemExit("uvicorn exited during startup")
        await asyncio.sleep(0.02)
    sys.stdout.write(json.dumps({"url": url, "port": port}) + "\n")
    sys.stdout.flush()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--issuer", required=True, help="authorization server issuer URL")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: ephemeral)")
    args = parser.parse_args()

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # uvicorn captures SIGTERM/SIGINT while serving, shuts down, then re-raises
    # the signal with the handlers it found installed. A no-op handler here
    # turns that re-raise into a normal return, i.e. exit status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.run(serve(args.issuer.rstrip("/"), args.port))


if __name__ == "__main__":
    main()
