"""The driver: runs the sans-IO flows over a `Transport` and keeps the `Store`.

This is the only module that combines network I/O, the browser, the
loopback listener and storage. The broker service calls it, and so does
the CLI when no service runs (add, connect, disconnect, remove).

The protocol's decisions (the discovery fallback order, "this 4xx means the
server forgot our client", the retry on `invalid_client`, the revocation
order) are generators in `broker.oauth.flows`. `Engine._drive` answers their
steps: requests go to the transport, endpoint checks to its policy, codes
to a `CodeReceiver` (`broker.driver.receiver`), registrations to the vault. Views
for `show` and `list` are built by `broker.storage.views`.

The async methods never touch the files on the event loop: reads and
transactions go through `broker.storage.atomic.off_loop` and `Store.update` (a
transaction may wait up to 15 s for another process's lock). The plain
methods (`list`, `show`, `orphans`) block; the CLI calls them directly.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..errors import (
    BrokerError,
    ConnectionExists,
    FlowTimeout,
    ImportRefused,
    OAuthError,
    UnknownConnection,
    UsageError,
)
from ..model import (
    Binding,
    ConnectionSettings,
    ConnectionState,
    ConnectionView,
    Discovered,
    check_binding,
    check_name,
    orphan_view,
)
from ..oauth.flows import (
    CheckEndpoint,
    Flow,
    FlowEvent,
    NeedCode,
    Registered,
    Revocation,
    Wait,
    check_client_issuer,
    device_login_flow,
    disconnect_flow,
    discovery_flow,
    login_flow,
    revoke_flow,
)
from ..oauth.http import HttpRequest
from ..oauth.registration import ClientRegistration, metadata_document_client
from ..oauth.tokens import TokenSet, parse_token_response, refresh_request
from ..oauth.urls import canonical_server_url
from ..secret import Secret
from ..service.adoption import adoption_body, read_adoption
from ..stepup import MAX_ATTEMPTS, after_login, after_refused_login, logins_given_up, next_request
from ..storage.atomic import off_loop
from ..storage.store import Store, Transaction
from ..storage.views import connection_rows, detail_view
from .browser import open_browser
from .receiver import CodeReceiver, ConnectMode, EventSink, bind_listener
from .transport import Transport

__all__ = ["DEFAULT_FLOW_TIMEOUT", "ConnectMode", "Engine", "FlowEvent"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_FLOW_TIMEOUT = 300.0


_P = ParamSpec("_P")
_R = TypeVar("_R")
#: An async Engine method.
_Method = Callable[Concatenate["Engine", _P], Coroutine[Any, Any, _R]]


def _for_server(server_url_of: Callable[..., str | Awaitable[str]]) -> Callable[[_Method[_P, _R]], _Method[_P, _R]]:
    """Run an Engine method inside `Transport.for_server` for its connection's
    MCP server, so every request it makes obeys that server's endpoint policy
    (`broker.oauth.netpolicy`)."""

    def wrap(method: _Method[_P, _R]) -> _Method[_P, _R]:
        @functools.wraps(method)
        async def run(self: Engine, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            url = server_url_of(self, *args, **kwargs)
            if inspect.isawaitable(url):
                url = await url
            async with self.transport.for_server(url):
                return await method(self, *args, **kwargs)

        return run

    return wrap


async def _named_server(engine: Engine, name: str, *_: Any, **__: Any) -> str:
    settings = (await off_loop(engine.store.load_settings)).get(name)
    if settings is None:
        raise UnknownConnection(name)
    return settings.server_url


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

    # -- the driver ---------------------------------------------------------

    async def _drive(
        self,
        flow: Flow[T],
        *,
        emit: EventSink | None = None,
        code_for: Callable[[Any], Awaitable[Secret]] | None = None,
        keep: Callable[[ClientRegistration], Awaitable[None]] | None = None,
    ) -> T:
        """Answer the flow's steps until it returns. An error met while
        answering is thrown into the flow at its `yield` (see `broker.oauth.flows`)."""
        answer: Any = None
        failure: BrokerError | None = None
        try:
            while True:
                try:
                    step = flow.throw(failure) if failure is not None else flow.send(answer)
                except StopIteration as done:
                    result: T = done.value
                    return result
                answer, failure = None, None
                try:
                    match step:
                        case HttpRequest():
                            answer = await self.transport.send(step)
                        case CheckEndpoint(url, what):
                            await self.transport.check_url(url, what)  # the endpoint policy
                        case FlowEvent():
                            if emit is not None:
                                emit(step)
                        case NeedCode(pending) if code_for is not None:
                            answer = await code_for(pending)
                        case Registered(registration) if keep is not None:
                            await keep(registration)
                        case Wait(seconds):
                            await asyncio.sleep(seconds)
                        case _:
                            raise TypeError(f"this driver cannot answer {type(step).__name__}")
                except BrokerError as exc:
                    failure = exc
        finally:
            flow.close()

    @_for_server(lambda self, server_url, **_: canonical_server_url(server_url))
    async def discover(
        self,
        server_url: str,
        *,
        scopes: tuple[str, ...] = (),
        client_id: str | None = None,
        client_metadata_url: str | None = None,
    ) -> Discovered:
        flow = discovery_flow(
            canonical_server_url(server_url),
            scopes=scopes,
            client_id=client_id,
            client_metadata_url=client_metadata_url,
        )
        return await self._drive(flow)

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
        if name in await off_loop(self.store.load_settings):
            raise ConnectionExists(name)
        if client_secret is not None and not client_id:
            raise UsageError("a client secret needs a --client-id")
        if redirect_port is not None and not (1 <= redirect_port <= 65535):
            raise UsageError("--redirect-port must be between 1 and 65535")
        if not redirect_path.startswith("/"):
            redirect_path = "/" + redirect_path
        # Open the key store now, as `list` does: without a keyring the connection
        # could never be connected, so refuse before discovery writes anything.
        await off_loop(lambda: self.store.vault)
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

        def store(txn: Transaction) -> None:
            if name in txn.settings:
                raise ConnectionExists(name)
            txn.settings[name] = settings
            if client_secret is not None:
                if name in txn.states:
                    raise ConnectionExists(name)  # an orphaned record: never overwrite its tokens
                # The secret may only ever go to this issuer's endpoints.
                binding = Binding.of(server_url, discovered)
                txn.states[name] = ConnectionState(client_secret=client_secret.reveal(), binding=binding)

        await self.store.update(store, secrets=client_secret is not None)
        return settings

    async def adopt(self, name: str, tokens: TokenSet, registration: ClientRegistration) -> dict[str, Any]:
        """Take over tokens another tool obtained (`import --from mcp-remote`)
        for connection `name`, just added with discovery. The registration
        must be the discovered issuer's; the record is bound to the endpoints
        discovered now, as a login would. A connection that holds tokens is
        never overwritten. Both are checked as the service checks an adopt
        request (broker.service.adoption), so no path adopts unchecked input."""
        tokens, registration = read_adoption(adoption_body(tokens, registration))
        settings = (await off_loop(self.store.load_settings)).get(name)
        if settings is None:
            raise UnknownConnection(name)
        discovered = settings.discovered
        if discovered is None or registration.issuer != discovered.issuer:
            raise ImportRefused(
                f"the stored client of {name} belongs to another authorization server than "
                f"{settings.server_url} names now; run `mcp-token-broker connect {name}` instead"
            )

        def store(txn: Transaction) -> None:
            current, st = txn.get(name)
            if st.tokens is not None:
                raise ImportRefused(f"{name} already holds tokens; `mcp-token-broker disconnect {name}` first")
            txn.states[name] = replace(
                st,
                registration=registration,
                tokens=tokens,
                requested_scope=tokens.scope or discovered.scopes,
                reauth_required=False,
                last_error=None,
                binding=Binding.of(current.server_url, discovered),
            )

        await self.store.update(store)
        return await off_loop(self.show, name)

    async def remove(self, name: str) -> str | None:
        """Forget a connection, revoking its tokens first when possible.
        Returns a warning if revocation failed. An orphan (a vault record
        without settings) is revoked with the vault's own endpoints."""
        orphans = await off_loop(self.orphans_by_name)
        if name in orphans:
            return await self._remove_orphan(name, orphans[name])
        warning = (await self.disconnect(name)).message(self.clock())

        def forget(txn: Transaction) -> None:
            txn.get(name)
            del txn.settings[name]
            txn.states.pop(name, None)

        await self.store.update(forget)
        return warning

    async def _remove_orphan(self, name: str, state: ConnectionState) -> str | None:
        bound = state.binding
        warning: str | None = None
        if bound is not None:
            async with self.transport.for_server(bound.server_url):
                warning = (await self._drive(revoke_flow(bound, state))).message(self.clock())
        elif state.tokens is not None:
            reason = f"the vault record of {name} does not record where to revoke its tokens"
            warning = Revocation.kept("not_sent", reason, state.tokens).message(self.clock())

        def forget(txn: Transaction) -> None:
            txn.states.pop(name, None)

        await self.store.update(forget)
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

    def list(self) -> list[ConnectionView]:
        settings = self.store.load_settings()
        states = self._states_if_any(settings)
        return connection_rows(settings, states, self.clock())

    def show(self, name: str) -> dict[str, Any]:
        settings = self.store.load_settings()
        if name not in settings:
            orphan = self.orphans_by_name().get(name)
            if orphan is not None:
                return orphan_view(name, orphan, self.clock())
            raise UnknownConnection(name)
        state = self.store.load_states().get(name) or ConnectionState()
        return detail_view(settings[name], state, self.clock())

    # -- connect ------------------------------------------------------------

    def _load(self, name: str) -> tuple[ConnectionSettings, ConnectionState]:
        settings = self.store.load_settings().get(name)
        if settings is None:
            raise UnknownConnection(name)
        return settings, self.store.load_states().get(name) or ConnectionState()

    async def _save_registration(self, name: str, registration: ClientRegistration) -> None:
        def keep(txn: Transaction) -> None:
            _, state = txn.get(name)
            if state.registration != registration:
                txn.states[name] = replace(state, registration=registration)

        await self.store.update(keep)

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
        settings, state = await off_loop(self._load, name)
        emit(FlowEvent("discovering", f"discovering {settings.server_url}"))
        discovered = await self.discover(
            settings.server_url,
            scopes=settings.scopes,
            client_id=settings.client_id,
            client_metadata_url=settings.client_metadata_url,
        )
        check_client_issuer(settings, state, discovered)
        keep = functools.partial(self._save_registration, name)
        try:
            if mode == "device":
                registration, tokens = await self._device_login(settings, state, discovered, emit, keep)
            else:
                registration, tokens = await self._browser_login(
                    settings, state, discovered, mode, emit, read_pasted_url
                )
        except OAuthError as exc:
            if exc.error == "invalid_scope":  # at the callback, the token or the device endpoint
                await self._count_refused_login(name, exc)
            raise

        def store(txn: Transaction) -> None:
            current, st = txn.get(name)
            # A step-up counts this login as an attempt, done once the token carries its scopes.
            step_up = after_login(current.step_up, tokens.scope)
            scopes = next_request(step_up, current.scopes)
            txn.settings[name] = replace(current, discovered=discovered, step_up=step_up, scopes=scopes)
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

        await self.store.update(store)
        emit(FlowEvent("done", f"connected {name}"))
        return await off_loop(self.show, name)

    async def _count_refused_login(self, name: str, exc: OAuthError) -> None:
        """A login the authorization server refused for its scope counts
        against a pending step-up (else it would ask for that scope forever);
        once given up, the connection asks for its earlier scopes again. The
        error then says so. Failing to count it (the connection removed
        meanwhile, a storage error) is logged: the refusal is what the user sees."""

        def count(txn: Transaction) -> str | None:
            current, _ = txn.get(name)
            step = current.step_up
            if step is None or not step.pending:
                return None
            after = after_refused_login(step)
            txn.settings[name] = replace(current, step_up=after, scopes=next_request(after, current.scopes))
            missing = " ".join(step.missing)
            if after is not None and after.given_up:
                return (
                    f"{name} no longer asks for {missing} (not granted in {logins_given_up(step, after)} logins); "
                    "connect again to log in with the scopes it asked for before"
                )
            left = after.logins_left if after is not None else MAX_ATTEMPTS
            return f"{name} asked for {missing} (a step-up); if {left} more login(s) do not get it, it stops asking"

        try:
            note = await self.store.update(count, secrets=False)
        except (BrokerError, OSError) as failure:  # removed meanwhile, or the files: the refusal still stands
            log.warning("the refused login of %s was not counted against its step-up: %s", name, failure)
            return
        if note is not None:
            exc.args = (f"{exc}; {note}",)  # what the CLI and the app show

    async def _device_login(
        self,
        settings: ConnectionSettings,
        state: ConnectionState,
        discovered: Discovered,
        emit: EventSink,
        keep: Callable[[ClientRegistration], Awaitable[None]],
    ) -> tuple[ClientRegistration, TokenSet]:
        """RFC 8628: no listener and no browser here; the flow polls until
        the user finishes on another device, within the flow timeout."""
        flow = device_login_flow(settings, state, discovered, self.clock)
        try:
            async with asyncio.timeout(self.flow_timeout):
                return await self._drive(flow, emit=emit, keep=keep)
        except TimeoutError:
            raise FlowTimeout(f"the device login was not completed within {self.flow_timeout:g} s") from None

    async def _browser_login(
        self,
        settings: ConnectionSettings,
        state: ConnectionState,
        discovered: Discovered,
        mode: ConnectMode,
        emit: EventSink,
        read_pasted_url: Callable[[], Awaitable[str]] | None,
    ) -> tuple[ClientRegistration, TokenSet]:
        listener = await bind_listener(settings, state.registration)
        receiver = CodeReceiver(
            listener,
            mode=mode,
            emit=emit,
            opener=self.opener,
            timeout=self.flow_timeout,
            read_pasted_url=read_pasted_url,
        )
        async with receiver:
            flow = login_flow(settings, state, discovered, listener.redirect_uri, self.clock)
            return await self._drive(
                flow,
                emit=emit,
                code_for=receiver.code_for,
                keep=functools.partial(self._save_registration, settings.name),
            )

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
    async def disconnect(self, name: str) -> Revocation:
        """Revoke at the server when it offers revocation, then forget the
        tokens, whatever the server said: they cannot be handed out again,
        and the `Revocation` says whether they still work elsewhere."""
        settings, state = await off_loop(self._load, name)
        revocation = await self._drive(disconnect_flow(settings, state))

        def forget(txn: Transaction) -> None:
            _, st = txn.get(name)
            txn.states[name] = st.forget_tokens()

        await self.store.update(forget)
        return revocation
