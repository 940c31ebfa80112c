"""The body of `POST /v1/connections/NAME/adopt`: a token set and the client
registration it belongs to, which another tool obtained (mcp-remote) and
`import --from mcp-remote` read from its files.

The service puts them into the vault, and from there they go into
Authorization headers and token requests. So every field is checked before
anything is stored: known keys only, the types the vault keeps, tokens of
visible ASCII (no space or line break can smuggle a header), sizes capped.
A refusal names the field, never its value.
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..oauth.registration import ClientRegistration
from ..oauth.tokens import TokenSet
from ..secret import Secret
from ..stepup import check_scopes

__all__ = ["AUTH_METHODS", "adoption_body", "read_adoption"]

#: The client authentication methods an adopted registration may use.
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
_MAX_TOKEN = 16 * 1024
_MAX_TEXT = 2048
_MAX_SCOPES = 64
_MAX_TIME = 2**40  # Unix seconds; far beyond any real expiry
_VISIBLE = frozenset(chr(c) for c in range(0x21, 0x7F))
_TOKEN_KEYS = frozenset({"access_token", "token_type", "expires_at", "scope", "refresh_token", "obtained_at"})
_REGISTRATION_KEYS = frozenset(
    {
        "issuer",
        "client_id",
        "method",
        "redirect_uri",
        "token_endpoint_auth_method",
        "client_secret",
        "client_secret_expires_at",
        "registration_access_token",
        "registration_client_uri",
    }
)


def adoption_body(tokens: TokenSet, registration: ClientRegistration) -> dict[str, Any]:
    """What `import` sends (it holds secrets: never log it)."""
    return {"tokens": tokens.to_json(), "registration": registration.to_json()}


def _refuse(field: str, what: str) -> UsageError:
    return UsageError(f"adopt: {field} {what}")


def _object(value: object, field: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(field, "must be a JSON object")
    unknown = sorted(str(k)[:40] for k in value if k not in keys)
    if unknown:
        raise _refuse(field, f"has unknown keys: {', '.join(unknown)}")
    return value


def _secret(doc: dict[str, Any], field: str, *, required: bool, chars: frozenset[str] = _VISIBLE) -> Secret | None:
    value = doc.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _refuse(field, "must be a non-empty string")
    if len(value) > _MAX_TOKEN:
        raise _refuse(field, f"is longer than {_MAX_TOKEN} characters")
    if not chars.issuperset(value):
        raise _refuse(field, "may hold only visible ASCII characters (no spaces or line breaks)")
    return Secret(value)


def _text(doc: dict[str, Any], field: str, *, required: bool = True, empty: bool = False) -> str | None:
    value = doc.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (not value and not empty):
        raise _refuse(field, "must be a non-empty string")
    if len(value) > _MAX_TEXT or not (_VISIBLE | {" "}).issuperset(value):
        raise _refuse(field, f"must be printable ASCII of at most {_MAX_TEXT} characters")
    return value


def _time(doc: dict[str, Any], field: str, *, required: bool) -> int | None:
    value = doc.get(field)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_TIME:
        raise _refuse(field, "must be a whole number of Unix seconds")
    return value


def _tokens(value: object) -> TokenSet:
    doc = _object(value, "tokens", _TOKEN_KEYS)
    token_type = doc.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise _refuse("token_type", 'must be "Bearer"')
    scope = check_scopes(doc.get("scope", []), _MAX_SCOPES, allow_empty=True)
    if scope is None:
        raise _refuse("scope", f"must be a list of at most {_MAX_SCOPES} OAuth scope tokens (RFC 6749 3.3)")
    access = _secret(doc, "access_token", required=True)
    assert access is not None
    obtained_at = _time(doc, "obtained_at", required=True)
    assert obtained_at is not None
    return TokenSet(
        access_token=access,
        token_type="Bearer",
        expires_at=_time(doc, "expires_at", required=False),
        scope=scope,
        refresh_token=_secret(doc, "refresh_token", required=False),
        obtained_at=obtained_at,
    )


def _registration(value: object) -> ClientRegistration:
    doc = _object(value, "registration", _REGISTRATION_KEYS)
    if doc.get("method") != "dynamic":
        raise _refuse("method", 'must be "dynamic" (mcp-remote registers its client dynamically)')
    method = doc.get("token_endpoint_auth_method", "none")
    if method not in AUTH_METHODS:
        raise _refuse("token_endpoint_auth_method", f"must be one of {', '.join(AUTH_METHODS)}")
    visible_or_space = _VISIBLE | {" "}
    client_id = _secret(doc, "client_id", required=True, chars=visible_or_space)
    assert client_id is not None
    issuer = _text(doc, "issuer")
    assert issuer is not None
    return ClientRegistration(
        issuer=issuer,
        client_id=client_id.reveal(),
        method="dynamic",
        redirect_uri=_text(doc, "redirect_uri", empty=True) or "",
        token_endpoint_auth_method=str(method),
        client_secret=_secret(doc, "client_secret", required=False, chars=visible_or_space),
        client_secret_expires_at=_time(doc, "client_secret_expires_at", required=False),
        registration_access_token=_secret(doc, "registration_access_token", required=False),
        registration_client_uri=_text(doc, "registration_client_uri", required=False),
    )


def read_adoption(body: object) -> tuple[TokenSet, ClientRegistration]:
    """The checked token set and registration of an adopt request; `UsageError` otherwise."""
    doc = _object(body, "the body", frozenset({"tokens", "registration"}))
    for key in ("tokens", "registration"):
        if key not in doc:
            raise _refuse("the body", f'needs "{key}"')
    return _tokens(doc["tokens"]), _registration(doc["registration"])
