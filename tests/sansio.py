"""Helpers for sans-IO tests: in-memory responses and metadata documents."""

import json

from broker.oauth.discovery import parse_auth_server_metadata
from broker.oauth.http import HttpResponse

ISSUER = "https://auth.example.com"


def resp(status=200, body=None, headers=()):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    return HttpResponse(status, tuple(headers), raw)


def as_doc(**overrides):
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "registration_endpoint": f"{ISSUER}/register",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "offline_access", "files:read"],
        "authorization_response_iss_parameter_supported": True,
    }
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def as_metadata(**overrides):
    url = f"{ISSUER}/.well-known/oauth-authorization-server"
    return parse_auth_server_metadata(resp(200, as_doc(**overrides)), url, "oauth", ISSUER)
