"""The protocol's decisions as sans-IO flows, in the style of httpx's `auth_flow`.

A flow is a generator. It yields what it needs done, one step at a time, and
returns its result; it never touches the network, the browser or the store.
`broker.driver.engine.Engine` is the driver that answers each step:

    step it yields              what the driver sends back
    ─────────────────────────   ─────────────────────────────────────────────
    HttpRequest                 the HttpResponse (`Transport.send`)
    CheckEndpoint               None, after `Transport.check_url` allowed it
    FlowEvent                   None (progress, shown to the user)
    Registered                  None, once the registration is in the vault
    NeedCode                    the authorization code (a browser round trip)
    Wait                        None, after sleeping that long (device login polls)

An error the driver meets while answering (a `NetworkError`, an
`UnsafeEndpoint`, a `FlowTimeout`) is thrown into the flow at its `yield`, so
a flow handles the failures of its own steps with a plain `try`, exactly as
if it had made the call itself.

The browser round trip is a step (`NeedCode`) rather than something the flow
waits for: the login flow decides that an `invalid_client` from the token
endpoint means "register again and log in once more", and says so by
yielding `NeedCode` a second time; the driver's receiver listens again on the
same port. So the retry, the "this 4xx means the server forgot our client"
rule, the discovery fallback order and the revocation order each live in one
place here, and tests drive them by hand with in-memory responses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ..errors import (
    BadResponse,
    DeviceLoginUnsupported,
    DiscoveryError,
    InvalidClient,
    NetworkError,
    OAuthError,
    RegistrationError,
    RemoteError,
    SettingsMismatch,
)
from ..model import (
    Binding,
    ConnectionSettings,
    ConnectionState,
    Discovered,
    check_binding,
)
from ..secret import Secret
from ..timeleft import expiry
from .authorization import PendingAuthorization, start_authorization
from .device import (
    DEVICE_GRANT,
    DevicePoller,
    Wait,
    device_authorization_request,
    device_token_request,
    parse_device_authorization,
    read_poll,
)
from .discovery import (
    AuthServerMetadata,
    ResourceMetadata,
    auth_server_metadata_urls,
    choose_scopes,
    metadata_request,
    parse_auth_server_metadata,
    parse_resource_metadata,
    probe_request,
    read_probe,
    resource_metadata_urls,
)
from .http import HttpRequest, HttpResponse
from .registration import (
    ClientRegistration,
    choose_method,
    metadata_document_client,
    parse_registration_response,
    preregistered,
    registration_request,
)
from .tokens import (
    TokenSet,
    code_exchange_request,
    parse_token_response,
    read_revocation_response,
    revocation_request,
    revocation_shapes,
    revocation_wants_body_credentials,
)

__all__ = [
    "CheckEndpoint",
    "Flow",
    "FlowEvent",
    "NeedCode",
    "Registered",
    "Revocation",
    "RevocationOutcome",
    "Step",
    "Wait",
    "check_client_issuer",
    "client_recognised_flow",
    "device_login_flow",
    "disconnect_flow",
    "discovery_flow",
    "login_flow",
    "registration_flow",
    "revoke_flow",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The authorization server endpoints that discovery checks against the
#: connection's endpoint policy: the browser goes to the first, secrets to the others.
CHECKED_ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "registration_endpoint",
    "revocation_endpoint",
    "device_authorization_endpoint",
)

#: Device authorization errors that refuse a stored client (one registered before
#: it asked for the device grant): a client registered now may get through.
_CLIENT_REFUSED = frozenset({"unauthorized_client", "invalid_client", "invalid_request"})


@dataclass(frozen=True)
class FlowEvent:
    """Progress of a `connect`, for the CLI's stderr and the GUI."""

    stage: Literal[
        "discovering",
        "registering",
        "waiting_for_browser",
        "browser_failed",
        "paste_rejected",
        "exchanging",
        "waiting_for_device",
        "slow_down",
        "done",
    ]
    message: str
    url: str | None = None
    #: Device login (`waiting_for_device`): the code the user enters at `url`,
    #: the URL that carries it, and when it expires. Shown, never logged.
    user_code: str | None = field(default=None, repr=False)
    url_complete: str | None = field(default=None, repr=False)
    expires_at: float | None = None


@dataclass(frozen=True)
class CheckEndpoint:
    """Refuse to go on unless this connection may send to `url` (`broker.oauth.netpolicy`)."""

    #: Out of the repr: a device login's `verification_uri_complete` carries the user code.
    url: str = field(repr=False)
    what: str


@dataclass(frozen=True)
class NeedCode:
    """One browser round trip for `pending`; the answer is the code."""

    pending: PendingAuthorization


@dataclass(frozen=True)
class Registered:
    """Keep this registration before the browser opens, so a failed login
    does not register yet another client next time."""

    registration: ClientRegistration


Step = HttpRequest | CheckEndpoint | FlowEvent | NeedCode | Registered | Wait
#: A flow yields steps, is sent their answers, and returns a `T`.
Flow = Generator[Step, Any, T]


# -- discovery ----------------------------------------------------------------


def _resource_metadata(server_url: str, urls: list[str]) -> Flow[ResourceMetadata | None]:
    for url in urls:
        response = yield metadata_request(url, "protected resource metadata")
        found = parse_resource_metadata(response, url, server_url)
        if found is not None:
            return found
    return None


def _auth_server_metadata(issuer: str) -> Flow[AuthServerMetadata]:
    tried = []
    for url, source in auth_server_metadata_urls(issuer):
        response = yield metadata_request(url, "authorization server metadata")
        found = parse_auth_server_metadata(response, url, source, issuer)
        if found is not None:
            return found
        tried.append(url)
    raise DiscoveryError(f"{issuer} publishes no authorization server metadata (tried {', '.join(tried)})")


def discovery_flow(
    server_url: str,
    *,
    scopes: tuple[str, ...] = (),
    client_id: str | None = None,
    client_metadata_url: str | None = None,
) -> Flow[Discovered]:
    """Probe, then resource metadata URLs in order, then authorization server
    metadata URLs in order (`broker.oauth.discovery` gives the orders); then every
    endpoint found goes through the endpoint policy. `server_url` is canonical."""
    probe = read_probe((yield probe_request(server_url)))
    urls = resource_metadata_urls(server_url, probe)
    prm = yield from _resource_metadata(server_url, urls)
    if prm is None:
        raise DiscoveryError(
            f"{server_url} publishes no protected resource metadata (RFC 9728; tried {', '.join(urls)}); "
            "is this an OAuth-protected MCP server?"
        )
    issuer = prm.authorization_servers[0]
    auth_server = yield from _auth_server_metadata(issuer)
    # The browser goes to the authorization endpoint and secrets go to the
    # others: all must be as far out as the MCP server (broker.oauth.netpolicy).
    for key in CHECKED_ENDPOINTS:
        endpoint = getattr(auth_server, key)
        if endpoint is not None:
            yield CheckEndpoint(endpoint, f"`{key}` of {issuer}")
    return Discovered(
        issuer=auth_server.issuer,
        resource=prm.resource,
        scopes=choose_scopes(scopes, probe, prm, auth_server),
        scopes_offered=prm.scopes_supported,
        registration_method=choose_method(auth_server, client_id=client_id, client_metadata_url=client_metadata_url),
        resource_metadata_url=prm.url,
        auth_server=auth_server,
    )


# -- registration -------------------------------------------------------------


def client_forgotten(response: HttpResponse) -> bool:
    """Servers answer an authorization request from a client they do not
    know with a 4xx page instead of a redirect to the login."""
    return 400 <= response.status < 500


def client_recognised_flow(discovered: Discovered, registration: ClientRegistration) -> Flow[bool]:
    """Ask the authorization endpoint, without a browser, whether it still
    knows this client and redirect URI. This is how a stale registration (a
    server that forgot its clients) heals itself instead of stranding the
    user on an error page."""
    probe = start_authorization(
        discovered.auth_server,
        client_id=registration.client_id,
        redirect_uri=registration.redirect_uri,
        scope=discovered.scopes,
        resource=None,
    )
    try:
        response = yield HttpRequest("GET", probe.url, "authorization endpoint")
    except RemoteError:
        return True  # inconclusive: let the real flow show what happens
    return not client_forgotten(response)


def _may_reuse_client(
    settings: ConnectionSettings, existing: ClientRegistration, discovered: Discovered, redirect_uri: str, now: float
) -> bool:
    """Whether a stored dynamic client may serve this login, browser or
    device alike (the server may still have forgotten it)."""
    # A step-up asks for more scope than the client may have registered for, and
    # some servers (oidc-provider, the MCP SDKs') hold a client to those: register anew.
    stepping_up = settings.step_up is not None and settings.step_up.pending
    return (
        not stepping_up
        and existing.method == "dynamic"
        and existing.issuer == discovered.issuer  # never reuse across issuers
        and existing.redirect_uri == redirect_uri
        and not existing.expired(now)
    )


def registration_flow(
    settings: ConnectionSettings,
    state: ConnectionState,
    discovered: Discovered,
    redirect_uri: str,
    now: float,
    *,
    force_new: bool = False,
) -> Flow[ClientRegistration]:
    """The client to log in with: pre-registered, a metadata document, the
    stored dynamic registration while the server still knows it, else a new one."""
    server = discovered.auth_server
    method = discovered.registration_method
    if method == "preregistered":
        secret = Secret(state.client_secret) if state.client_secret else None
        return preregistered(
            server, client_id=settings.client_id or "", client_secret=secret, redirect_uri=redirect_uri
        )
    if method == "metadata_document":
        return metadata_document_client(server, url=settings.client_metadata_url or "", redirect_uri=redirect_uri)
    existing = state.registration
    if (
        not force_new
        and existing is not None
        and _may_reuse_client(settings, existing, discovered, redirect_uri, now)
        and (yield from client_recognised_flow(discovered, existing))
    ):
        return existing
    yield FlowEvent("registering", f"registering with {discovered.issuer}")
    response = yield registration_request(server, redirect_uri=redirect_uri, scope=discovered.scopes)
    return parse_registration_response(response, server=server, redirect_uri=redirect_uri)


# -- login ----------------------------------------------------------------------


def check_client_issuer(settings: ConnectionSettings, state: ConnectionState, discovered: Discovered) -> None:
    """A pre-registered client id belongs to the issuer that issued it. Its
    secret is bound to that issuer in the vault (the settings' copy is
    plaintext and may have been edited)."""
    secret_issuer = state.binding.issuer if state.binding and state.client_secret else None
    issued_by = secret_issuer or (settings.discovered.issuer if settings.discovered else None)
    if discovered.registration_method == "preregistered" and issued_by is not None and issued_by != discovered.issuer:
        raise RegistrationError(
            f"{settings.server_url} now uses the authorization server {discovered.issuer}, but the client id "
            f"was issued by {issued_by}; remove the connection and add it with a client id "
            "for the new server"
        )


def login_flow(
    settings: ConnectionSettings,
    state: ConnectionState,
    discovered: Discovered,
    redirect_uri: str,
    clock: Callable[[], float],
) -> Flow[tuple[ClientRegistration, TokenSet]]:
    """Register (or reuse), get a code from the browser, exchange it. A
    dynamic client the token endpoint calls `invalid_client` was forgotten
    between the browser and the token endpoint: register again and log in
    once more, once."""
    registration = yield from registration_flow(settings, state, discovered, redirect_uri, clock())
    yield Registered(registration)
    resource = discovered.resource if settings.use_resource else None
    for attempt in (1, 2):
        pending = start_authorization(
            discovered.auth_server,
            client_id=registration.client_id,
            redirect_uri=registration.redirect_uri,
            scope=discovered.scopes,
            resource=resource,
        )
        code: Secret = yield NeedCode(pending)
        yield FlowEvent("exchanging", "exchanging the authorization code")
        request = code_exchange_request(
            discovered.auth_server,
            registration,
            code=code,
            code_verifier=pending.code_verifier,
            redirect_uri=pending.redirect_uri,
            resource=pending.resource,
        )
        try:
            response = yield request
            return registration, parse_token_response(response, now=clock(), requested_scope=pending.scope)
        except InvalidClient:
            if registration.method != "dynamic" or attempt == 2:
                raise
        registration = yield from registration_flow(settings, state, discovered, redirect_uri, clock(), force_new=True)
        yield Registered(registration)
    raise AssertionError("unreachable: the second attempt returns or raises")


# -- device login (RFC 8628) ------------------------------------------------------


def _device_registration(
    settings: ConnectionSettings, state: ConnectionState, discovered: Discovered, now: float, *, force_new: bool
) -> Flow[ClientRegistration]:
    """The client for a device login. A dynamic client is registered with
    the device grant beside the code grant (and the same redirect URI), so it
    serves both logins; a stored one is tried first, and the device
    authorization endpoint's `unauthorized_client` sends us here again."""
    existing = state.registration
    port = f":{settings.redirect_port}" if settings.redirect_port else ""
    redirect_uri = existing.redirect_uri if existing else f"http://127.0.0.1{port}{settings.redirect_path}"
    if discovered.registration_method != "dynamic":
        return (yield from registration_flow(settings, state, discovered, redirect_uri, now))
    if not force_new and existing is not None and _may_reuse_client(settings, existing, discovered, redirect_uri, now):
        return existing
    server = discovered.auth_server
    yield FlowEvent("registering", f"registering with {discovered.issuer}")
    request = registration_request(
        server, redirect_uri=redirect_uri, scope=discovered.scopes, extra_grants=(DEVICE_GRANT,)
    )
    response = yield request
    return parse_registration_response(response, server=server, redirect_uri=redirect_uri)


def device_login_flow(
    settings: ConnectionSettings,
    state: ConnectionState,
    discovered: Discovered,
    clock: Callable[[], float],
) -> Flow[tuple[ClientRegistration, TokenSet]]:
    """Log in on another device (RFC 8628): get a user code, show it with
    the verification URL, and poll the token endpoint at the server's
    interval (5 s more after each `slow_down`, doubled after a network
    error) until the user finishes, refuses, or the code expires."""
    server = discovered.auth_server
    endpoint = server.device_authorization_endpoint
    if not endpoint:
        raise DeviceLoginUnsupported(
            f"{discovered.issuer} offers no device login (no device_authorization_endpoint); log in with a browser"
        )
    resource = discovered.resource if settings.use_resource else None
    registration = yield from _device_registration(settings, state, discovered, clock(), force_new=False)
    yield Registered(registration)
    # A stored client may predate the device grant; servers refuse it with
    # unauthorized_client, invalid_client or (oidc-provider) invalid_request.
    # Only those are retried, and only once: a client registered just now with the
    # grant gets no second chance, and any other error (invalid_scope, server_error,
    # access_denied...) is not about the client: a new one would get it too.
    retry = registration.method == "dynamic" and registration is state.registration
    while True:
        request = device_authorization_request(
            server, endpoint, registration, scope=discovered.scopes, resource=resource
        )
        try:
            authorization = parse_device_authorization((yield request), now=clock())
            break
        except OAuthError as exc:
            if not retry or exc.error not in _CLIENT_REFUSED:
                raise
            log.info("the stored client cannot start a device login (%s); registering one that can", exc.error)
        retry = False
        registration = yield from _device_registration(settings, state, discovered, clock(), force_new=True)
        yield Registered(registration)
    # The user is sent to these: the same policy as the authorization endpoint.
    yield CheckEndpoint(authorization.verification_uri, f"`verification_uri` of {discovered.issuer}")
    if authorization.verification_uri_complete:
        yield CheckEndpoint(
            authorization.verification_uri_complete, f"`verification_uri_complete` of {discovered.issuer}"
        )
    yield FlowEvent(
        "waiting_for_device",
        f"on any device, open {authorization.verification_uri} and enter the code",
        url=authorization.verification_uri,
        user_code=authorization.user_code,
        url_complete=authorization.verification_uri_complete,
        expires_at=authorization.expires_at,
    )
    poller = DevicePoller(authorization)
    while True:
        yield Wait(poller.next_wait(clock()))
        request = device_token_request(server, registration, device_code=authorization.device_code, resource=resource)
        try:
            response = yield request
        except NetworkError as exc:
            poller.backoff()
            log.info("polling the token endpoint failed (%s); next poll in %d s", exc, poller.interval)
            continue
        answer = read_poll(response, now=clock(), requested_scope=discovered.scopes)
        if not isinstance(answer, str):
            return registration, answer
        poller.answered(answer)
        if answer == "slow_down":
            yield FlowEvent("slow_down", f"the server asked to poll less often: every {poller.interval} s")


# -- revocation -------------------------------------------------------------------

#: What a disconnect did at the server. `revoked` and `no_tokens` leave
#: nothing usable behind; every other outcome means the tokens were only
#: forgotten here and stay valid at the server until they expire.
RevocationOutcome = Literal["revoked", "no_tokens", "refused", "unreachable", "not_offered", "not_sent"]


@dataclass(frozen=True)
class Revocation:
    """The typed result of `revoke_flow`, for the CLI's line, the socket
    API's `revocation` field and the GUI: `reason` says why the tokens
    were not revoked (never a token), `access_expires_at` how long the
    forgotten access token still works."""

    outcome: RevocationOutcome
    reason: str | None = None
    access_expires_at: int | None = None
    had_refresh_token: bool = False
    refresh_revoked: bool = False

    @property
    def still_valid(self) -> bool:
        return self.outcome not in ("revoked", "no_tokens")

    def message(self, now: float) -> str | None:
        """One line for people, or None when there is nothing to warn about."""
        if not self.still_valid:
            return None
        access = expiry(self.access_expires_at, now) if self.access_expires_at else "has no expiry"
        if self.refresh_revoked:
            # The grant is gone: only the access token outlives the disconnect.
            return (
                f"{self.reason}; the refresh token was revoked, but the access token stays valid "
                f"until it expires: {access}. The broker forgot them."
            )
        refresh = ", the refresh token when the server decides" if self.had_refresh_token else ""
        until = f"the access token {access}{refresh}"
        return f"{self.reason}; they stay valid until they expire: {until}. The broker forgot them."

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "still_valid": self.still_valid, "access_expires_at": self.access_expires_at}

    @classmethod
    def kept(
        cls, outcome: RevocationOutcome, reason: str, tokens: TokenSet, *, refresh_revoked: bool = False
    ) -> Revocation:
        return cls(outcome, reason, tokens.expires_at, tokens.refresh_token is not None, refresh_revoked)


def _revoke_one(
    server: AuthServerMetadata, registration: ClientRegistration, token: Secret, hint: str, shape: int
) -> Flow[int]:
    """Revoke one token, from `shape` on (`revocation_request`); returns the
    shape that was answered, so the next token goes straight to it."""
    response = yield revocation_request(server, registration, token, hint, shape=shape)
    while shape + 1 < revocation_shapes(registration) and revocation_wants_body_credentials(response):
        shape += 1
        log.info("the revocation endpoint answered HTTP %d; retrying in fallback shape %d", response.status, shape)
        response = yield revocation_request(server, registration, token, hint, shape=shape)
    read_revocation_response(response)
    return shape


def revoke_flow(bound: Binding, state: ConnectionState) -> Flow[Revocation]:
    """Revoke at the vault's revocation endpoint.

    The refresh token first: revoking it ends the grant (RFC 7009 section
    2.1). Then the access token, where the server allows it: a server that
    cannot revoke self-contained access tokens says `unsupported_token_type`,
    which is fine once the grant is gone, and only then. Each request may
    be retried in the fallback shapes (`revocation_request`)."""
    tokens = state.tokens
    server = bound.endpoints()
    if tokens is None:
        return Revocation("no_tokens")
    if not server.revocation_endpoint:
        return Revocation.kept("not_offered", f"{server.issuer} offers no revocation endpoint", tokens)
    if state.registration is None:
        return Revocation.kept("not_sent", "not revoked at the server: no client registration is recorded", tokens)
    registration = state.registration
    refresh_revoked = False
    which = "the tokens"
    try:
        shape = 0
        if tokens.refresh_token:
            shape = yield from _revoke_one(server, registration, tokens.refresh_token, "refresh_token", shape)
            refresh_revoked, which = True, "the access token"
        try:
            yield from _revoke_one(server, registration, tokens.access_token, "access_token", shape)
        except OAuthError as exc:
            if exc.error != "unsupported_token_type" or not tokens.refresh_token:
                raise
            log.info("the server cannot revoke self-contained access tokens; it revoked the grant")
    except (OAuthError, BadResponse) as exc:
        reason = f"{server.issuer} refused to revoke {which} ({exc})"
        return Revocation.kept("refused", reason, tokens, refresh_revoked=refresh_revoked)
    except RemoteError as exc:
        reason = f"could not reach {server.issuer} to revoke {which} ({exc})"
        return Revocation.kept("unreachable", reason, tokens, refresh_revoked=refresh_revoked)
    return Revocation("revoked")


def disconnect_flow(settings: ConnectionSettings, state: ConnectionState) -> Flow[Revocation]:
    """Revoke a connection's tokens, if any, where the vault says they may go."""
    if not state.tokens:
        return Revocation("no_tokens")
    try:
        bound = check_binding(settings, state)
    except SettingsMismatch as exc:
        return Revocation.kept("not_sent", f"not revoked at the server: {exc.why}", state.tokens)
    return (yield from revoke_flow(bound, state))
