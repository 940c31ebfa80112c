"""What one row of the connections table shows, derived without Qt.

The service's events update a `RowState`; `display_status` turns it into
one of the statuses the window shows. Keeping this Qt-free lets the rules be
tested on their own and keeps the table model a thin adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["RowState", "display_status", "STATUS_TEXT", "STATUS_HELP", "format_expires_in", "EXPIRING_SOON"]

#: A connected token with less than this left shows as "expiring soon".
EXPIRING_SOON = 120

STATUS_TEXT = {
    "connected": "Connected",
    "expiring": "Expiring soon",
    "refreshing": "Refreshing",
    "expired": "Expired",
    "reauth_required": "Re-authorization required",
    "error": "Error",
    "not_connected": "Not connected",
}

STATUS_HELP = {
    "connected": "The broker holds a valid token and refreshes it before it expires.",
    "expiring": "The token expires within two minutes.",
    "refreshing": "The broker is getting a new token from the authorization server right now.",
    "expired": "The token has expired; the broker refreshes it on the next request if it can.",
    "reauth_required": "The server no longer accepts the refresh token: connect again to log in.",
    "error": "The last refresh failed; the broker keeps retrying and serves the valid token meanwhile.",
    "not_connected": "No tokens yet: connect to log in through your browser.",
}


@dataclass(frozen=True)
class RowState:
    name: str
    server_url: str
    status: str
    scopes: tuple[str, ...] = ()
    expires_at: int | None = None
    refreshing: bool = False
    error: str | None = None
    last_refresh_at: float | None = None

    @classmethod
    def from_view(cls, view: dict[str, Any], previous: RowState | None = None) -> RowState:
        row = cls(
            name=view["name"],
            server_url=view["server_url"],
            status=view["status"],
            scopes=tuple(view.get("scopes") or ()),
            expires_at=view.get("expires_at"),
        )
        if previous is not None:
            row = replace(row, last_refresh_at=previous.last_refresh_at, error=previous.error)
        if row.status in ("not_connected", "reauth_required"):
            row = replace(row, error=None)
        return row


def display_status(row: RowState, now: float) -> str:
    if row.refreshing:
        return "refreshing"
    if row.status == "reauth_required":
        return "reauth_required"
    if row.status == "not_connected":
        return "not_connected"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    if row.error:
        return "error"
    if row.expires_at is not None and row.expires_at - now < EXPIRING_SOON:
        return "expiring"
    return "connected"


def format_expires_in(expires_at: int | None, now: float) -> str:
    if expires_at is None:
        return "—"
    left = int(expires_at - now)
    if left <= 0:
        return "expired"
    hours, rest = divmod(left, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 48:
        return f"{hours // 24}d {hours % 24}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}:{seconds:02d}"
