"""What one row of the connections table shows, derived without Qt.

The service's events update a `RowState`; `display_status` turns it into
one of the statuses the window shows. Keeping this Qt-free lets the rules be
tested on their own and keeps the table model a thin adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from broker.status import Status

if TYPE_CHECKING:
    from broker.model import ConnectionView

__all__ = [
    "EXPIRING_SOON",
    "STATUS_HELP",
    "STATUS_TEXT",
    "DisplayStatus",
    "RowState",
    "display_status",
]

#: A connected token with less than this left shows as "expiring soon".
EXPIRING_SOON = 120


class DisplayStatus(StrEnum):
    """What a row shows: the broker's `Status`, plus what only the app knows
    (a refresh running, the last one failed, expiry near)."""

    CONNECTED = Status.CONNECTED.value
    EXPIRING = "expiring"
    REFRESHING = "refreshing"
    EXPIRED = Status.EXPIRED.value
    REAUTH_REQUIRED = Status.REAUTH_REQUIRED.value
    ERROR = "error"
    NOT_CONNECTED = Status.NOT_CONNECTED.value


STATUS_TEXT: dict[DisplayStatus, str] = {
    DisplayStatus.CONNECTED: "Connected",
    DisplayStatus.EXPIRING: "Expiring soon",
    DisplayStatus.REFRESHING: "Refreshing",
    DisplayStatus.EXPIRED: "Expired",
    DisplayStatus.REAUTH_REQUIRED: "Re-authorization required",
    DisplayStatus.ERROR: "Error",
    DisplayStatus.NOT_CONNECTED: "Not connected",
}

STATUS_HELP: dict[DisplayStatus, str] = {
    DisplayStatus.CONNECTED: "The broker holds a valid token and refreshes it before it expires.",
    DisplayStatus.EXPIRING: "The token expires within two minutes.",
    DisplayStatus.REFRESHING: "The broker is getting a new token from the authorization server right now.",
    DisplayStatus.EXPIRED: "The token has expired; the broker refreshes it on the next request if it can.",
    DisplayStatus.REAUTH_REQUIRED: "The server no longer accepts the refresh token: connect again to log in.",
    DisplayStatus.ERROR: "The last refresh failed; the broker keeps retrying and serves the valid token meanwhile.",
    DisplayStatus.NOT_CONNECTED: "No tokens yet: connect to log in through your browser.",
}


@dataclass(frozen=True)
class RowState:
    name: str
    server_url: str
    status: Status
    scopes: tuple[str, ...] = ()
    expires_at: int | None = None
    refreshing: bool = False
    error: str | None = None
    last_refresh_at: float | None = None

    @classmethod
    def from_view(cls, view: ConnectionView | Mapping[str, Any], previous: RowState | None = None) -> RowState:
        """From a `ConnectionView`, in process or as JSON (status a plain string)."""
        row = cls(
            name=view["name"],
            server_url=view["server_url"],
            status=Status(view["status"]),
            scopes=tuple(view.get("scopes") or ()),
            expires_at=view.get("expires_at"),
        )
        if previous is not None:
            row = replace(row, last_refresh_at=previous.last_refresh_at, error=previous.error)
        if row.status in (Status.NOT_CONNECTED, Status.REAUTH_REQUIRED):
            row = replace(row, error=None)
        return row


def display_status(row: RowState, now: float) -> DisplayStatus:
    if row.refreshing:
        return DisplayStatus.REFRESHING
    if row.status == Status.REAUTH_REQUIRED:
        return DisplayStatus.REAUTH_REQUIRED
    if row.status == Status.NOT_CONNECTED:
        return DisplayStatus.NOT_CONNECTED
    if row.expires_at is not None and row.expires_at <= now:
        return DisplayStatus.EXPIRED
    if row.error:
        return DisplayStatus.ERROR
    if row.expires_at is not None and row.expires_at - now < EXPIRING_SOON:
        return DisplayStatus.EXPIRING
    return DisplayStatus.CONNECTED
