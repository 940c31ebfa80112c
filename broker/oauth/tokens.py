"""Token endpoint and revocation requests, and the checks on what comes back.

Pure functions: they build `HttpRequest`s and read `HttpResponse`s.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from ..errors import BadResponse, describe_remote_text, oauth_error
from ..secret import Secret
from .discovery import AuthServerMetadata
from .http import HttpRequest, HttpResponse, form_request
from .registration import ClientRegistration

__all__ = [
    "TokenSet",
    "code_exchange_request",
    "refresh_request",
    "revocation_request",
    "revocation_shapes",
    "parse_token_response",
    "read_revocation_response",
    "revocation_wants_body_credentials",
    "client_auth",
    "token_error",
]

#: `expires_in` above this (ten years) is treated as nonsense.
MAX_EXPIRES_IN = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class TokenSet:
    access_token: Secret = field(repr=False)
    token_type: str
    expires_at: int | None
    scope: tuple[str, ...]
    refresh_token: Secret | None = field(repr=False)
    obtained_at: int

    def expires_within(self, seconds: float, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - now <= seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token.reveal(),
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "scope": list(self.scope),
            "refresh_token": self.refresh_token.reveal() if self.refresh_token else None,
            "obtained_at": self.obtained_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSet:
        refresh = data.get("refresh_token")
        return cls(
            access_token=Secret(data["access_token"]),
            token_type=data["token_type"],
            expires_at=data.get("expires_at"),
            scope=tuple(data.get("scope") or ()),
            refresh_token=Secret(refresh) if refresh else None,
            obtained_at=data["obtained_at"],
        )


def client_auth(registration: ClientRegistration, fields: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Add client authentication (RFC 6749 section 2.3) to a form; return extra headers."""
    method = registration.token_endpoint_auth_method
    secret = registration.client_secret
    # client_id goes in the form with every method. Beside HTTP Basic it is the
    # same identity, not a second credential (RFC 6749 section 3.2.1 lets a
    # client send it), and the MCP SDKs' token handlers refuse a request
    # without it ("Missing client_id").
    fields["client_id"] = registration.client_id
    if method == "client_secret_basic" and secret:
        # RFC 6749 section 2.3.1: form-urlencode both parts before Basic.
        raw = f"{quote(registration.client_id, safe='')}:{quote(secret.reveal(), safe='')}"
        return (("Authorization", "Basic " + base64.b64encode(raw.encode()).decode()),)
    if method == "client_secret_post" and secret:
        fields["client_secret"] = secret.reveal()
    return ()


def code_exchange_request(
    server: AuthServerMetadata,
    registration: ClientRegistration,
    *,
    code: Secret,
    code_verifier: Secret,
    redirect_uri: str,
    resource: str | None,
) -> HttpRequest:
    fields = {
        "grant_type": "authorization_code",
        "code": code.reveal(),
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier.reveal(),
    }
    if resource:
        fields["resource"] = resource
    headers = client_auth(registration, fields)
    return form_request(server.token_endpoint, "token endpoint", fields, headers)


def refresh_request(
    server: AuthServerMetadata,
    registration: ClientRegistration,
    *,
    refresh_token: Secret,
    resource: str | None,
) -> HttpRequest:
    fields = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
    if resource:
        fields["resource"] = resource
    headers = client_auth(registration, fields)
    return form_request(server.token_endpoint, "token endpoint", fields, headers)


def revocation_request(
    server: AuthServerMetadata,
    registration: ClientRegistration,
    token: Secret,
    hint: str,
    *,
    shape: int = 0,
) -> HttpRequest:
    """An RFC 7009 revocation request, in the `shape`-th of the shapes that
    `revocation_shapes` lists for this client.

    Shape 0 is the standard one. RFC 7009 section 2.1 has the client
    authenticate as at the token endpoint, so it follows the registered
    `token_endpoint_auth_method` (HTTP Basic, the body, or nothing), and
    adds `client_id` to the body: RFC 6749 section 3.2.1 lets a client
    identify itself that way, and beside Basic it repeats the same identity
    rather than adding a second credential, which section 2.3 forbids
    (oidc-provider checks that the two agree).

    The other shapes are fallbacks, one request each, after a 400 or 401,
    for the MCP SDKs' handlers:
    - 1: the same authentication plus a `client_secret` field: the secret
      for client_secret_post, empty otherwise (RFC 6749 section 2.3.1 lets
      an empty secret be sent). The Python SDK's revocation form requires
      the field even from a public client or beside Basic.
    - 2 (Basic clients only): client_secret_post, no Authorization header.
      The TypeScript SDK reads a secret only from the body.
    The secret is never sent in two places at once, and a server that
    accepts the standard shape never sees another one.
    """
    if not server.revocation_endpoint:
        raise ValueError("the server offers no revocation endpoint")
    fields = {"token": token.reveal(), "token_type_hint": hint}
    secret = registration.client_secret
    if shape == 2 and registration.token_endpoint_auth_method == "client_secret_basic":
        fields["client_id"] = registration.client_id
        fields["client_secret"] = secret.reveal() if secret else ""
        return form_request(server.revocation_endpoint, "revocation endpoint", fields, ())
    headers = client_auth(registration, fields)
    if shape >= 1:
        fields.setdefault("client_secret", "")
    return form_request(server.revocation_endpoint, "revocation endpoint", fields, headers)


def revocation_shapes(registration: ClientRegistration) -> int:
    """How many shapes `revocation_request` has for this client."""
    method, secret = registration.token_endpoint_auth_method, registration.client_secret
    if method == "client_secret_basic" and secret:
        return 3
    return 1 if method == "client_secret_post" and secret else 2  # post already has the field


def revocation_wants_body_credentials(response: HttpResponse) -> bool:
    """Whether a refused revocation is worth a retry in the next shape:
    a 401, or a 400 that is not about the token (`unsupported_token_type`
    is the server's answer for that token, whatever the shape)."""
    if response.status == 401:
        return True
    if response.status != 400:
        return False
    try:
        error = response.json_object("revocation endpoint").get("error")
    except BadResponse:
        return True
    return error != "unsupported_token_type"


def token_error(response: HttpResponse, where: str) -> Exception:
    """The error a refused token-endpoint-style request means: the server's
    OAuth error, or a `BadResponse` when it sent none."""
    return _error_from(response, where)


def _error_from(response: HttpResponse, where: str) -> Exception:
    try:
        doc = response.json_object(where)
    except BadResponse:
        return BadResponse(f"{where} answered HTTP {response.status} without an OAuth error")
    error = doc.get("error")
    if not isinstance(error, str) or not error:
        return BadResponse(f"{where} answered HTTP {response.status} without an OAuth error")
    description = doc.get("error_description")
    return oauth_error(error, description if isinstance(description, str) else None, where=where)


def parse_token_response(
    response: HttpResponse,
    *,
    now: float,
    requested_scope: tuple[str, ...],
    previous: TokenSet | None = None,
) -> TokenSet:
    """Validate a token response (RFC 6749 section 5).

    `previous` is the set being refreshed: its refresh token and scope carry
    over when the server leaves them out, and a new refresh token, when sent,
    always replaces it (rotation).
    """
    where = "token endpoint"
    if response.status != 200:
        raise _error_from(response, where)
    doc = response.json_object(where)
    token_type = doc.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise BadResponse(
            f"{where} issued a token of type {describe_remote_text(token_type, 40)!r}; only Bearer is supported"
        )
    access = doc.get("access_token")
    if not isinstance(access, str) or not access:
        raise BadResponse(f"{where} returned no access_token")
    expires_in = doc.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)  # tolerated: some servers send a string
    if expires_in is None:
        expires_at = None
    elif isinstance(expires_in, int) and not isinstance(expires_in, bool) and 0 < expires_in <= MAX_EXPIRES_IN:
        expires_at = int(now) + expires_in
    else:
        raise BadResponse(f"{where} returned an invalid expires_in")
    scope_value = doc.get("scope")
    if isinstance(scope_value, str):
        scope = tuple(scope_value.split())
    elif scope_value is None:
        # RFC 6749 section 5.1: omitted means "as requested" (or as before).
        scope = previous.scope if previous is not None else requested_scope
    else:
        raise BadResponse(f"{where} returned a scope that is not a string")
    refresh = doc.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        raise BadResponse(f"{where} returned an invalid refresh_token")
    new = TokenSet(
        access_token=Secret(access),
        token_type="Bearer",
        expires_at=expires_at,
        scope=scope,
        refresh_token=Secret(refresh) if refresh else None,
        obtained_at=int(now),
    )
    if refresh is None and previous is not None:
        new = replace(new, refresh_token=previous.refresh_token)
    return new


def read_revocation_response(response: HttpResponse) -> None:
    """RFC 7009 section 2.2: 200 means revoked (or already invalid)."""
    if response.status == 200:
        return
    raise _error_from(response, "revocation endpoint")
