"""The one place where the asyncio service and Qt meet.

`ServiceRunner` runs a `BrokerService` on its own asyncio loop in a worker
thread. `Bridge` turns the service's plain events into Qt signals (emitted
from the loop thread, delivered queued on the GUI thread) and turns UI
commands into coroutines scheduled on the loop, with results delivered back
on the GUI thread. The window therefore never waits on the network or the
vault.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QObject, Signal, Slot

if TYPE_CHECKING:  # imported on the worker thread, so the window paints sooner
    import concurrent.futures

    from broker.service import events as ev
    from broker.service.service import BrokerService

__all__ = ["ServiceRunner", "Bridge"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceRunner:
    """Owns the worker thread and its event loop."""

    def __init__(self, make_service: Callable[[], BrokerService]) -> None:
        self._make_service = make_service
        self.service: BrokerService | None = None
        self.loop: Any = None  # the asyncio loop, once running
        self._thread = threading.Thread(target=self._run, name="broker-service", daemon=True)
        self._started = threading.Event()
        self._subscribers: list[Callable[[ev.Event], None]] = []
        self._on_started: Callable[[BaseException | None], None] | None = None
        self._stopped = False
        self.error: BaseException | None = None

    def subscribe(self, callback: Callable[[ev.Event], None]) -> None:
        """Call before `start`: `callback` runs on the loop thread for every event."""
        self._subscribers.append(callback)

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until the service serves (or raise its error)."""
        self.start_in_background()
        if not self._started.wait(timeout):
            raise TimeoutError("the broker service did not start")
        if self.error is not None:
            raise self.error

    def start_in_background(self, on_started: Callable[[BaseException | None], None] | None = None) -> None:
        """Start without waiting; `on_started(error or None)` runs on the worker thread."""
        self._on_started = on_started
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self._started.is_set() and self.error is None and not self.stopped

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _run(self) -> None:
        from broker.service import eventloop  # on the worker thread: the window need not wait for it

        eventloop.run(self._main())

    async def _main(self) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        try:
            self.service = self._make_service()
            for callback in self._subscribers:
                self.service.events.subscribe(callback)
            await self.service.start()
        except BaseException as exc:  # noqa: BLE001 - reported to the GUI thread by start()
            self.error = exc
            self._started.set()
            if self._on_started is not None:
                self._on_started(exc)
            return
        self._started.set()
        if self._on_started is not None:
            self._on_started(None)
        await self.service.wait_until_stopping()
        await self.service.stop()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        import asyncio

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 20.0) -> None:
        self._stopped = True
        if self.loop is not None and self.service is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.service.request_stop)
        self._thread.join(timeout)


class Bridge(QObject):
    """Qt face of the service. Every signal is delivered on the GUI thread."""

    connectionChanged = Signal(str, dict)
    connectionRemoved = Signal(str)
    refreshStarted = Signal(str)
    tokenRefreshed = Signal(str, object)
    refreshFailed = Signal(str, str, object)
    reauthRequired = Signal(str, str)
    scopeStepUp = Signal(str, str, bool)  # name, the user's line, given up
    clientAsked = Signal(object)
    #: (approval id, "answered" | "refused" | "expired"): the question is over, wherever it was answered.
    approvalClosed = Signal(str, str)
    tokenServed = Signal(str, str, object)
    accessDenied = Signal(str, str, object, str)
    flowProgress = Signal(str, str, str, str, object)
    flowFinished = Signal(str, str, object)
    showRequested = Signal()
    #: The service serves: commands may run. Emitted once.
    ready = Signal()
    #: The service could not start (e.g. no keyring); the argument is the error.
    failed = Signal(object)
    _done = Signal(object, object, object)
    _started = Signal(object)

    def __init__(self, runner: ServiceRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self._pending: list[tuple[Any, Any, Any]] = []
        runner.subscribe(self._on_event)
        self._done.connect(self._deliver)
        self._started.connect(self._on_started)

    def start(self) -> None:
        """Start the service in the background; `ready` or `failed` follows."""
        self.runner.start_in_background(self._started.emit)

    @property
    def is_ready(self) -> bool:
        return self.runner.ready

    @Slot(object)
    def _on_started(self, error: BaseException | None) -> None:
        if error is not None:
            self.failed.emit(error)
            return
        pending, self._pending = self._pending, []
        for make_coro, on_done, on_error in pending:
            self.run(make_coro, on_done, on_error)
        self.ready.emit()

    @property
    def service(self) -> BrokerService:
        assert self.runner.service is not None
        return self.runner.service

    # -- events: loop thread -> signals -----------------------------------------

    def _on_event(self, event: ev.Event) -> None:
        from broker.service import events as ev  # already loaded by the service: a dict lookup

        if isinstance(event, ev.ConnectionChanged):
            self.connectionChanged.emit(event.name, dict(event.view))
        elif isinstance(event, ev.ConnectionRemoved):
            self.connectionRemoved.emit(event.name)
        elif isinstance(event, ev.RefreshStarted):
            self.refreshStarted.emit(event.name)
        elif isinstance(event, ev.TokenRefreshed):
            self.tokenRefreshed.emit(event.name, event.expires_at)
        elif isinstance(event, ev.RefreshFailed):
            self.refreshFailed.emit(event.name, event.error, event.retry_at)
        elif isinstance(event, ev.ReauthRequired):
            self.reauthRequired.emit(event.name, event.reason)
        elif isinstance(event, ev.ScopeStepUp):
            self.scopeStepUp.emit(event.name, event.message, event.given_up)
        elif isinstance(event, ev.ClientAsked):
            self.clientAsked.emit(event.request)
        elif isinstance(event, ev.ApprovalClosed):
            self.approvalClosed.emit(event.approval_id, event.outcome)
        elif isinstance(event, ev.TokenServed):
            self.tokenServed.emit(event.name, event.client, event.pid)
        elif isinstance(event, ev.AccessDenied):
            self.accessDenied.emit(event.name, event.client, event.pid, event.reason)
        elif isinstance(event, ev.FlowProgress):
            self.flowProgress.emit(event.name, event.flow_id, event.stage, event.message, event.url)
        elif isinstance(event, ev.FlowFinished):
            self.flowFinished.emit(event.name, event.flow_id, event.error)
        elif isinstance(event, ev.ShowRequested):
            self.showRequested.emit()

    # -- commands: GUI thread -> loop -------------------------------------------

    def run(
        self,
        make_coro: Callable[[BrokerService], Coroutine[Any, Any, T]],
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> concurrent.futures.Future[T] | None:
        """Run `make_coro(service)` on the loop; call back on the GUI thread.
        Commands given before the service is ready wait for it (None is
        returned: there is no future yet); commands given after it stopped
        (a late signal while quitting) are dropped (None)."""
        if self.runner.stopped:
            return None
        if not self.runner.ready:
            self._pending.append((make_coro, on_done, on_error))
            return None

        async def wrapped() -> T:
            return await make_coro(self.service)

        future = self.runner.submit(wrapped())
        future.add_done_callback(lambda f: self._done.emit(f, on_done, on_error))
        return future

    def call(
        self,
        fn: Callable[[BrokerService], T],
        on_done: Callable[[T], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> concurrent.futures.Future[T] | None:
        """Run a plain function of the service on the loop thread (as `run`)."""

        async def as_coro(service: BrokerService) -> T:
            return fn(service)

        return self.run(as_coro, on_done, on_error)

    def answer(self, request: Any, decision: str) -> None:
        if not self.runner.stopped:
            self.runner.call_soon(request.answer, decision)

    @Slot(object, object, object)
    def _deliver(self, future: concurrent.futures.Future[Any], on_done: Any, on_error: Any) -> None:
        try:
            result = future.result()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            if on_error is not None:
                on_error(exc)
            else:
                log.warning("background task failed: %s", exc)
            return
        if on_done is not None:
            on_done(result)
