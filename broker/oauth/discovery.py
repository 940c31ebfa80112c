"""Discovery, as pure steps: MCP server URL -> resource metadata -> AS metadata.

Order follows the MCP authorization spec (2026-07-28):

1. An unauthenticated MCP request; a 401 may name `resource_metadata` and
   `scope` in its Bearer challenge.
2. Protected resource metadata (RFC 9728): the challenge's URL if given, else
   the path-inserted well-known URI, then the root one.
3. Authorization server metadata for the first listed issuer: RFC 8414 with
   path insertion, OIDC with path insertion, OIDC path appended (issuers with
   a path); RFC 8414 then OIDC (issuers without).

Every document is validated before use: the `issuer` must equal, as a plain
string, the issuer the URL was built from; `S256` must be offered; every
endpoint must be https (or loopback http).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..errors import (
    DiscoveryError,
    InvalidURL,
    IssuerMismatch,
    PKCEUnsupported,
    ResourceMismatch,
    UnsafeEndpoint,
    describe_remote_text,
)
from .challenge import BearerChallenge, bearer_challenge
from .http import HttpRequest, HttpResponse
from .urls import canonical_server_url, check_endpoint_url, path_inserted

__all__ = [
    "ProbeResult",
    "ResourceMetadata",
    "AuthServerMetadata",
    "probe_request",
    "read_probe",
    "resource_metadata_urls",
    "metadata_request",
    "parse_resource_metadata",
    "auth_server_metadata_urls",
    "parse_auth_server_metadata",
    "choose_scopes",
]

_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "mcp-token-broker", "version": "probe"},
    },
}


@dataclass(frozen=True)
class ProbeResult:
    status: int
    challenge: BearerChallenge | None


@dataclass(frozen=True)
class ResourceMetadata:
    resource: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...] | None
    url: str


@dataclass(frozen=True)
class AuthServerMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None
    revocation_endpoint: str | None
    scopes_supported: tuple[str, ...] | None
    code_challenge_methods_supported: tuple[str, ...]
    token_endpoint_auth_methods_supported: tuple[str, ...] | None
    grant_types_supported: tuple[str, ...] | None
    iss_parameter_supported: bool
    client_id_metadata_document_supported: bool
    #: Which well-known document answered.
    source: Literal["oauth", "openid"]
    url: str
    #: RFC 8628: where a login without a browser on this machine starts.
    device_authorization_endpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "registration_endpoint": self.registration_endpoint,
            "revocation_endpoint": self.revocation_endpoint,
            "scopes_supported": list(self.scopes_supported) if self.scopes_supported is not None else None,
            "code_challenge_methods_supported": list(self.code_challenge_methods_supported),
            "token_endpoint_auth_methods_supported": (
                list(self.token_endpoint_auth_methods_supported)
                if self.token_endpoint_auth_methods_supported is not None
                else None
            ),
            "grant_types_supported": list(self.grant_types_supported)
            if self.grant_types_supported is not None
            else None,
            "authorization_response_iss_parameter_supported": self.iss_parameter_supported,
            "client_id_metadata_document_supported": self.client_id_metadata_document_supported,
            "source": self.source,
            "url": self.url,
            "device_authorization_endpoint": self.device_authorization_endpoint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuthServerMetadata:
        def tup(key: str) -> tuple[str, ...] | None:
            value = data.get(key)
            return tuple(value) if value is not None else None

        return cls(
            issuer=data["issuer"],
            authorization_endpoint=data["authorization_endpoint"],
            token_endpoint=data["token_endpoint"],
            registration_endpoint=data.get("registration_endpoint"),
            revocation_endpoint=data.get("revocation_endpoint"),
            scopes_supported=tup("scopes_supported"),
            code_challenge_methods_supported=tuple(data.get("code_challenge_methods_supported") or ()),
            token_endpoint_auth_methods_supported=tup("token_endpoint_auth_methods_supported"),
            grant_types_supported=tup("grant_types_supported"),
            iss_parameter_supported=bool(data.get("authorization_response_iss_parameter_supported")),
            client_id_metadata_document_supported=bool(data.get("client_id_metadata_document_supported")),
            source=data.get("source", "oauth"),
            url=data.get("url", ""),
            device_authorization_endpoint=data.get("device_authorization_endpoint"),
        )


# -- step 1: the unauthenticated probe ---------------------------------------


def probe_request(server_url: str) -> HttpRequest:
    return HttpRequest(
        "POST",
        server_url,
        "MCP server",
        (
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2025-06-18"),
        ),
        json.dumps(_INITIALIZE).encode(),
    )


def read_probe(response: HttpResponse) -> ProbeResult:
    if 200 <= response.status < 300:
        raise DiscoveryError(
            "the MCP server answered without asking for authorization; it needs no tokens from the broker"
        )
    challenge = bearer_challenge(response.header_all("www-authenticate")) if response.status in (401, 403) else None
    return ProbeResult(response.status, challenge)


# -- step 2: protected resource metadata (RFC 9728) --------------------------


def resource_metadata_urls(server_url: str, probe: ProbeResult) -> list[str]:
    if probe.challenge and probe.challenge.resource_metadata:
        return [probe.challenge.resource_metadata]
    urls = [path_inserted(server_url, "oauth-protected-resource")]
    root = path_inserted(_root(server_url), "oauth-protected-resource")
    if root not in urls:
        urls.append(root)
    return urls


def metadata_request(url: str, purpose: str) -> HttpRequest:
    return HttpRequest("GET", url, purpose, (("Accept", "application/json"),))


def _root(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _str_list(doc: dict[str, Any], key: str, what: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DiscoveryError(f"{what}: `{key}` is not a list of strings")
    return tuple(value)


def _same_resource(resource: str, server_url: str) -> bool:
    """RFC 9728 section 3.3: the metadata's `resource` must be identical to the
    server's resource identifier. A parent path (`https://h` for `https://h/mcp`)
    would have the token issued for a wider audience than this server, so
    it is refused. Only what URI comparison treats as equal is tolerated:
    the case of scheme and host, a default port and a trailing slash."""
    try:
        return _comparable(resource) == _comparable(server_url)
    except InvalidURL:
        return False


def _comparable(url: str) -> str:
    parts = urlsplit(canonical_server_url(url))
    netloc = parts.netloc
    if (parts.scheme, parts.port) in (("https", 443), ("http", 80)):
        netloc = netloc.rsplit(":", 1)[0]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def parse_resource_metadata(response: HttpResponse, url: str, server_url: str) -> ResourceMetadata | None:
    """Parse a PRM document; `None` means "not here, try the next URL"."""
    what = "the protected resource metadata"
    if response.status in (404, 405, 410) or 300 <= response.status < 400:
        return None
    if response.status != 200:
        raise DiscoveryError(f"{what} at {url} answered HTTP {response.status}")
    doc = response.json_object(what)
    resource = doc.get("resource")
    if not isinstance(resource, str) or not resource:
        raise DiscoveryError(f"{what} has no `resource`")
    if not _same_resource(resource, server_url):
        raise ResourceMismatch(
            f"{what} is for {describe_remote_text(resource)}, not for {server_url}; refusing to use it"
        )
    servers = _str_list(doc, "authorization_servers", what)
    if not servers:
        raise DiscoveryError(f"{what} lists no authorization server")
    for server in servers:
        try:
            check_endpoint_url(server, "an authorization server in the resource metadata")
        except UnsafeEndpoint:
            raise
    return ResourceMetadata(
        resource=resource,
        authorization_servers=servers,
        scopes_supported=_str_list(doc, "scopes_supported", what),
        url=url,
    )


# -- step 3: authorization server metadata -----------------------------------


def auth_server_metadata_urls(issuer: str) -> list[tuple[str, Literal["oauth", "openid"]]]:
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    if path:
        return [
            (path_inserted(issuer, "oauth-authorization-server"), "oauth"),
            (path_inserted(issuer, "openid-configuration"), "openid"),
            (issuer.rstrip("/") + "/.well-known/openid-configuration", "openid"),
        ]
    return [
        (path_inserted(issuer, "oauth-authorization-server"), "oauth"),
        (path_inserted(issuer, "openid-configuration"), "openid"),
    ]


def _endpoint(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    return check_endpoint_url(value, f"`{key}` in the authorization server metadata")


def _required_endpoint(doc: dict[str, Any], key: str) -> str:
    value = _endpoint(doc, key)
    if value is None:
        raise DiscoveryError(f"the authorization server metadata has no `{key}`")
    return value


def parse_auth_server_metadata(
    response: HttpResponse, url: str, source: Literal["oauth", "openid"], issuer: str
) -> AuthServerMetadata | None:
    """Parse and validate AS metadata; `None` means "try the next URL"."""
    what = "the authorization server metadata"
    if response.status in (400, 404, 405, 410) or 300 <= response.status < 400:
        return None
    if response.status != 200:
        raise DiscoveryError(f"{what} at {url} answered HTTP {response.status}")
    doc = response.json_object(what)
    got = doc.get("issuer")
    if got != issuer:
        raise IssuerMismatch(
            f"{what} at {url} claims issuer {describe_remote_text(got)!r}, "
            f"but it was fetched for {issuer!r}; refusing to use it (RFC 8414 section 3.3)"
        )
    methods = _str_list(doc, "code_challenge_methods_supported", what)
    if not methods or "S256" not in methods:
        raise PKCEUnsupported(
            f"the authorization server {issuer} does not advertise PKCE with S256 "
            "(`code_challenge_methods_supported`); the MCP spec forbids proceeding"
        )
    response_types = _str_list(doc, "response_types_supported", what)
    if response_types is not None and "code" not in response_types:
        raise DiscoveryError(f"the authorization server {issuer} does not offer the authorization code flow")
    return AuthServerMetadata(
        issuer=issuer,
        authorization_endpoint=_required_endpoint(doc, "authorization_endpoint"),
        token_endpoint=_required_endpoint(doc, "token_endpoint"),
        registration_endpoint=_endpoint(doc, "registration_endpoint"),
        revocation_endpoint=_endpoint(doc, "revocation_endpoint"),
        scopes_supported=_str_list(doc, "scopes_supported", what),
        code_challenge_methods_supported=methods,
        token_endpoint_auth_methods_supported=_str_list(doc, "token_endpoint_auth_methods_supported", what),
        grant_types_supported=_str_list(doc, "grant_types_supported", what),
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
        client_id_metadata_document_supported=doc.get("client_id_metadata_document_supported") is True,
        source=source,
        url=url,
        device_authorization_endpoint=_endpoint(doc, "device_authorization_endpoint"),
    )


# -- scope selection ----------------------------------------------------------


def choose_scopes(
    requested: tuple[str, ...],
    probe: ProbeResult | None,
    resource: ResourceMetadata | None,
    server: AuthServerMetadata,
) -> tuple[str, ...]:
    """The MCP spec's order: the user's choice, the challenge, then PRM
    `scopes_supported`; plus `offline_access` when the AS offers it, since the
    broker exists to refresh."""
    if requested:
        scopes = list(requested)
    elif probe and probe.challenge and probe.challenge.scope is not None:
        scopes = list(probe.challenge.scope)
    elif resource and resource.scopes_supported is not None:
        scopes = list(resource.scopes_supported)
    else:
        scopes = []
    if server.scopes_supported and "offline_access" in server.scopes_supported and "offline_access" not in scopes:
        scopes.append("offline_access")
    return tuple(dict.fromkeys(scopes))
