"""A connection's status: its own tiny module (stdlib only), so the desktop
app's table imports it before the first paint without loading the broker."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status"]


class Status(StrEnum):
    """A connection's status in the socket API, the CLI and the app. A
    `StrEnum`: each member is its JSON string, so the API's JSON is unchanged."""

    NOT_CONNECTED = "not_connected"
    CONNECTED = "connected"
    EXPIRED = "expired"
    REAUTH_REQUIRED = "reauth_required"
    #: A vault record without settings (`broker.model.orphan_view`): kept, never served.
    ORPHANED = "orphaned"
