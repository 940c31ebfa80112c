"""The browser side of a login: where the driver gets an authorization code.

`CodeReceiver` answers a login flow's `NeedCode` steps (`broker.oauth.flows`): it
opens the browser (or shows the URL), reads pasted URLs, and waits on the
loopback listener. A retry after `invalid_client` asks for a second code; the
first listener has closed by then, so the receiver listens again on the same
port, which the redirect URI names.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Literal, Self
from urllib.parse import urlsplit

from ..errors import BrokerError, RedirectPortUnavailable
from ..model import ConnectionSettings
from ..oauth.authorization import (
    PendingAuthorization,
    callback_params_from_url,
    validate_callback,
)
from ..oauth.flows import FlowEvent
from ..oauth.registration import ClientRegistration
from ..secret import Secret
from .loopback import LoopbackListener

__all__ = ["CodeReceiver", "ConnectMode", "EventSink", "bind_listener"]

ConnectMode = Literal["browser", "no-browser", "paste", "device"]
EventSink = Callable[[FlowEvent], None]


async def bind_listener(settings: ConnectionSettings, previous: ClientRegistration | None) -> LoopbackListener:
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
        await listener.start()  # a new port: the registration is renewed by the login flow
    return listener


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


class CodeReceiver:
    """One browser round trip per `code_for` call, on a started listener;
    closes the listener on exit."""

    def __init__(
        self,
        listener: LoopbackListener,
        *,
        mode: ConnectMode,
        emit: EventSink,
        opener: Callable[[str], bool],
        timeout: float,
        read_pasted_url: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.listener = listener
        self._mode = mode
        self._emit = emit
        self._opener = opener
        self._timeout = timeout
        self._read_pasted_url = read_pasted_url
        self._used = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.listener.aclose()

    async def code_for(self, pending: PendingAuthorization) -> Secret:
        if self._used:
            # The last wait closed the listener: listen again where the redirect URI points.
            self.listener = LoopbackListener(port=self.listener.port, path=self.listener.path)
            await self.listener.start()
        self._used = True
        listener, emit = self.listener, self._emit

        def validate(params: dict[str, str]) -> Secret:
            return validate_callback(pending, params)

        emit(FlowEvent("waiting_for_browser", "waiting for the login in the browser", pending.url))
        if self._mode == "browser":
            loop = asyncio.get_running_loop()

            def failed() -> None:
                loop.call_soon_threadsafe(
                    emit, FlowEvent("browser_failed", "no browser could be opened; open the URL yourself", pending.url)
                )

            _start_browser_thread(self._opener, pending.url, failed)
        paste_task = None
        read_pasted_url = self._read_pasted_url
        if self._mode == "paste" and read_pasted_url is not None:

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
            return await listener.wait(validate, self._timeout)
        finally:
            if paste_task is not None:
                paste_task.cancel()
