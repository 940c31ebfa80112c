"""A small client for the broker's socket API. Standard library only.

`mcp-token-broker token` runs through here on every request an MCP client
makes, so this module imports nothing heavy: a plain AF_UNIX socket, one
HTTP/1.1 request per connection, and a response read with a size cap and a
timeout. Python MCP clients can use `BrokerClient.token()` directly, or
`broker.client.httpx_auth.BrokerAuth` with httpx-based transports.

Before a byte is sent, the socket's directories and the listener's UID are
checked (`broker.client.wire`); a socket another user could control raises
`UnsafeSocketDir` or `UntrustedListener` (storage errors), never
`ServiceUnavailable`, so callers cannot mistake it for "no service".

Every error is a `broker.errors.BrokerError`: `ServiceUnavailable`, or a
`ServiceError` whose `code` is the API's and whose `exit_code` comes from
`broker.codes` (both names stay importable from here).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..errors import ServiceError, ServiceUnavailable
from .socketpath import socket_location
from .wire import BadAnswer, Unavailable, exchange

if TYPE_CHECKING:
    from typing import Any

__all__ = ["BrokerClient", "ServiceError", "ServiceUnavailable", "quote"]


class BrokerClient:
    def __init__(self, socket_path: str | None = None, *, timeout: float = 30.0) -> None:
        # A given path is checked from its own directory; the default from its runtime base.
        self._base: str | None = None
        if socket_path:
            self.socket_path = socket_path
        else:
            self.socket_path, self._base = socket_location()
        self.timeout = timeout

    # -- transport ------------------------------------------------------------

    def request(self, method: str, path: str, body: object = None, *, timeout: float | None = None) -> dict[str, Any]:
        """Send one request; return the decoded JSON body or raise."""
        payload = None if body is None else json.dumps(body).encode()
        try:
            status, raw = exchange(
                self.socket_path,
                method,
                path,
                payload,
                timeout=timeout if timeout is not None else self.timeout,
                base=self._base,
            )
        except Unavailable as exc:
            raise ServiceUnavailable(str(exc)) from exc
        except TimeoutError:
            raise ServiceError(0, "timeout", "the broker did not answer in time") from None
        except BadAnswer as exc:
            raise ServiceError(0, "bad_response", str(exc)) from None
        return _decode(status, raw)

    # -- API --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health", timeout=min(self.timeout, 5.0))

    def is_running(self) -> bool:
        try:
            return self.health().get("status") == "ok"
        except (ServiceUnavailable, ServiceError, OSError):
            return False

    def connections(self) -> list[dict[str, Any]]:
        connections: list[dict[str, Any]] = self.request("GET", "/v1/connections")["connections"]
        return connections

    def connection(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/connections/{quote(name, safe='')}")

    def token(self, name: str, *, min_ttl: int | None = None) -> dict[str, Any]:
        """`{"access_token", "token_type", "expires_at", "scope"}`."""
        query = f"?min_ttl={int(min_ttl)}" if min_ttl is not None else ""
        return self.request("GET", f"/v1/connections/{quote(name, safe='')}/token{query}")

    def report_rejected(self, name: str, token: str) -> dict[str, Any]:
        """Tell the broker a server answered 401 to `token` (only its hash is
        sent). If it is still the current token the broker refreshes once:
        `{"refreshed": true, "expires_at"}`; else `{"refreshed": false, "reason"}`."""
        import hashlib

        digest = hashlib.sha256(token.encode()).hexdigest()
        return self.request("POST", f"/v1/connections/{quote(name, safe='')}/token/rejected", {"token_sha256": digest})

    def report_insufficient_scope(self, name: str, token: str, scopes: list[str]) -> dict[str, Any]:
        """Tell the broker a server answered 403 `insufficient_scope` with
        `scopes` to `token` (only its hash is sent). The answer says what the
        user must do: `{"recorded": true, "pending", "given_up", "missing",
        "message"}`, or `{"recorded": false, "reason"}` for a token that is not
        the current one."""
        import hashlib

        digest = hashlib.sha256(token.encode()).hexdigest()
        body = {"token_sha256": digest, "scopes": list(scopes)}
        return self.request("POST", f"/v1/connections/{quote(name, safe='')}/insufficient-scope", body)


_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~")


def quote(value: str, safe: str = "") -> str:
    """Percent-encode a path segment (urllib.parse is too slow to import here)."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in value.encode())


def _decode(status: int, body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        raise ServiceError(status, "bad_response", "the broker's answer is not JSON") from None
    if not isinstance(doc, dict):
        raise ServiceError(status, "bad_response", "the broker's answer is not a JSON object")
    if status >= 400:
        raise ServiceError(status, str(doc.get("error", "error")), str(doc.get("message", f"HTTP {status}")))
    return doc
