"""Client registration: pre-registered, client ID metadata document, or RFC 7591.

A registration is only good for the issuer that made it (MCP spec,
"Authorization Server Binding") and for the exact redirect URI it lists,
since some servers compare the loopback port too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from ..errors import BadResponse, InvalidURL, RegistrationError, UsageError, describe_remote_text
from ..secret import Secret
from .discovery import AuthServerMetadata
from .http import HttpRequest, HttpResponse, json_request

__all__ = [
    "ClientRegistration",
    "RegistrationMethod",
    "choose_method",
    "preregistered",
    "metadata_document_client",
    "registration_request",
    "parse_registration_response",
    "CLIENT_NAME",
]

CLIENT_NAME = "MCP Token Broker"
RegistrationMethod = Literal["preregistered", "metadata_document", "dynamic"]


@dataclass(frozen=True)
class ClientRegistration:
    issuer: str
    client_id: str
    method: RegistrationMethod
    redirect_uri: str
    token_endpoint_auth_method: str = "none"
    client_secret: Secret | None = field(default=None, repr=False)
    client_secret_expires_at: int | None = None
    registration_access_token: Secret | None = field(default=None, repr=False)
    registration_client_uri: str | None = None

    def expired(self, now: float) -> bool:
        expires = self.client_secret_expires_at  # 0 or None: the secret never expires (RFC 7591)
        return expires is not None and expires != 0 and now >= expires

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "client_id": self.client_id,
            "method": self.method,
            "redirect_uri": self.redirect_uri,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "client_secret": self.client_secret.reveal() if self.client_secret else None,
            "client_secret_expires_at": self.client_secret_expires_at,
            "registration_access_token": (
                self.registration_access_token.reveal() if self.registration_access_token else None
            ),
            "registration_client_uri": self.registration_client_uri,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientRegistration:
        secret = data.get("client_secret")
        rat = data.get("registration_access_token")
        return cls(
            issuer=data["issuer"],
            client_id=data["client_id"],
            method=data["method"],
            redirect_uri=data["redirect_uri"],
            token_endpoint_auth_method=data.get("token_endpoint_auth_method", "none"),
            client_secret=Secret(secret) if secret else None,
            client_secret_expires_at=data.get("client_secret_expires_at"),
            registration_access_token=Secret(rat) if rat else None,
            registration_client_uri=data.get("registration_client_uri"),
        )


def choose_method(
    server: AuthServerMetadata, *, client_id: str | None, client_metadata_url: str | None
) -> RegistrationMethod:
    """The spec's priority: pre-registered, metadata document, then DCR."""
    if client_id:
        return "preregistered"
    if client_metadata_url and server.client_id_metadata_document_supported:
        return "metadata_document"
    if server.registration_endpoint:
        return "dynamic"
    if client_metadata_url:
        raise RegistrationError(
            f"{server.issuer} does not accept client ID metadata documents and offers no dynamic registration; "
            "register a client with the provider and pass --client-id"
        )
    raise RegistrationError(
        f"{server.issuer} offers no dynamic client registration; register a client with the provider "
        "and pass --client-id (and --client-secret-stdin if it has a secret)"
    )


def _secret_auth_method(server: AuthServerMetadata) -> str:
    supported = server.token_endpoint_auth_methods_supported or ("client_secret_basic",)
    for method in ("client_secret_basic", "client_secret_post"):
        if method in supported:
            return method
    raise RegistrationError(
        f"{server.issuer} supports neither client_secret_basic nor client_secret_post for a client secret"
    )


def preregistered(
    server: AuthServerMetadata, *, client_id: str, client_secret: Secret | None, redirect_uri: str
) -> ClientRegistration:
    return ClientRegistration(
        issuer=server.issuer,
        client_id=client_id,
        method="preregistered",
        redirect_uri=redirect_uri,
        token_endpoint_auth_method=_secret_auth_method(server) if client_secret else "none",
        client_secret=client_secret,
    )


def metadata_document_client(server: AuthServerMetadata, *, url: str, redirect_uri: str) -> ClientRegistration:
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.path in ("", "/"):
        raise InvalidURL(
            "a client ID metadata document URL must be https with a path, e.g. https://example.com/client.json"
        )
    return ClientRegistration(
        issuer=server.issuer, client_id=url, method="metadata_document", redirect_uri=redirect_uri
    )


def registration_request(
    server: AuthServerMetadata, *, redirect_uri: str, scope: tuple[str, ...], extra_grants: tuple[str, ...] = ()
) -> HttpRequest:
    """An RFC 7591 request for a public native client; `extra_grants` adds
    grant types (the device grant, which servers only allow clients that
    registered it)."""
    if not server.registration_endpoint:
        raise UsageError("the authorization server has no registration endpoint")
    body: dict[str, Any] = {
        "client_name": CLIENT_NAME,
        "application_type": "native",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token", *extra_grants],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    # Some servers (the MCP SDKs') restrict a client to the scopes it registered.
    # Only send scopes the server lists, since others reject unknown ones.
    if scope and server.scopes_supported is not None and set(scope) <= set(server.scopes_supported):
        body["scope"] = " ".join(scope)
    return json_request(server.registration_endpoint, "registration endpoint", body)


def parse_registration_response(
    response: HttpResponse, *, server: AuthServerMetadata, redirect_uri: str, now: float | None = None
) -> ClientRegistration:
    where = "registration endpoint"
    if response.status not in (200, 201):
        detail = ""
        try:
            doc = response.json_object(where)
            if isinstance(doc.get("error"), str):
                detail = f": {describe_remote_text(doc['error'], 64)}"
                if isinstance(doc.get("error_description"), str):
                    detail += f" ({describe_remote_text(doc['error_description'])})"
        except BadResponse:
            pass
        raise RegistrationError(f"dynamic registration at {server.issuer} failed with HTTP {response.status}{detail}")
    doc = response.json_object(where)
    client_id = doc.get("client_id")
    if not isinstance(client_id, str) or not client_id or len(client_id) > 1024:
        raise RegistrationError(f"{where} returned no usable client_id")
    uris = doc.get("redirect_uris")
    if uris is not None and (not isinstance(uris, list) or redirect_uri not in uris):
        raise RegistrationError(f"{where} did not accept the redirect URI {redirect_uri}")
    method = doc.get("token_endpoint_auth_method", "none")
    secret = doc.get("client_secret")
    if secret is not None and not isinstance(secret, str):
        raise RegistrationError(f"{where} returned an invalid client_secret")
    if method not in ("none", "client_secret_basic", "client_secret_post"):
        raise RegistrationError(f"{where} assigned the unsupported auth method {describe_remote_text(method, 40)!r}")
    if method != "none" and not secret:
        raise RegistrationError(f"{where} requires a client secret but sent none")
    expires = doc.get("client_secret_expires_at")
    if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
        expires = None
    rat = doc.get("registration_access_token")
    rcu = doc.get("registration_client_uri")
    return ClientRegistration(
        issuer=server.issuer,
        client_id=client_id,
        method="dynamic",
        redirect_uri=redirect_uri,
        token_endpoint_auth_method=method,
        client_secret=Secret(secret) if secret else None,
        client_secret_expires_at=expires or None,
        registration_access_token=Secret(rat) if isinstance(rat, str) and rat else None,
        registration_client_uri=rcu if isinstance(rcu, str) else None,
    )
