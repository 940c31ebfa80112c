"""The driver: runs the sans-IO steps over a `Transport` and keeps the `Store`.

This is the only module that combines network I/O, the browser, the
loopback listener and storage. The broker service calls it, and so does
the CLI when no service runs (add, connect, disconnect, remove).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from .authorization import PendingAuthorization, callback_params_from_url, start_authorization, validate_callback
from .browser import open_browser
from .checklist import security_check
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
from .errors import (
    BrokerError,
    ConnectionExists,
    DiscoveryError,
    InvalidClient,
    OAuthError,
    RedirectPortUnavailable,
    RegistrationError,
    RemoteError,
    SettingsMismatch,
    UnknownConnection,
    UsageError,
)
from .http import HttpRequest
from .loopback import LoopbackListener
from .model import (
    Binding,
    ConnectionSettings,
    ConnectionState,
    Discovered,
    check_binding,
    check_name,
    orphan_view,
    public_view,
)
from .registration import (
    ClientRegistration,
    choose_method,
    metadata_document_client,
    parse_registration_response,
    preregistered,
    registration_request,
)
from .secret import Secret
from .store import Store
from .tokens import (
    TokenSet,
    code_exchange_request,
    parse_token_response,
    read_revocation_response,
    refresh_request,
    revocation_request,
)
from .transport import Transport
from .urls import canonical_server_url

__all__ = ["Engine", "FlowEvent", "ConnectMode", "DEFAULT_FLOW_TIMEOUT"]

log = logging.getLogger(__name__)

DEFAULT_FLOW_TIMEOUT = 300.0
ConnectMode = Literal["browser", "no-browser", "paste"]


@dataclass(frozen=True)
class FlowEvent:
    """Progress of a `connect`, for the CLI's stderr and later the GUI."""

    stage: Literal[
        "discovering", "registering", "waiting_for_browser", "browser_failed", "paste_rejected", "exchanging", "done"
    ]
    message: str
    url: str | None = None


EventSink = Callable[[FlowEvent], None]


def _for_server(server_url_of: Callable[..., str]) -> Callable[[Any], Any]:
    """Run an Engine method inside `Transport.for_server` for its connection's
    MCP server, so every request it makes obeys that server's endpoint policy
    (`broker.netpolicy`)."""

    def wrap(method: Any) -> Any:
        @functools.wraps(method)
        async def run(self: Engine, *args: Any, **kwargs: Any) -> Any:
            async with self.transport.for_server(server_url_of(self, *args, **kwargs)):
                return await method(self, *args, **kwargs)

        return run

    return wrap


def _named_server(engine: Engine, name: str, *_: Any, **__: Any) -> str:
    settings = engine.store.load_settings().get(name)
    if settings is None:
        raise UnknownConnection(name)
    return settings.server_url


def _start_browser_thread(opener: Callable[[str], bool], url: str, on_fail: Callable[[], None]) -> None:
    """Run the opener in a daemon thread: `webbrowser` may block until a
    `$BROWSER` command exits, and must never keep the process alive."""

    def run() -> None:
        try:
            ok = opener(url)
        except BrokerError:
            ok = False
        if not ok:
            on_fail()

    threading.Thread(target=run, name="open-browser", daemon=True).start()


class Engine:
    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.time,
        opener: Callable[[str], bool] = open_browser,
        flow_timeout: float = DEFAULT_FLOW_TIMEOUT,
    ) -> None:
        self.store = store
        self.transport = transport
        self.clock = clock
        self.opener = opener
        self.flow_timeout = flow_timeout

    # -- discovery --------------------------------------------------------

    async def _fetch_resource_metadata(self, server_url: str, urls: list[str]) -> ResourceMetadata | None:
        for url in urls:
            response = await self.transport.send(metadata_request(url, "protected resource metadata"))
            found = parse_resource_metadata(response, url, server_url)
            if found is not None:
                return found
        return None

    async def _fetch_auth_server_metadata(self, issuer: str) -> AuthServerMetadata:
        tried = []
        for url, source in auth_server_metadata_urls(issuer):
            response = await self.transport.send(metadata_request(url, "authorization server metadata"))
            found = parse_auth_server_metadata(response, url, source, issuer)
            if found is not None:
                return found
            tried.append(url)
        raise DiscoveryError(f"{issuer} publishes no authorization server metadata (tried {', '.join(tried)})")

    @_for_server(lambda self, server_url, **_: canonical_server_url(server_url))
    async def discover(
        self,
        server_url: str,
        *,
        scopes: tuple[str, ...] = (),
        client_id: str | None = None,
        client_metadata_url: str | None = None,
    ) -> Discovered:
        server_url = canonical_server_url(server_url)
        probe = read_probe(await self.transport.send(probe_request(server_url)))
        urls = resource_metadata_urls(server_url, probe)
        prm = await self._fetch_resource_metadata(server_url, urls)
        if prm is None:
            raise DiscoveryError(
                f"{server_url} publishes no protected resource metadata (RFC 9728; tried {', '.join(urls)}); "
                "is this an OAuth-protected MCP server?"
            )
        issuer = prm.authorization_servers[0]
        auth_server = await self._fetch_auth_server_metadata(issuer)
        # The browser goes to the authorization endpoint and secrets go to the
        # others: all must be as far out as the MCP server (broker.netpolicy).
        for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"):
            endpoint = getattr(auth_server, key)
            if endpoint is not None:
                await self.transport.check_url(endpoint, f"`{key}` of {issuer}")
        return Discovered(
            issuer=auth_server.issuer,
            resource=prm.resource,
            scopes=choose_scopes(scopes, probe, prm, auth_server),
            scopes_offered=prm.scopes_supported,
            registration_method=choose_method(
                auth_server, client_id=client_id, client_metadata_url=client_metadata_url
            ),
            resource_metadata_url=prm.url,
            auth_server=auth_server,
        )

    # -- add / remove -------------------------------------------------------

    async def add(
        self,
        name: str,
        server_url: str,
        *,
        scopes: tuple[str, ...] = (),
        client_id: str | None = None,
        client_secret: Secret | None = None,
        client_metadata_url: str | None = None,
        redirect_port: int | None = None,
        redirect_path: str = "/callback",
        use_resource: bool = True,
    ) -> ConnectionSettings:
        check_name(name)
        server_url = canonical_server_url(server_url)
        if name in self.store.load_settings():
            raise ConnectionExists(name)
        if client_secret is not None and not client_id:
            raise UsageError("a client secret needs a --client-id")
        if redirect_port is not None and not (1 <= redirect_port <= 65535):
            raise UsageError("--redirect-port must be between 1 and 65535")
        if not redirect_path.startswith("/"):
            redirect_path = "/" + redirect_path
        discovered = await self.discover(
            server_url, scopes=scopes, client_id=client_id, client_metadata_url=client_metadata_url
        )
        if discovered.registration_method == "metadata_document":
            metadata_document_client(discovered.auth_server, url=client_metadata_url or "", redirect_uri="")
        settings = ConnectionSettings(
            name=name,
            server_url=server_url,
            scopes=tuple(scopes),
            client_id=client_id,
            client_metadata_url=client_metadata_url,
            redirect_port=redirect_port,
            redirect_path=redirect_path,
            use_resource=use_resource,
            added_at=int(self.clock()),
            discovered=discovered,
        )
        with self.store.transaction(secrets=client_secret is not None) as txn:
            if name in txn.settings:
                raise ConnectionExists(name)
            txn.settings[name] = settings
            if client_secret is not None:
                if name in txn.states:
                    raise ConnectionExists(name)  # an orphaned record: never overwrite its tokens
                # The secret may only ever go to this issuer's endpoints.
                binding = Binding.of(server_url, discovered)
                txn.states[name] = ConnectionState(client_secret=client_secret.reveal(), binding=binding)
        return settings

    async def remove(self, name: str) -> str | None:
        """Forget a connection, revoking its tokens first when possible.
        Returns a warning if revocation failed. An orphan (a vault record
        without settings) is revoked with the vault's own endpoints."""
        if name not in self.store.load_settings() and name in self.orphans_by_name():
            return await self._remove_orphan(name)
        warning = await self.disconnect(name)
        with self.store.transaction() as txn:
            txn.get(name)
            del txn.settings[name]
            txn.states.pop(name, None)
        return warning

    async def _remove_orphan(self, name: str) -> str | None:
        state = self.orphans_by_name()[name]
        bound = state.binding
        warning: str | None = None
        if bound is not None:
            async with self.transport.for_server(bound.server_url):
                warning = await self._revoke(bound, state)
        elif state.tokens is not None:
            warning = f"the vault record of {name} does not record where to revoke its tokens; they were forgotten locally"
        with self.store.transaction() as txn:
            txn.states.pop(name, None)
        return warning

    # -- reading ------------------------------------------------------------

    def _states_if_any(self, settings: dict[str, ConnectionSettings]) -> dict[str, ConnectionState]:
        # Without settings or a vault there is nothing to decrypt: no keyring needed.
        return self.store.load_states() if settings or self.store.has_vault() else {}

    def orphans_by_name(self) -> dict[str, ConnectionState]:
        """Vault records whose names are missing from the settings."""
        settings = self.store.load_settings()
        return {n: st for n, st in self._states_if_any(settings).items() if n not in settings}

    def orphans(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [orphan_view(n, st, now) for n, st in sorted(self.orphans_by_name().items())]

    def list(self) -> list[dict[str, Any]]:
        settings = self.store.load_settings()
        states = self._states_if_any(settings)
        now = self.clock()
        return [public_view(s, states.get(n), now) for n, s in sorted(settings.items())]

    def show(self, name: str) -> dict[str, Any]:
        settings = self.store.load_settings()
        if name not in settings:
            orphan = self.orphans_by_name().get(name)
            if orphan is not None:
                return orphan_view(name, orphan, self.clock())
            raise UnknownConnection(name)
        s = settings[name]
        state = self.store.load_states().get(name) or ConnectionState()
        now = self.clock()
        view = public_view(s, state, now)
        d = s.discovered
        reg = state.registration
        tokens = state.tokens
        view.update(
            {
                "resource": d.resource if d else None,
                "send_resource": s.use_resource,
                "issuer": d.issuer if d else None,
                "requested_scopes": list(state.requested_scope or (d.scopes if d else ())),
                "registration": {
                    "method": reg.method if reg else (d.registration_method if d else None),
                    "client_id": reg.client_id if reg else s.client_id,
                    "redirect_uri": reg.redirect_uri if reg else None,
                    "token_endpoint_auth_method": reg.token_endpoint_auth_method if reg else None,
                },
                "has_refresh_token": bool(tokens and tokens.refresh_token),
                "obtained_at": tokens.obtained_at if tokens else None,
                "last_refresh_at": state.last_refresh_at,
                "last_error": state.last_error,
                "authorization_server": d.auth_server.to_json() if d else None,
                "redirect_port": s.redirect_port,
                "redirect_path": s.redirect_path,
                "security": [
                    item.to_json()
                    for item in security_check(
                        d.auth_server, resource_sent=s.use_resource, rotation_seen=state.rotation_seen
                    )
                ]
                if d
                else [],
            }
        )
        return view

    # -- connect ------------------------------------------------------------

    async def _register_dynamic(self, discovered: Discovered, redirect_uri: str) -> ClientRegistration:
        response = await self.transport.send(
            registration_request(discovered.auth_server, redirect_uri=redirect_uri, scope=discovered.scopes)
        )
        return parse_registration_response(response, server=discovered.auth_server, redirect_uri=redirect_uri)

    async def _client_recognised(self, discovered: Discovered, registration: ClientRegistration) -> bool:
        """Ask the authorization endpoint, without a browser, whether it still
        knows this client and redirect URI: servers answer an unknown client
        with a 4xx page instead of a redirect to the login. This is how a
        stale registration (a server that forgot its clients) heals itself
        instead of stranding the user on an error page."""
        probe = start_authorization(
            discovered.auth_server,
            client_id=registration.client_id,
            redirect_uri=registration.redirect_uri,
            scope=discovered.scopes,
            resource=None,
        )
        try:
            response = await self.transport.send(HttpRequest("GET", probe.url, "authorization endpoint"))
        except RemoteError:
            return True  # inconclusive: let the real flow show what happens
        return not (400 <= response.status < 500)

    async def _registration_for(
        self,
        settings: ConnectionSettings,
        state: ConnectionState,
        discovered: Discovered,
        redirect_uri: str,
        emit: EventSink,
        *,
        force_new: bool = False,
    ) -> ClientRegistration:
        server = discovered.auth_server
        method = discovered.registration_method
        if method == "preregistered":
            secret = Secret(state.client_secret) if state.client_secret else None
            return preregistered(server, client_id=settings.client_id or "", client_secret=secret, redirect_uri=redirect_uri)
        if method == "metadata_document":
            return metadata_document_client(server, url=settings.client_metadata_url or "", redirect_uri=redirect_uri)
        existing = state.registration
        usable = (
            not force_new
            and existing is not None
            and existing.method == "dynamic"
            and existing.issuer == discovered.issuer  # never reuse across issuers
            and existing.redirect_uri == redirect_uri
            and not existing.expired(self.clock())
        )
        if usable and await self._client_recognised(discovered, existing):  # type: ignore[arg-type]
            return existing  # type: ignore[return-value]
        emit(FlowEvent("registering", f"registering with {discovered.issuer}"))
        return await self._register_dynamic(discovered, redirect_uri)

    def _save_registration(self, name: str, registration: ClientRegistration) -> None:
        with self.store.transaction() as txn:
            _, state = txn.get(name)
            if state.registration != registration:
                txn.states[name] = replace(state, registration=registration)

    async def _listen(self, settings: ConnectionSettings, previous: ClientRegistration | None) -> LoopbackListener:
        """Bind the redirect listener: the fixed port, else the port the last
        registration used (so exact-match servers keep working), else any."""
        port = settings.redirect_port
        if port is None and previous is not None:
            parts = urlsplit(previous.redirect_uri)
            if parts.path == settings.redirect_path and parts.hostname == "127.0.0.1":
                port = parts.port
        listener = LoopbackListener(port=port or 0, path=settings.redirect_path)
        try:
            await listener.start()
        except RedirectPortUnavailable:
            if settings.redirect_port is not None:
                raise RedirectPortUnavailable(
                    f"port {settings.redirect_port} is taken, and connection {settings.name!r} needs exactly that "
                    "port for its pre-registered redirect URI; free it and try again"
                ) from None
            listener = LoopbackListener(port=0, path=settings.redirect_path)
            await listener.start()  # a new port: the registration is renewed below
        return listener

    @_for_server(_named_server)
    async def connect(
        self,
        name: str,
        *,
        mode: ConnectMode = "browser",
        on_event: EventSink | None = None,
        read_pasted_url: Callable[[], Awaitable[str]] | None = None,
    ) -> dict[str, Any]:
        emit = on_event or (lambda event: None)
        settings = self.store.load_settings().get(name)
        if settings is None:
            raise UnknownConnection(name)
        state = self.store.load_states().get(name) or ConnectionState()
        # A pre-registered client's secret is bound to its issuer in the vault
        # (the settings' copy is plaintext and may have been edited).
        secret_issuer = state.binding.issuer if state.binding and state.client_secret else None
        emit(FlowEvent("discovering", f"discovering {settings.server_url}"))
        discovered = await self.discover(
            settings.server_url,
            scopes=settings.scopes,
            client_id=settings.client_id,
            client_metadata_url=settings.client_metadata_url,
        )
        issued_by = secret_issuer or (settings.discovered.issuer if settings.discovered else None)
        if discovered.registration_method == "preregistered" and issued_by is not None and issued_by != discovered.issuer:
            raise RegistrationError(
                f"{settings.server_url} now uses the authorization server {discovered.issuer}, but the client id "
                f"was issued by {issued_by}; remove the connection and add it with a client id "
                "for the new server"
            )
        resource = discovered.resource if settings.use_resource else None
        listener = await self._listen(settings, state.registration)
        async with listener:
            registration = await self._registration_for(settings, state, discovered, listener.redirect_uri, emit)
            self._save_registration(name, registration)
            for attempt in (1, 2):
                pending = start_authorization(
                    discovered.auth_server,
                    client_id=registration.client_id,
                    redirect_uri=registration.redirect_uri,
                    scope=discovered.scopes,
                    resource=resource,
                )
                code = await self._await_code(listener, pending, mode, emit, read_pasted_url)
                emit(FlowEvent("exchanging", "exchanging the authorization code"))
                try:
                    tokens = await self._exchange(discovered, registration, pending, code)
                    break
                except InvalidClient:
                    if registration.method != "dynamic" or attempt == 2:
                        raise
                    # The server forgot us between the browser and the token
                    # endpoint: register again and log in once more.
                    registration = await self._registration_for(
                        settings, state, discovered, listener.redirect_uri, emit, force_new=True
                    )
                    self._save_registration(name, registration)
                    listener = LoopbackListener(port=listener.port, path=settings.redirect_path)
                    await listener.start()
        with self.store.transaction() as txn:
            current, st = txn.get(name)
            txn.settings[name] = replace(current, discovered=discovered)
            txn.states[name] = replace(
                st,
                registration=registration,
                tokens=tokens,
                requested_scope=discovered.scopes,
                reauth_required=False,
                last_refresh_at=None,
                last_error=None,
                # Logging in is where the user trusts these endpoints: bind them.
                binding=Binding.of(current.server_url, discovered),
            )
        emit(FlowEvent("done", f"connected {name}"))
        return self.show(name)

    async def _await_code(
        self,
        listener: LoopbackListener,
        pending: PendingAuthorization,
        mode: ConnectMode,
        emit: EventSink,
        read_pasted_url: Callable[[], Awaitable[str]] | None,
    ) -> Secret:
        def validate(params: dict[str, str]) -> Secret:
            return validate_callback(pending, params)

        emit(FlowEvent("waiting_for_browser", "waiting for the login in the browser", pending.url))
        if mode == "browser":
            loop = asyncio.get_running_loop()

            def failed() -> None:
                loop.call_soon_threadsafe(
                    emit, FlowEvent("browser_failed", "no browser could be opened; open the URL yourself", pending.url)
                )

            _start_browser_thread(self.opener, pending.url, failed)
        paste_task = None
        if mode == "paste" and read_pasted_url is not None:

            async def pasted() -> None:
                while True:
                    line = await read_pasted_url()
                    if not line:
                        return  # end of input: keep waiting for the browser
                    text = line.strip()
                    if not text:
                        continue
                    try:
                        accepted, why = listener.deliver(callback_params_from_url(text))
                    except BrokerError as exc:
                        accepted, why = False, str(exc)
                    if accepted:
                        return
                    emit(FlowEvent("paste_rejected", f"{why} Paste the address the browser ended on after logging in."))

            paste_task = asyncio.create_task(pasted())
        try:
            return await listener.wait(validate, self.flow_timeout)
        finally:
            if paste_task is not None:
                paste_task.cancel()

    async def _exchange(
        self,
        discovered: Discovered,
        registration: ClientRegistration,
        pending: PendingAuthorization,
        code: Secret,
    ) -> TokenSet:
        request = code_exchange_request(
            discovered.auth_server,
            registration,
            code=code,
            code_verifier=pending.code_verifier,
            redirect_uri=pending.redirect_uri,
            resource=pending.resource,
        )
        response = await self.transport.send(request)
        return parse_token_response(response, now=self.clock(), requested_scope=pending.scope)

    # -- tokens ---------------------------------------------------------------

    @_for_server(lambda self, settings, *_: settings.server_url)
    async def refresh_tokens(self, settings: ConnectionSettings, state: ConnectionState, tokens: TokenSet) -> TokenSet:
        """One refresh-token grant, to the vault's token endpoint (and only if
        the settings still agree with it: `SettingsMismatch` otherwise, with
        nothing sent). The caller persists the result."""
        assert state.registration and tokens.refresh_token
        bound = check_binding(settings, state)
        request = refresh_request(
            bound.endpoints(),
            state.registration,
            refresh_token=tokens.refresh_token,
            resource=bound.resource if settings.use_resource else None,
        )
        response = await self.transport.send(request)
        return parse_token_response(response, now=self.clock(), requested_scope=state.requested_scope, previous=tokens)

    @_for_server(_named_server)
    async def disconnect(self, name: str) -> str | None:
        """Revoke at the server when it offers revocation, then forget the
        tokens. Returns a warning if revocation did not succeed."""
        settings = self.store.load_settings().get(name)
        if settings is None:
            raise UnknownConnection(name)
        state = self.store.load_states().get(name) or ConnectionState()
        warning = None
        if state.tokens:
            try:
                warning = await self._revoke(check_binding(settings, state), state)
            except SettingsMismatch as exc:
                warning = f"not revoked at the server: {exc.why}; the tokens were forgotten locally"
        with self.store.transaction() as txn:
            _, st = txn.get(name)
            txn.states[name] = st.forget_tokens()
        return warning

    async def _revoke(self, bound: Binding, state: ConnectionState) -> str | None:
        """Revoke at the vault's revocation endpoint; a warning if that failed."""
        warning = None
        tokens = state.tokens
        server = bound.endpoints()
        if tokens and state.registration and server.revocation_endpoint:
            try:
                # Revoking the refresh token ends the grant (RFC 7009 section 2.1);
                # the access token is revoked too where the server allows it.
                if tokens.refresh_token:
                    response = await self.transport.send(
                        revocation_request(server, state.registration, tokens.refresh_token, "refresh_token")
                    )
                    read_revocation_response(response)
                response = await self.transport.send(
                    revocation_request(server, state.registration, tokens.access_token, "access_token")
                )
                try:
                    read_revocation_response(response)
                except OAuthError as exc:
                    if exc.error != "unsupported_token_type" or not tokens.refresh_token:
                        raise
                    log.info("the server cannot revoke self-contained access tokens; it revoked the grant")
            except RemoteError as exc:
                warning = f"could not revoke at the server ({exc}); the tokens were forgotten locally"
        elif tokens and not server.revocation_endpoint:
            warning = f"{server.issuer} offers no revocation endpoint; the tokens were forgotten locally"
        return warning
