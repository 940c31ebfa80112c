"""Plain events the service emits, and the bus that carries them.

The GUI adapts these to Qt signals; the CLI and tests subscribe directly.
Callbacks run synchronously on the service's loop and must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Event",
    "ConnectionChanged",
    "ConnectionRemoved",
    "TokenRefreshed",
    "RefreshFailed",
    "ReauthRequired",
    "ScopeStepUp",
    "ClientAsked",
    "ApprovalClosed",
    "TokenServed",
    "AccessDenied",
    "FlowProgress",
    "FlowFinished",
    "RefreshStarted",
    "ShowRequested",
    "EventBus",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class ConnectionChanged(Event):
    """Added, connected, disconnected or otherwise changed; `view` is the public shape."""

    name: str
    view: Mapping[str, Any]


@dataclass(frozen=True)
class ConnectionRemoved(Event):
    name: str


@dataclass(frozen=True)
class TokenRefreshed(Event):
    name: str
    expires_at: int | None


@dataclass(frozen=True)
class RefreshFailed(Event):
    name: str
    error: str
    retry_at: float | None


@dataclass(frozen=True)
class ReauthRequired(Event):
    name: str
    reason: str


@dataclass(frozen=True)
class ScopeStepUp(Event):
    """A server asked for more scope (`broker.stepup`): `missing` is what a
    login would add; `given_up` when logins did not earn it and nobody is asked
    again. `message` is the user's one line."""

    name: str
    missing: tuple[str, ...]
    given_up: bool
    message: str


@dataclass(frozen=True)
class ClientAsked(Event):
    """A client without a grant asks for a token under the `ask` policy.
    Answer with `request.answer(...)` (see `broker.service.grants.ApprovalRequest`)."""

    request: Any


@dataclass(frozen=True)
class ApprovalClosed(Event):
    """A question `ClientAsked` posed is over: `outcome` is "answered" (by
    whoever: a window, `approve` with the code), "refused" (wrong codes) or
    "expired" (nobody answered in time). Windows showing it close."""

    approval_id: str
    outcome: str


@dataclass(frozen=True)
class TokenServed(Event):
    name: str
    client: str
    pid: int | None


@dataclass(frozen=True)
class AccessDenied(Event):
    name: str
    client: str
    pid: int | None
    reason: str


@dataclass(frozen=True)
class FlowProgress(Event):
    name: str
    flow_id: str
    stage: str
    message: str
    url: str | None = None


@dataclass(frozen=True)
class FlowFinished(Event):
    """A login ended: `error` is None on success, else {"error", "message"}."""

    name: str
    flow_id: str
    error: dict[str, str] | None


@dataclass(frozen=True)
class RefreshStarted(Event):
    name: str


@dataclass(frozen=True)
class ShowRequested(Event):
    """A second launch of the desktop app asks the running one to show itself."""


@dataclass
class EventBus:
    _subscribers: list[Callable[[Event], None]] = field(default_factory=list)

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the service
                log.exception("event subscriber failed on %s", type(event).__name__)

    @property
    def has_subscribers(self) -> bool:
        return bool(self._subscribers)
