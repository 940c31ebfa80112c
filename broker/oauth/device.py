"""The device authorization grant (RFC 8628), as pure steps.

For a login where no browser runs on this machine (over SSH, in a
container): the authorization server hands out a short `user_code` and a
`verification_uri`; the user opens that on any device, enters the code and
logs in, while the broker polls the token endpoint with the `device_code`.

Everything here builds `HttpRequest`s, reads `HttpResponse`s and keeps the
polling rules (`DevicePoller`): the advertised `interval` (5 s when absent),
`slow_down` adding 5 s to it for good (section 3.5), `authorization_pending`
meaning "ask again", and the `expires_in` deadline. The waiting itself is a
step (`Wait`) that the driver answers, so tests drive it with no clock.

The `device_code` is a credential: it stays in a `Secret`. The `user_code`
is shown to the user, which is its purpose, but is not logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import BadResponse, DeviceCodeExpired, OAuthError
from ..secret import Secret
from .discovery import AuthServerMetadata
from .http import HttpRequest, HttpResponse, form_request
from .registration import ClientRegistration
from .tokens import TokenSet, client_auth, parse_token_response, token_error
from .urls import check_endpoint_url

__all__ = [
    "DEVICE_GRANT",
    "DeviceAuthorization",
    "DevicePoller",
    "PollAnswer",
    "Wait",
    "device_authorization_request",
    "device_token_request",
    "parse_device_authorization",
    "read_poll",
]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: RFC 8628 section 3.2: poll every 5 s when the server names no interval.
DEFAULT_INTERVAL = 5
#: Section 3.5: each `slow_down` adds 5 s, for this and every later poll.
SLOW_DOWN_STEP = 5
#: Bounds on what the server may hand out; anything outside is a bad response.
MAX_DEVICE_CODE = 4096
MAX_USER_CODE = 64
MAX_URI = 2048
MAX_INTERVAL = 300
MAX_EXPIRES_IN = 24 * 3600

PollAnswer = Literal["pending", "slow_down"]


@dataclass(frozen=True)
class Wait:
    """Wait `seconds` before the next poll (the driver sleeps; tests just record it)."""

    seconds: float


@dataclass(frozen=True)
class DeviceAuthorization:
    """A device authorization response (RFC 8628 section 3.2), checked."""

    device_code: Secret = field(repr=False)
    #: Shown to the user, never logged at info.
    user_code: str = field(repr=False)
    verification_uri: str
    verification_uri_complete: str | None = field(repr=False)
    #: When the codes expire (the clock's seconds).
    expires_at: float
    interval: int


def device_authorization_request(
    server: AuthServerMetadata,
    endpoint: str,
    registration: ClientRegistration,
    *,
    scope: tuple[str, ...],
    resource: str | None,
) -> HttpRequest:
    """Section 3.1: the client's id (and authentication, if it has a secret),
    the scopes, and the MCP server as the resource (RFC 8707)."""
    fields: dict[str, str] = {}
    if scope:
        fields["scope"] = " ".join(scope)
    if resource:
        fields["resource"] = resource
    headers = client_auth(registration, fields)
    return form_request(endpoint, "device authorization endpoint", fields, headers)


def _bounded_int(doc: dict[str, object], key: str, low: int, high: int, where: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)  # tolerated, as at the token endpoint
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadResponse(f"{where} returned an invalid {key}")
    return value


def _uri(doc: dict[str, object], key: str, where: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_URI:
        raise BadResponse(f"{where} returned an invalid {key}")
    return check_endpoint_url(value, f"`{key}` from the {where}")


def parse_device_authorization(response: HttpResponse, *, now: float) -> DeviceAuthorization:
    """Check a device authorization response: every field present, of the
    right type and size; the URIs https (or loopback http), since the user
    is sent there to log in."""
    where = "device authorization endpoint"
    if response.status != 200:
        raise token_error(response, where)
    doc = response.json_object(where)
    device_code = doc.get("device_code")
    if not isinstance(device_code, str) or not device_code or len(device_code) > MAX_DEVICE_CODE:
        raise BadResponse(f"{where} returned no usable device_code")
    user_code = doc.get("user_code")
    if (
        not isinstance(user_code, str)
        or not user_code.strip()
        or len(user_code) > MAX_USER_CODE
        or not user_code.isprintable()
    ):
        raise BadResponse(f"{where} returned no usable user_code")
    uri = _uri(doc, "verification_uri", where)
    if uri is None:
        raise BadResponse(f"{where} returned no verification_uri")
    complete = _uri(doc, "verification_uri_complete", where)
    expires_in = _bounded_int(doc, "expires_in", 1, MAX_EXPIRES_IN, where)
    if expires_in is None:
        raise BadResponse(f"{where} returned no expires_in")
    interval = _bounded_int(doc, "interval", 1, MAX_INTERVAL, where)
    return DeviceAuthorization(
        device_code=Secret(device_code),
        user_code=user_code.strip(),
        verification_uri=uri,
        verification_uri_complete=complete,
        expires_at=now + expires_in,
        interval=interval or DEFAULT_INTERVAL,
    )


def device_token_request(
    server: AuthServerMetadata, registration: ClientRegistration, *, device_code: Secret, resource: str | None
) -> HttpRequest:
    """Section 3.4: one poll of the token endpoint."""
    fields = {"grant_type": DEVICE_GRANT, "device_code": device_code.reveal()}
    if resource:
        fields["resource"] = resource
    headers = client_auth(registration, fields)
    return form_request(server.token_endpoint, "token endpoint", fields, headers)


def read_poll(response: HttpResponse, *, now: float, requested_scope: tuple[str, ...]) -> TokenSet | PollAnswer:
    """Section 3.5: the tokens, or `pending` / `slow_down` (poll again).
    `access_denied` raises `AccessDenied`, `expired_token` `DeviceCodeExpired`,
    anything else the server's OAuth error."""
    if response.status == 200:
        return parse_token_response(response, now=now, requested_scope=requested_scope)
    error = token_error(response, "token endpoint")
    code = error.error if isinstance(error, OAuthError) else None
    if code == "authorization_pending":
        return "pending"
    if code == "slow_down":
        return "slow_down"
    if code == "expired_token":
        raise DeviceCodeExpired("the device code expired before the login was completed; start again")
    raise error


class DevicePoller:
    """When to poll next: the interval (raised by `slow_down`), within the deadline."""

    def __init__(self, authorization: DeviceAuthorization) -> None:
        self.interval = authorization.interval
        self.expires_at = authorization.expires_at

    def next_wait(self, now: float) -> float:
        """Seconds to wait before the next poll; `DeviceCodeExpired` once a
        poll could only come after the code expired."""
        if now + self.interval > self.expires_at:
            raise DeviceCodeExpired("the device code expired before the login was completed; start again")
        return float(self.interval)

    def answered(self, answer: PollAnswer) -> None:
        if answer == "slow_down":
            self.interval += SLOW_DOWN_STEP

    def backoff(self) -> None:
        """After a connection failure: poll half as often (section 3.5)."""
        self.interval = min(self.interval * 2, MAX_INTERVAL)
