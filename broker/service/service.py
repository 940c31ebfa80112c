"""The broker service: one asyncio object that owns the tokens.

It holds the registry and vault (through the `Store`, as the only writer
while it runs), refreshes in the background, serves the socket API, and
emits `broker.service.events` for the GUI. `mcp-token-broker serve` runs it
headless; the GUI runs the same object on a worker thread.

Refresh rules:

- proactive: at `schedule.refresh_deadline` (min(max(60 s, L/4), L/2) before
  expiry, with jitter);
- single flight: one in-flight refresh task per connection, which every
  caller awaits;
- rotation safe: the new token set is held in memory, then written to the
  vault; a refresh whose refresh token is no longer the held one
  (disconnected or replaced meanwhile) changes nothing. If the write fails
  (a lock held too long, a full disk), the new set is served from memory and
  its write retried with backoff: an older refresh token is never sent
  while a newer one is held (the server would see reuse and end the grant);
- only to the vault's endpoints: a connections file that no longer matches
  the vault's binding stops the connection, and nothing is sent;
- never for nothing: a `min_ttl` above what the server grants does not
  refresh a token that is as fresh as the server makes them;
- on report: a client that saw a token rejected (HTTP 401) may report its
  hash; if it is the current token, one refresh follows (single flight, at
  most once per `REJECTED_INTERVAL`). Tokens without `expires_in` have no
  other way to be refreshed;
- network errors and 5xx back off exponentially and keep the old token in
  service; `invalid_grant` (or no refresh token) means `reauth_required`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from .. import __version__
from ..driver.engine import ConnectMode, Engine, FlowEvent
from ..errors import (
    AlreadyRunning,
    AnswerRefused,
    ApiError,
    ApprovalTimeout,
    AuthorizationRequired,
    BrokerError,
    ClientRefused,
    InvalidClient,
    InvalidGrant,
    RefreshError,
    RemoteError,
    SettingsMismatch,
    StorageError,
    TooManySessions,
    UnknownConnection,
    UsageError,
    VaultLocked,
)
from ..model import ConnectionSettings, ConnectionState, ConnectionView, check_binding, orphan_view, public_view
from ..oauth.tokens import TokenSet
from ..secret import Secret
from ..stepup import MAX_SCOPES, StepUp, check_scopes, next_request, on_challenge, union
from ..storage.atomic import file_lock, off_loop
from ..storage.config import Config, save_config
from ..storage.paths import Paths
from ..storage.store import Store
from .adoption import read_adoption
from .api import ApiRequest, ApiServer, Takeover
from .audit import AuditLog
from .eventloop import loop_name
from .events import (
    AccessDenied,
    ApprovalClosed,
    ClientAsked,
    ConnectionChanged,
    ConnectionRemoved,
    EventBus,
    FlowFinished,
    FlowProgress,
    ReauthRequired,
    RefreshFailed,
    RefreshStarted,
    ScopeStepUp,
    ShowRequested,
    TokenRefreshed,
    TokenServed,
)
from .grants import DECISIONS, POLICIES, UNTIL_STOP, ApprovalRequest, Decision, Grants, Policy, new_code
from .identity import ClientIdentity
from .notify import notify_desktop
from .procfs import ancestors
from .proxy_session import MAX_SESSIONS as MAX_PROXY_SESSIONS
from .proxy_session import UPGRADE, ProxySessions
from .schedule import Scheduler, backoff_delay, is_fresh, refresh_deadline, refresh_due_at, refresh_margin

__all__ = ["BrokerService", "Flow", "MIN_SERVE_TTL", "REJECTED_INTERVAL"]

log = logging.getLogger(__name__)

#: A token is never handed out with less than this left.
MIN_SERVE_TTL = 10
#: A reported rejection refreshes a connection at most this often (seconds).
REJECTED_INTERVAL = 30.0

_HEX = frozenset("0123456789abcdef")


#: What a refresh raises when it yields no token; `token_for` may still serve the held one.
_REFRESH_FAILURES = (AuthorizationRequired, RefreshError)

#: Called with the `ApprovalRequest` a token request starts to wait on.
OnHold = Callable[[ApprovalRequest], None]


@dataclass
class Flow:
    """A `connect` running inside the service, followed by the CLI or GUI."""

    id: str
    name: str
    mode: ConnectMode
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    error: dict[str, str] | None = None
    #: The login's task (await it to wait for the end; `cancel()` ends it).
    task: asyncio.Task[Any] | None = None
    _pasted: asyncio.Queue[str] = field(default_factory=asyncio.Queue, init=False, repr=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    def push(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    def finish(self) -> None:
        self.done = True
        self._changed.set()

    def cancel(self) -> None:
        """End the login if it still runs (its error becomes `cancelled`)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def paste(self, url: str) -> None:
        """Hand the login the address the browser ended on (`paste` mode)."""
        self._pasted.put_nowait(url)

    async def next_paste(self) -> str:
        return await self._pasted.get()

    async def wait_changed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an event or the end; False if none came."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def to_json(self, after: int = 0) -> dict[str, Any]:
        return {
            "flow_id": self.id,
            "name": self.name,
            "events": self.events[after:],
            "next": len(self.events),
            "done": self.done,
            "error": self.error,
        }


def _with_tokens_of(stored: ConnectionState, held: ConnectionState) -> ConnectionState:
    """`stored` with the token fields of `held`, a refresh result not yet written."""
    return replace(
        stored,
        tokens=held.tokens,
        last_refresh_at=held.last_refresh_at,
        last_error=held.last_error,
        reauth_required=held.reauth_required,
        rotation_seen=held.rotation_seen,
    )


class BrokerService:
    def __init__(
        self,
        *,
        paths: Paths,
        store: Store,
        engine: Engine,
        socket_path: str | Path,
        policy: Policy = "allow",
        approval_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        events: EventBus | None = None,
        audit: AuditLog | None = None,
        grants: Grants | None = None,
        api_options: dict[str, Any] | None = None,
        max_sleep: float = 60.0,
        min_margin: float = 60.0,
        ui: bool = False,
        warm_proxy_after: float | None = 2.0,
        max_proxy_sessions: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise UsageError(f"unknown client policy {policy!r}; use one of {', '.join(POLICIES)}")
        self.paths = paths
        self.store = store
        self.engine = engine
        self.policy = policy
        self.approval_timeout = approval_timeout
        # With connections to serve and a hosted proxy session run before (its
        # marker), load the SDK this long after start (once per process, off the
        # loop), so the first proxy answers as fast as the next; None: on first use only.
        self.warm_proxy_after = warm_proxy_after
        self._warm_task: asyncio.Task[None] | None = None
        self.clock = clock
        self.rng = rng or random.Random()
        self.events = events or EventBus()
        self.audit = audit or AuditLog(paths.state_dir / "audit.log", clock=clock)
        self.grants = grants or Grants(paths.config_dir / "grants.json", clock=clock)
        # Imported here, not at the top: routes depends on the service, never the reverse.
        from .routes import route

        self._route = route
        self.api = ApiServer(self.handle, socket_path, **(api_options or {}))
        self.api.on_identity_changed = self._identity_changed
        self.scheduler = Scheduler(self._fire_refresh, clock=clock, max_sleep=max_sleep)
        self.proxy_sessions = ProxySessions(
            lambda name, client, min_ttl, held: self.token_for(name, client, min_ttl=min_ttl, held=held),
            self.report_rejected,
            self.report_insufficient_scope,
            marker=paths.state_dir / "proxy-used",
            max_sessions=MAX_PROXY_SESSIONS if max_proxy_sessions is None else max_proxy_sessions,
        )
        self._settings: dict[str, ConnectionSettings] = {}
        self._states: dict[str, ConnectionState] = {}
        self._inflight: dict[str, asyncio.Task[TokenSet]] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        #: Connections whose newest token set lives only in memory (its vault
        #: write failed), with the refresh token the vault still holds.
        self._unsaved: dict[str, Secret | None] = {}
        self._write_failures: dict[str, int] = {}
        self._write_retry_at: dict[str, float] = {}
        self._write_locks: dict[str, asyncio.Lock] = {}
        self._reload_lock = asyncio.Lock()
        #: connections.json's (mtime_ns, size, inode) when last read: a request
        #: naming an unknown connection reloads if it changed (`reload_if_changed`).
        self._files_seen: tuple[int, int, int] | None = None
        self._rejected_at: dict[str, float] = {}
        self._flows: dict[str, Flow] = {}
        self._approvals: dict[str, ApprovalRequest] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scheduler_task: asyncio.Task[None] | None = None
        self._instance_lock: contextlib.ExitStack | None = None
        self._stopping = asyncio.Event()
        self.started_at = 0.0
        #: Refresh at least this many seconds before expiry (the settings' "refresh margin").
        self.min_margin = min_margin
        #: True inside the desktop app: a second launch may ask it to show itself.
        self.ui = ui

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        await off_loop(self._take_instance_lock)
        try:
            await self._reload()
            await self.api.start()
            # A CLI that found no socket a moment ago wrote the files itself
            # (`serve &` then `add` at once): read them again now that it listens.
            await self._reload()
        except BaseException:
            self._release_instance_lock()
            raise
        for name in self._settings:
            self._schedule(name)
        self._scheduler_task = asyncio.create_task(self.scheduler.run(), name="refresh-scheduler")
        if self._settings and self.warm_proxy_after is not None and await off_loop(self.proxy_sessions.used_before):
            log.info("loading the MCP SDK in %g s: a proxy session ran here before", self.warm_proxy_after)
            self._warm_task = asyncio.create_task(self._warm_proxy(self.warm_proxy_after), name="warm-proxy")
        self.started_at = self.clock()
        log.info("serving on %s (policy %s)", self.api.socket_path, self.policy)

    def _take_instance_lock(self) -> None:
        stack = contextlib.ExitStack()
        lock_path = self.api.socket_path.with_name(self.api.socket_path.name + ".lock")
        # The lock lives beside the socket: its directories must be ours alone
        # before anything is created there (broker.client.socketdir).
        self.api.prepare_dir()
        try:
            stack.enter_context(file_lock(lock_path, timeout=0.2))
        except VaultLocked:
            raise AlreadyRunning(
                f"a broker service is already running (socket {self.api.socket_path}); "
                "use it, or stop it before starting another"
            ) from None
        self._instance_lock = stack

    async def _warm_proxy(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.proxy_sessions.warm()

    def _release_instance_lock(self) -> None:
        if self._instance_lock is not None:
            self._instance_lock.close()
            self._instance_lock = None

    async def stop(self) -> None:
        """Stop serving: no new requests, let refreshes finish their writes,
        remove the socket."""
        self._stopping.set()
        if self._warm_task is not None:
            self._warm_task.cancel()
        if self._scheduler_task is not None:
            self._scheduler_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
        await self.api.close()
        for flow in self._flows.values():
            flow.cancel()
        if self._inflight:
            # A refresh in flight may be between the grant and the vault write:
            # let it land, or the rotated refresh token would be lost.
            await asyncio.wait(list(self._inflight.values()), timeout=15)
        for name in list(self._unsaved):
            # Last chance for a token set whose write failed: once this process
            # ends, only the vault remembers.
            try:
                await self._persist(name, lambda st: None)
            except (StorageError, OSError) as exc:
                log.error(
                    "could not save the refreshed tokens of %s (%s); the next start has only the older refresh "
                    "token, which the server may refuse: then run `mcp-token-broker connect %s`",
                    name,
                    exc,
                    name,
                )
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(OSError):  # already logged by `Grants`
            await self.grants.saved()
        self.audit.close()
        await self.engine.transport.aclose()
        self._release_instance_lock()

    async def run(self, *, install_signal_handlers: bool = True, on_started: Callable[[], None] | None = None) -> None:
        """Start, serve until SIGINT/SIGTERM (or `request_stop`), stop."""
        await self.start()
        if on_started is not None:
            on_started()
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stopping.set)
        try:
            await self._stopping.wait()
        finally:
            if install_signal_handlers:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await self.stop()

    def request_stop(self) -> None:
        self._stopping.set()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- state cache ----------------------------------------------------------

    def _read_files(self) -> tuple[dict[str, ConnectionSettings], dict[str, ConnectionState]]:
        self._files_seen = self._connections_signature()  # before reading: a later write shows as a change
        settings = self.store.load_settings()
        return settings, self.store.load_states() if settings or self.store.has_vault() else {}

    def _connections_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.paths.connections_file)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    async def reload_if_changed(self) -> bool:
        """After a request named a connection this service does not know, or listed them:
        reload both files once if connections.json changed since they were
        read (a CLI that found no socket wrote them itself). True if it did."""
        if await off_loop(self._connections_signature) == self._files_seen:
            return False
        before = set(self._settings)
        await self._reload()
        for name in sorted(set(self._settings) - before):
            self._schedule(name)
            self._changed(name)
        return True

    async def _reload(self) -> None:
        """Read both files afresh (on a worker thread) into the cache. Reloads
        run one at a time, each holding every connection's write lock: no
        refresh lands in memory between the read and the swap."""
        async with self._reload_lock, contextlib.AsyncExitStack() as held:
            for name in sorted(self._settings):
                await held.enter_async_context(self._write_lock(name))
            settings, states = await off_loop(self._read_files)
            self._merge(settings, states)

    def _merge(self, settings: dict[str, ConnectionSettings], states: dict[str, ConnectionState]) -> None:
        for name, base in list(self._unsaved.items()):
            held, stored = self._states.get(name), states.get(name)
            if (
                held is not None
                and stored is not None
                and stored.tokens is not None
                and stored.tokens.refresh_token == base
                and name in settings
            ):
                states[name] = _with_tokens_of(stored, held)  # memory holds the newer set
            else:
                self._forget_unsaved(name)  # the vault moved on (a new login, a disconnect)
        self._settings, self._states = settings, states

    def _require(self, name: str) -> ConnectionSettings:
        settings = self._settings.get(name)
        if settings is None:
            raise UnknownConnection(name)
        return settings

    def _orphan(self, name: str) -> ConnectionState | None:
        """The vault record of `name` if it has no settings (see `broker.storage.store`)."""
        return self._states.get(name) if name not in self._settings else None

    def view(self, name: str) -> ConnectionView | dict[str, Any]:
        orphan = self._orphan(name)
        if orphan is not None:
            return orphan_view(name, orphan, self.clock())
        return public_view(self._require(name), self._states.get(name), self.clock())

    def views(self) -> list[ConnectionView]:
        now = self.clock()
        return [public_view(s, self._states.get(n), now) for n, s in sorted(self._settings.items())]

    def orphans(self) -> list[dict[str, Any]]:
        """Vault records without settings: kept, never served, removable."""
        now = self.clock()
        return [orphan_view(n, st, now) for n, st in sorted(self._states.items()) if n not in self._settings]

    def _changed(self, name: str) -> None:
        if name in self._settings:
            self.events.emit(ConnectionChanged(name, self.view(name)))

    def _schedule(self, name: str) -> None:
        state = self._states.get(name)
        tokens = state.tokens if state else None
        when: float | None = None
        if not (
            state is None
            or tokens is None
            or state.reauth_required
            or tokens.refresh_token is None
            or tokens.expires_at is None
        ):
            retry = self._retry_at.get(name)
            if name in self._unsaved:
                # No jitter: `_fire_refresh` must agree on whether a refresh is due.
                when = refresh_due_at(tokens.obtained_at, tokens.expires_at, min_margin=self.min_margin)
            else:
                when = refresh_deadline(tokens.obtained_at, tokens.expires_at, self.rng, min_margin=self.min_margin)
            when = max(when, retry) if retry else when
        if name in self._unsaved:
            write_at = self._write_retry_at.get(name, self.clock())
            when = write_at if when is None else min(when, write_at)
        self.scheduler.set(name, when)

    # -- refresh --------------------------------------------------------------

    def _fire_refresh(self, name: str) -> None:
        if name in self._settings and name not in self._inflight:
            if name in self._unsaved and not self._refresh_due(name):
                self._spawn(self._retry_write(name), f"save-{name}")
                return
            task = self.refresh(name)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # errors are handled inside

    def _refresh_due(self, name: str) -> bool:
        state = self._states.get(name)
        tokens = state.tokens if state else None
        if tokens is None or tokens.expires_at is None:
            return False
        return self.clock() >= refresh_due_at(tokens.obtained_at, tokens.expires_at, min_margin=self.min_margin)

    async def _retry_write(self, name: str) -> None:
        """The scheduler's retry of a token set held only in memory."""
        if name not in self._unsaved:
            return
        try:
            await self._persist(name, lambda st: None)
        except (StorageError, OSError) as exc:
            self._write_failed(name, exc)
            return
        log.info("saved the refreshed tokens of %s", name)
        self._schedule(name)

    def _write_failed(self, name: str, exc: BaseException) -> None:
        failures = self._write_failures.get(name, 0) + 1
        self._write_failures[name] = failures
        delay = backoff_delay(failures, self.rng)
        self._write_retry_at[name] = self.clock() + delay
        log.warning(
            "could not save the refreshed tokens of %s (%s); serving them from memory, retrying in %.0f s",
            name,
            exc,
            delay,
        )
        self._schedule(name)

    def _forget_unsaved(self, name: str) -> None:
        self._unsaved.pop(name, None)
        self._write_failures.pop(name, None)
        self._write_retry_at.pop(name, None)

    def refresh(self, name: str) -> asyncio.Task[TokenSet]:
        """The single in-flight refresh of `name`, started if none runs."""
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._do_refresh(name), name=f"refresh-{name}")
            self._inflight[name] = task
            task.add_done_callback(lambda _t: self._inflight.pop(name, None))
        return task

    def _write_lock(self, name: str) -> asyncio.Lock:
        lock = self._write_locks.get(name)
        if lock is None:
            lock = self._write_locks[name] = asyncio.Lock()
        return lock

    async def _persist(
        self, name: str, change: Callable[[ConnectionState], ConnectionState | None]
    ) -> ConnectionState | None:
        """Apply `change` to the stored state in a vault transaction, off the
        event loop; update the cache. `change` returning None means no-op.
        Storage errors propagate."""
        async with self._write_lock(name):
            return await self._persist_locked(name, change)

    async def _persist_locked(
        self, name: str, change: Callable[[ConnectionState], ConnectionState | None]
    ) -> ConnectionState | None:
        # A token set held only in memory goes in first, provided the vault
        # still holds the set it replaced; else the vault moved on (a new
        # login) and wins.
        unsaved = name in self._unsaved
        held = self._states.get(name) if unsaved else None
        base = self._unsaved.get(name)

        def write() -> ConnectionState | None:
            with self.store.transaction() as txn:
                if name not in txn.settings:
                    return None
                current = txn.states.get(name) or ConnectionState()
                if held is not None and current.tokens is not None and current.tokens.refresh_token == base:
                    current = txn.states[name] = _with_tokens_of(current, held)
                new = change(current)
                if new is None:
                    return current
                txn.states[name] = new
                return new

        result = await off_loop(write)
        if unsaved:
            self._forget_unsaved(name)
        if result is not None and name in self._settings:
            self._states[name] = result
        return result

    async def _do_refresh(self, name: str) -> TokenSet:
        settings = self._settings.get(name)
        state = self._states.get(name)
        tokens = state.tokens if state else None
        if settings is None or state is None or tokens is None:
            raise AuthorizationRequired(f"{name} is not connected")
        if state.reauth_required or tokens.refresh_token is None or state.registration is None:
            await self._mark_reauth(name, tokens, "no usable refresh token")
            raise AuthorizationRequired(f"{name} needs re-authorization: run `mcp-token-broker connect {name}`")
        used = tokens.refresh_token
        self.events.emit(RefreshStarted(name))
        try:
            new = await self.engine.refresh_tokens(settings, state, tokens)
        except SettingsMismatch as exc:
            # Nothing was sent: the settings would have redirected the secrets.
            log.warning("%s", exc)
            await self._mark_reauth(name, tokens, str(exc))
            raise AuthorizationRequired(str(exc)) from None
        except (InvalidGrant, InvalidClient) as exc:
            await self._mark_reauth(
                name, tokens, f"the refresh was refused ({exc.error})", drop_registration=isinstance(exc, InvalidClient)
            )
            raise AuthorizationRequired(
                f"{name} needs re-authorization ({exc.error}): run `mcp-token-broker connect {name}`"
            ) from None
        except RemoteError as exc:
            reason = str(exc)
            failures = self._failures.get(name, 0) + 1
            self._failures[name] = failures
            retry_at = self.clock() + backoff_delay(failures, self.rng)
            self._retry_at[name] = retry_at
            if name in self._unsaved:
                self._schedule(name)  # the write retry may come first
            else:
                self.scheduler.set(name, retry_at)
            await self._persist(name, lambda st: replace(st, last_error=reason))
            self.events.emit(RefreshFailed(name, reason, retry_at))
            log.warning("refreshing %s failed (%s); retrying in %.0f s", name, reason, retry_at - self.clock())
            raise RefreshError(f"refreshing {name} failed: {reason}") from None

        now = int(self.clock())
        rotated = new.refresh_token is not None and new.refresh_token != used
        async with self._write_lock(name):
            held = self._states.get(name)
            if held is None or held.tokens is None or held.tokens.refresh_token != used or name not in self._settings:
                stored = held  # disconnected or replaced meanwhile: a stale result
            else:
                # Memory first: from here on the rotated refresh token is the
                # one used, whether or not the vault write below succeeds.
                self._states[name] = replace(
                    held, tokens=new, last_refresh_at=now, last_error=None, reauth_required=False, rotation_seen=rotated
                )
                self._unsaved.setdefault(name, used)  # the vault holds `used`, or an older set
                try:
                    stored = await self._persist_locked(name, lambda st: None)
                except (StorageError, OSError) as exc:
                    self._write_failed(name, exc)
                    stored = self._states[name]
        landed = stored is not None and stored.tokens is new
        if not landed:
            current = self._states.get(name)
            if current is None or current.tokens is None:
                raise AuthorizationRequired(f"{name} was disconnected")
            return current.tokens
        self._failures.pop(name, None)
        self._retry_at.pop(name, None)
        self._schedule(name)
        self.events.emit(TokenRefreshed(name, new.expires_at))
        self._changed(name)
        return new

    async def _mark_reauth(self, name: str, tokens: TokenSet, reason: str, *, drop_registration: bool = False) -> None:
        used = tokens.refresh_token

        def mark(st: ConnectionState) -> ConnectionState | None:
            if st.tokens is None or st.tokens.refresh_token != used:
                return None  # a newer token set arrived: never wipe it
            return replace(
                st,
                reauth_required=True,
                last_error=reason,
                registration=None if drop_registration else st.registration,
            )

        result = await self._persist(name, mark)
        if result is not None and result.reauth_required:
            self.scheduler.set(name, None)
            self.events.emit(ReauthRequired(name, reason))
            self._changed(name)

    # -- the token path -------------------------------------------------------

    async def _authorize(self, name: str, client: ClientIdentity, on_hold: OnHold | None = None) -> None:
        # An unidentified client (empty key) never matches a stored grant:
        # otherwise one "always" would cover every unidentified process.
        decision = self.grants.decide(client.key, name) if client.key else None
        if decision is None:
            if self.policy == "allow":
                return
            if self.policy == "ask":
                decision = await self._ask(name, client, on_hold)
                if decision is None:  # nobody answered: not a refusal, and told apart
                    waited = f"no answer in {self.approval_timeout:g} s"
                    self.audit.record(connection=name, client=client, outcome="timeout", detail=waited)
                    self.events.emit(AccessDenied(name, client.name, client.app_pid or client.pid, waited))
                    raise ApprovalTimeout(
                        f"no answer to the approval request in {self.approval_timeout:g} s; "
                        "run the command again and answer in MCP Token Broker"
                    )
            else:
                decision = False
        if not decision:
            self.audit.record(connection=name, client=client, outcome="denied")
            self.events.emit(AccessDenied(name, client.name, client.app_pid or client.pid, "no grant"))
            raise ClientRefused(f"{client.name} may not have {name}'s token")

    async def _ask(self, name: str, client: ClientIdentity, on_hold: OnHold | None = None) -> bool | None:
        """The person's answer: True, False, or None when nobody answered in time."""
        # Concurrent requests from the same app for the same connection share one question.
        key = f"{client.key}\0{name}"
        request = self._approvals.get(key)
        if request is None:
            # Headless, a socket answer needs the one-time code that only the user is shown.
            # In the desktop app the dialog answers in process, and the socket never may.
            code = None if self.ui else new_code()
            request = ApprovalRequest(
                connection=name,
                client=client,
                grants=self.grants,
                code=code,
                on_answer=self._answered,
                on_close=lambda r: self.events.emit(ApprovalClosed(r.id, r.outcome or "expired")),
                deadline=self.clock() + self.approval_timeout,
                clock=self.clock,
            )
            request.requester_ancestors = frozenset(ancestors(client.pid))
            self._approvals[key] = request
            self.events.emit(ClientAsked(request))
            if code is not None:
                self._announce(request, code)
        if on_hold is not None:
            on_hold(request)  # e.g. the socket API tells the client it waits
        try:
            answer = await request.wait()
        finally:
            if request.answered or self._approvals.get(key) is request:
                self._approvals.pop(key, None)
        return answer

    async def token_for(
        self,
        name: str,
        client: ClientIdentity,
        *,
        min_ttl: float = 0,
        on_hold: OnHold | None = None,
        held: TokenSet | None = None,
    ) -> TokenSet:
        """The token for `client`. Under the `ask` policy this may wait for the
        person's answer; `on_hold(request)` is called when it starts to wait.
        `held`: the token set this caller was handed last (a hosted proxy
        session); handing the same one again is checked as always but not
        audited again, so a session writes one line per token, not per request."""
        settings = self._require(name)
        # The common case, a granted client or the allow policy, needs no await.
        granted = self.grants.decide(client.key, name) if client.key else None
        if not (client.in_process or granted or (granted is None and self.policy == "allow")):
            await self._authorize(name, client, on_hold)
        state = self._states.get(name)
        tokens = state.tokens if state else None
        if tokens is None or state is None:
            raise AuthorizationRequired(f"{name} is not connected: run `mcp-token-broker connect {name}`")
        if state.binding is not None:
            # `proxy` sends the token to the settings' server URL: only while
            # the settings agree with the vault. (A record from before bindings
            # serves until its refresh, which asks for a login.)
            try:
                check_binding(settings, state)
            except SettingsMismatch as exc:
                self.audit.record(connection=name, client=client, outcome="failed", detail="settings_mismatch")
                raise AuthorizationRequired(str(exc)) from None
        now = self.clock()
        if state.reauth_required:
            # No refresh is possible; the access token serves while it is good enough.
            if tokens.expires_at is not None and tokens.expires_at - now < max(MIN_SERVE_TTL, min_ttl):
                message = f"{name} needs re-authorization: run `mcp-token-broker connect {name}`"
                if state.binding is None:  # a record from before bindings: say so
                    try:
                        check_binding(settings, state)
                    except SettingsMismatch as exc:
                        message = str(exc)
                raise AuthorizationRequired(message)
        elif tokens.expires_at is not None:
            remaining = tokens.expires_at - now
            margin = refresh_margin(max(1.0, tokens.expires_at - tokens.obtained_at), self.min_margin)
            # A min_ttl beyond what the server grants is not met by refreshing a
            # token that is already as fresh as the server makes them.
            need = remaining <= margin or (
                remaining < min_ttl and not is_fresh(tokens.obtained_at, tokens.expires_at, now)
            )
            backing_off = self._retry_at.get(name, 0) > now
            good_enough = remaining >= max(MIN_SERVE_TTL, min_ttl)
            if need and not (backing_off and good_enough):
                try:
                    tokens = await asyncio.shield(self.refresh(name))
                except _REFRESH_FAILURES as exc:
                    if not good_enough:
                        self.audit.record(connection=name, client=client, outcome="failed", detail=exc.code)
                        raise
        if tokens is held:
            return tokens
        self.audit.record(connection=name, client=client, outcome="served")
        if self.events.has_subscribers:
            self.events.emit(TokenServed(name, client.name, client.app_pid or client.pid))
        return tokens

    async def open_proxy(self, name: str, client: ClientIdentity, *, on_hold: OnHold | None = None) -> Takeover:
        """A proxy session hosted here for `client`, authorized as a token request
        is (grants, policy, a person's answer). A connection that is not
        connected yet is not refused: as in the proxy process, each request
        says so until `connect` succeeds. Each request's token comes from
        `token_for` (checked each time; audited once per token the session uses).
        Past the limit of sessions (`serve --max-proxy-sessions`), `TooManySessions`
        before the 101: checked before the authorization too (a person is not asked
        to approve a session the limit refuses), and the place is taken after its waits."""
        server_url = self._require(name).server_url
        sessions = self.proxy_sessions
        if sessions.count >= sessions.max_sessions:
            raise TooManySessions(sessions.max_sessions)
        granted = self.grants.decide(client.key, name) if client.key else None
        if not (granted or (granted is None and self.policy == "allow")):
            await self._authorize(name, client, on_hold)
        release = sessions.reserve()  # checked again: others may have taken places during the waits
        return Takeover(
            UPGRADE, lambda sock: self.proxy_sessions.run(name, server_url, client, sock, release), abandon=release
        )

    async def report_rejected(self, name: str, client: ClientIdentity, token_sha256: object) -> dict[str, Any]:
        """A client's report that a server rejected (HTTP 401) the token with
        this SHA-256. If it is the current token, refresh once: the single
        flight in progress, else a new one at most every `REJECTED_INTERVAL`.
        The hash proves the reporter held the token; a stale one does nothing."""
        self._require(name)
        if not isinstance(token_sha256, str) or len(token_sha256) != 64 or not _HEX.issuperset(token_sha256.lower()):
            raise UsageError('send {"token_sha256": "<SHA-256 of the rejected access token, 64 hex digits>"}')
        state = self._states.get(name)
        tokens = state.tokens if state else None
        if tokens is None:
            return {"refreshed": False, "reason": "not_connected"}
        current = hashlib.sha256(tokens.access_token.reveal().encode()).hexdigest()
        if not hmac.compare_digest(current, token_sha256.lower()):
            return {"refreshed": False, "reason": "stale"}
        task = self._inflight.get(name)
        if task is None:
            now = self.clock()
            last = self._rejected_at.get(name)
            if last is not None and now - last < REJECTED_INTERVAL:
                return {
                    "refreshed": False,
                    "reason": "rate_limited",
                    "retry_after": math.ceil(last + REJECTED_INTERVAL - now),
                }
            self._rejected_at[name] = now
            log.info("%s reported %s's token rejected; refreshing", client.name, name)
            task = self.refresh(name)
        new = await asyncio.shield(task)  # or its AuthorizationRequired / RefreshError
        return {"refreshed": True, "expires_at": new.expires_at}

    async def report_insufficient_scope(
        self, name: str, client: ClientIdentity, token_sha256: object, scopes: object
    ) -> dict[str, Any]:
        """A client's report that a server answered 403 `insufficient_scope`
        with `scopes` to the token with this SHA-256 (RFC 6750 3.1). The next
        login asks for the union of the scopes asked before and these; the
        same set after `stepup.MAX_ATTEMPTS` logins that did not earn it is
        not asked for again. Kept in the settings; audited when it changes."""
        self._require(name)
        if not isinstance(token_sha256, str) or len(token_sha256) != 64 or not _HEX.issuperset(token_sha256.lower()):
            raise UsageError('send {"token_sha256": "<SHA-256 of the access token>", "scopes": [...]}')
        challenged = check_scopes(scopes)
        if challenged is None:
            raise UsageError(f"scopes must be a list of 1 to {MAX_SCOPES} OAuth scope tokens (RFC 6749 3.3)")
        state = self._states.get(name)
        tokens = state.tokens if state else None
        if tokens is None:
            return {"recorded": False, "reason": "not_connected"}
        current = hashlib.sha256(tokens.access_token.reveal().encode()).hexdigest()
        if not hmac.compare_digest(current, token_sha256.lower()):
            return {"recorded": False, "reason": "stale"}  # the proof of holding the token failed
        asked = state.requested_scope if state else ()

        def mark(txn: Any) -> tuple[StepUp | None, StepUp, ConnectionSettings] | None:
            settings = txn.settings.get(name)
            if settings is None:
                return None
            step = on_challenge(settings.step_up, challenged, tokens.scope, asked=settings.scopes)
            base = settings.scopes or asked or (settings.discovered.scopes if settings.discovered else ())
            # Given up: back to the scopes asked before the step-up (a refused scope breaks every login).
            request = next_request(step, settings.scopes) if step.given_up else union(base, challenged)
            new = txn.settings[name] = replace(settings, step_up=step, scopes=request)
            return settings.step_up, step, new

        async with self._write_lock(name):
            marked = await self.store.update(mark, secrets=False)
            if marked is not None and name in self._settings:
                self._settings[name] = marked[2]
        if marked is None:
            raise UnknownConnection(name)
        before, step, _ = marked
        missing = " ".join(step.missing)
        if step.given_up:
            message = (
                f"the server did not grant {name} the scope {missing} after {step.attempts} logins; "
                "ask its administrator for it"
            )
        else:
            message = (
                f"{name} needs more access (scope {missing}); run `mcp-token-broker connect {name}` "
                "or use Reconnect in the app"
            )
        if step != before:
            detail = f"not granted after {step.attempts} logins: {missing}" if step.given_up else f"needs {missing}"
            self.audit.record(connection=name, client=client, outcome="step_up", detail=detail)
            self.events.emit(ScopeStepUp(name, step.missing, step.given_up, message))
            self._changed(name)
        return {
            "recorded": True,
            "pending": step.pending,
            "given_up": step.given_up,
            "missing": list(step.missing),
            "message": message,
        }

    # -- admin operations -----------------------------------------------------

    async def add(self, body: dict[str, Any]) -> dict[str, Any]:
        secret = body.get("client_secret")
        settings = await self.engine.add(
            str(body.get("name", "")),
            str(body.get("server_url", "")),
            scopes=tuple(body.get("scopes") or ()),
            client_id=body.get("client_id"),
            client_secret=Secret(secret) if secret else None,
            client_metadata_url=body.get("client_metadata_url"),
            redirect_port=body.get("redirect_port"),
            redirect_path=body.get("redirect_path") or "/callback",
            use_resource=bool(body.get("use_resource", True)),
        )
        await self._reload()
        self._changed(settings.name)
        return {"connection": self.view(settings.name), "settings": settings.to_json()}

    async def adopt(self, name: str, body: object, client: ClientIdentity) -> dict[str, Any]:
        """Tokens `import --from mcp-remote` read from mcp-remote's files: into
        the vault under the connection's write lock, then reloaded, so memory
        and the vault agree at once. Audited; the answer never holds a token."""
        self._require(name)
        tokens, registration = read_adoption(body)
        async with self._write_lock(name):
            await self.engine.adopt(name, tokens, registration)  # refuses a connection holding tokens
        await self._reload()
        self.audit.record(connection=name, client=client, outcome="adopted", detail="adopted tokens from mcp-remote")
        self._failures.pop(name, None)
        self._retry_at.pop(name, None)
        self._schedule(name)
        self._changed(name)
        return {"connection": self.view(name)}

    def start_flow(self, name: str, mode: ConnectMode) -> Flow:
        self._require(name)
        for flow in self._flows.values():
            if flow.name == name and not flow.done:
                if flow.mode == mode:
                    return flow  # one login per connection at a time
                flow.cancel()  # another way to log in (the browser's, a device's) replaces it
        flow = Flow(id=secrets.token_hex(8), name=name, mode=mode)

        def on_event(event: FlowEvent) -> None:
            entry: dict[str, Any] = {"stage": event.stage, "message": event.message, "url": event.url}
            if event.user_code is not None:  # device login: what the user enters, and until when
                entry.update(user_code=event.user_code, url_complete=event.url_complete, expires_at=event.expires_at)
            flow.push(entry)
            self.events.emit(FlowProgress(name, flow.id, event.stage, event.message, event.url))

        async def run() -> None:
            try:
                await self.engine.connect(name, mode=mode, on_event=on_event, read_pasted_url=flow.next_paste)
            except asyncio.CancelledError:
                flow.error = {"error": "cancelled", "message": "the login was cancelled"}
                raise
            except BrokerError as exc:
                flow.error = {"error": exc.code, "message": str(exc)}
            finally:
                try:
                    await self._reload()  # before `done`: whoever waits on the flow then sees its result
                finally:
                    flow.finish()
                    self.events.emit(FlowFinished(name, flow.id, flow.error))
                    self._failures.pop(name, None)
                    self._retry_at.pop(name, None)
                    self._schedule(name)
                    self._changed(name)

        flow.task = self._spawn(run(), f"connect-{name}")
        self._flows[flow.id] = flow
        # Forget finished flows after a while.
        for old_id, old in list(self._flows.items()):
            if old.done and old_id != flow.id and len(self._flows) > 32:
                del self._flows[old_id]
        return flow

    def flow(self, flow_id: str) -> Flow:
        flow = self._flows.get(flow_id)
        if flow is None:
            raise ApiError("unknown_flow", f"no login flow {flow_id!r}")
        return flow

    async def _quiesce(self, name: str) -> None:
        """Before changing a connection's tokens: no refresh may land afterwards,
        and a token set held only in memory is written (revocation then ends
        the newest grant)."""
        self._require(name)
        self.scheduler.set(name, None)
        task = self._inflight.get(name)
        if task is not None:
            await asyncio.wait([task])
        if name in self._unsaved:
            await self._persist(name, lambda st: None)

    async def disconnect(self, name: str) -> dict[str, Any]:
        await self._quiesce(name)
        revocation = await self.engine.disconnect(name)
        await self._reload()
        self._changed(name)
        # `revocation.still_valid`: the server refused or was not asked, and
        # the tokens keep working elsewhere until they expire.
        warning = revocation.message(self.clock())
        return {"connection": self.view(name), "warning": warning, "revocation": revocation.to_json()}

    async def remove(self, name: str) -> dict[str, Any]:
        if self._orphan(name) is None:
            await self._quiesce(name)
        warning = await self.engine.remove(name)
        await self._reload()
        self.grants.forget_connection(name)
        await self.grants.saved()
        self.events.emit(ConnectionRemoved(name))
        return {"removed": name, "warning": warning}

    async def show(self, name: str) -> dict[str, Any]:
        if self._orphan(name) is not None:
            return await off_loop(self.engine.show, name)
        self._require(name)
        view = await off_loop(self.engine.show, name)
        view["next_refresh_at"] = self.scheduler.deadline(name)
        view["refresh_failures"] = self._failures.get(name, 0)
        return view

    def pending_approvals(self) -> list[dict[str, Any]]:
        """What is waiting, for `approvals`: never the one-time code."""
        return [
            {"id": r.id, "connection": r.connection, "client": r.client.to_json(), "needs_code": r.needs_code}
            for r in self._approvals.values()
            if not r.answered
        ]

    def answer_approval(self, approval_id: str, decision: str, *, code: str, answerer: ClientIdentity) -> None:
        """An answer over the socket. Refused (403, audited) in the desktop app,
        from the requester or a process related to it, and without the right
        one-time code; the third wrong code refuses the request itself."""
        if decision not in DECISIONS:
            raise UsageError(f"decision must be one of {', '.join(DECISIONS)}")
        request = next((r for r in self._approvals.values() if r.id == approval_id and not r.answered), None)
        if request is None:
            raise ApiError("unknown_approval", f"no pending approval {approval_id!r}")
        if not request.needs_code:
            refusal = "this broker asks in its desktop app: answer in its window"
        elif self._related(request, answerer):
            refusal = "the application that asked, or a process it started or that started it, may not answer"
        elif not code:
            refusal = (
                "an answer needs the one-time code the broker showed where it runs (its terminal or a notification)"
            )
        elif not request.check_code(code):
            if request.answered:
                refusal = "wrong code; that was the last try, so the request was refused"
            else:
                refusal = f"wrong code; {request.tries_left} tries left"
        else:
            request.answer(cast(Decision, decision), by=answerer.describe(), by_pid=answerer.app_pid or answerer.pid)
            return
        self.audit.record(
            connection=request.connection,
            client=request.client,
            outcome="answer_refused",
            detail=refusal,
            fields={
                "decision": decision,
                "answered_by": answerer.describe(),
                "answered_by_pid": answerer.app_pid or answerer.pid,
            },
        )
        raise AnswerRefused(refusal)

    @staticmethod
    def _related(request: ApprovalRequest, answerer: ClientIdentity) -> bool:
        """The answerer is the requester, one of its ancestors, or one of its descendants."""
        if answerer.pid is None:
            return True  # unknown: never trusted to answer
        if answerer.pid in request.requester_pids or answerer.pid in request.requester_ancestors:
            return True
        return not request.requester_pids.isdisjoint(ancestors(answerer.pid))

    def _answered(self, request: ApprovalRequest, decision: str, by: str, by_pid: int | None) -> None:
        fields: dict[str, Any] = {"decision": decision, "answered_by": by}
        if by_pid is not None:
            fields["answered_by_pid"] = by_pid
        self.audit.record(
            connection=request.connection,
            client=request.client,
            outcome="answered",
            detail=f"{decision} by {by}",
            fields=fields,
        )

    def _announce(self, request: ApprovalRequest, code: str) -> None:
        """Show the one-time code where only the user looks: this process's
        stderr (the `serve` terminal) and, if there is one, a desktop notification."""
        client = request.client
        line = (
            f"{client.describe()} asks for {request.connection}'s token (approval {request.id}). "
            f"To answer within {self.approval_timeout:.0f} s, run `mcp-token-broker approve {request.id} "
            f"allow_session` ({UNTIL_STOP}; or allow_always, deny_session, deny_always) and type the code {code}"
        )
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"mcp-token-broker: {line}\n")
            sys.stderr.flush()
        notify_desktop(f"{client.name} asks for {request.connection}'s token", line)

    def _identity_changed(self, identity: ClientIdentity, problem: str) -> None:
        self.audit.record(connection=None, client=identity, outcome="identity_changed", detail=f"the process {problem}")

    # -- the socket API ---------------------------------------------------------

    async def handle(self, request: ApiRequest) -> tuple[int, Any]:
        """Answer one socket API request: `broker.service.routes` parses it, calls this
        service, and turns its `BrokerError`s into error answers."""
        return await self._route(self, request)

    def show_window(self) -> None:
        if not self.ui:
            raise ApiError("no_ui", "this broker runs headless (mcp-token-broker serve); it has no window")
        self.events.emit(ShowRequested())

    def health(self) -> dict[str, Any]:
        try:
            event_loop: str | None = loop_name(asyncio.get_running_loop())
        except RuntimeError:  # asked from outside the loop (a test)
            event_loop = None
        return {
            "status": "ok",
            "version": __version__,
            "pid": os.getpid(),
            "policy": self.policy,
            "connections": len(self._settings),
            "proxy_sessions": self.proxy_sessions.count,
            "proxy_ready": self.proxy_sessions.ready,
            "ui": self.ui,
            "event_loop": event_loop,
        }

    # -- the desktop app's facade ----------------------------------------------
    # What `ui/` uses besides the public operations above (views, view, show,
    # health, add, start_flow, flow, disconnect, remove): it reads no private
    # attribute and reaches into no member object. The app calls these on the
    # loop thread through `ui.bridge`; the properties are safe from any thread.

    @property
    def socket_path(self) -> Path:
        return self.api.socket_path

    @property
    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_until_stopping(self) -> None:
        """Return once `request_stop` (or a signal) asked the service to stop."""
        await self._stopping.wait()

    def current_config(self) -> Config:
        """The client policy and refresh margin in force."""
        return Config(client_policy=self.policy, refresh_margin=int(self.min_margin))

    async def apply_settings(self, policy: Policy, refresh_margin: int) -> Config:
        """Save `config.json`, then apply: the policy from the next request on,
        every connection rescheduled with the margin. The file is written on a
        worker thread, never on the loop; if the write fails, nothing changes."""
        if policy not in POLICIES:
            raise UsageError(f"unknown client policy {policy!r}; use one of {', '.join(POLICIES)}")
        if isinstance(refresh_margin, bool) or not isinstance(refresh_margin, int) or not 60 <= refresh_margin <= 3600:
            raise UsageError("the refresh margin must be a whole number of seconds from 60 to 3600")
        config = Config(client_policy=policy, refresh_margin=refresh_margin)
        await off_loop(save_config, self.paths, config)
        self.policy = policy
        self.min_margin = refresh_margin
        self.reschedule_all()
        return config

    def reschedule_all(self) -> None:
        """Recompute every connection's refresh deadline (after a margin change)."""
        for name in list(self._settings):
            self._schedule(name)

    async def discover(self, url: str, *, scopes: tuple[str, ...] = (), client_id: str | None = None) -> Any:
        """What `add` would find at `url`, without adding it (the add dialog's preview)."""
        return await self.engine.discover(url, scopes=scopes, client_id=client_id)

    async def recent_audit(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The last `limit` audit entries of `name`, read off the loop."""
        from .audit import read_audit

        return await asyncio.to_thread(read_audit, self.paths.state_dir / "audit.log", connection=name, limit=limit)

    def list_grants(self) -> list[dict[str, Any]]:
        return [g.to_json() for g in self.grants.list()]

    async def revoke_grant(self, grant_id: str) -> bool:
        """Revoke a grant; False if there was none with that id."""
        revoked = self.grants.revoke(grant_id) is not None
        await self.grants.saved()
        return revoked

    def cancel_flow(self, flow_id: str) -> None:
        """Cancel a running login (the connect dialog's Cancel)."""
        self.flow(flow_id).cancel()
