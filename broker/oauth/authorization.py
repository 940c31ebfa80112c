"""The authorization request and the validation of its response.

`start_authorization` makes the per-flow record the MCP spec asks for: PKCE
verifier, `state` and the expected issuer, kept together. `validate_callback`
applies, in order: `state` (constant-time), then `iss` per RFC 9207 and the
MCP table, then `error`, then `code`. On an `iss` mismatch nothing from the
response is shown, since it may come from a mixed-up or hostile server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..errors import (
    BadResponse,
    IssuerMismatchInCallback,
    StateMismatch,
    describe_remote_text,
    oauth_error,
)
from ..secret import Secret
from .discovery import AuthServerMetadata

__all__ = [
    "PendingAuthorization",
    "pkce_pair",
    "start_authorization",
    "validate_callback",
    "callback_params_from_url",
]

#: Bytes of randomness in `state` (256 bits, above the 128 the issue asks for).
STATE_BYTES = 32
#: Bytes of randomness in the PKCE verifier (43 base64url characters minimum).
VERIFIER_BYTES = 48
MAX_CALLBACK_PARAMS = 32
MAX_PARAM_LENGTH = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[Secret, str]:
    """(verifier, S256 challenge) per RFC 7636 section 4.1-4.2."""
    verifier = _b64url(secrets.token_bytes(VERIFIER_BYTES))
    challenge = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    return Secret(verifier), challenge


@dataclass(frozen=True)
class PendingAuthorization:
    """Everything one browser round trip needs to remember."""

    url: str
    redirect_uri: str
    client_id: str
    issuer: str
    iss_parameter_supported: bool
    resource: str | None
    scope: tuple[str, ...]
    state: Secret = field(repr=False)
    code_verifier: Secret = field(repr=False)


def start_authorization(
    server: AuthServerMetadata,
    *,
    client_id: str,
    redirect_uri: str,
    scope: tuple[str, ...],
    resource: str | None,
) -> PendingAuthorization:
    verifier, challenge = pkce_pair()
    state = _b64url(secrets.token_bytes(STATE_BYTES))
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if scope:
        params["scope"] = " ".join(scope)
    if resource:
        params["resource"] = resource
    if "offline_access" in scope:
        # OIDC Core 11: offline_access is ignored unless consent is prompted.
        params["prompt"] = "consent"
    endpoint = server.authorization_endpoint
    sep = "&" if urlsplit(endpoint).query else "?"
    return PendingAuthorization(
        url=f"{endpoint}{sep}{urlencode(params)}",
        redirect_uri=redirect_uri,
        client_id=client_id,
        issuer=server.issuer,
        iss_parameter_supported=server.iss_parameter_supported,
        resource=resource,
        scope=scope,
        state=Secret(state),
        code_verifier=verifier,
    )


def callback_params_from_url(url: str) -> dict[str, str]:
    """Query parameters of a redirect URL, with duplicates and excess refused.

    Every refusal is a `BadResponse`: the listener answers it with a 400 page
    and the paste reader reports it, and both keep waiting for the real one.
    """
    try:
        query = urlsplit(url).query
    except ValueError:
        raise BadResponse("the authorization response is not a valid URL") from None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=MAX_CALLBACK_PARAMS)
    except ValueError:
        raise BadResponse(
            f"the authorization response has too many parameters (more than {MAX_CALLBACK_PARAMS})"
        ) from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise BadResponse(f"the authorization response repeats `{describe_remote_text(key, 40)}`")
        if len(value) > MAX_PARAM_LENGTH:
            raise BadResponse("the authorization response has an oversized parameter")
        params[key] = value
    return params


def validate_callback(pending: PendingAuthorization, params: Mapping[str, str]) -> Secret:
    """Return the authorization code, or raise a typed error."""
    state = params.get("state", "")
    if not hmac.compare_digest(state.encode(), pending.state.reveal().encode()):
        raise StateMismatch("the authorization response does not belong to this login (state mismatch)")

    iss = params.get("iss")
    if iss is not None:
        # RFC 9207 section 2.4: simple string comparison, no normalization.
        if iss != pending.issuer:
            raise IssuerMismatchInCallback(
                f"the authorization response came from a different issuer than {pending.issuer}; "
                "it was discarded (possible mix-up attack, RFC 9207)"
            )
    elif pending.iss_parameter_supported:
        raise IssuerMismatchInCallback(
            f"the authorization response lacks `iss` although {pending.issuer} promises it; it was discarded"
        )

    if "error" in params:
        raise oauth_error(params["error"], params.get("error_description"), where="authorization server")
    code = params.get("code")
    if not code:
        raise BadResponse("the authorization response carries neither a code nor an error")
    return Secret(code)
