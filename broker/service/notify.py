"""Desktop notifications for the headless service: best effort, never required.

Sent over the session D-Bus (org.freedesktop.Notifications) with jeepney,
which the keyring's Secret Service backend already brings on Linux. Not
through `notify-send`: its argv, with the text in it, would be readable by
every user in /proc/PID/cmdline. Without jeepney or a session bus, or when
nothing answers, nothing happens. Runs on a daemon thread, so the event loop
never waits for the bus.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["notify_desktop", "plain_for_notification"]

log = logging.getLogger(__name__)

_TIMEOUT_MS = 60_000


def plain_for_notification(text: str) -> str:
    """Notification servers may read markup in the body: untrusted text must not carry any."""
    return text.replace("&", "＆").replace("<", "‹").replace(">", "›")


def notify_desktop(summary: str, body: str) -> None:
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return
    try:
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:
        return

    def send() -> None:
        try:
            with open_dbus_connection(bus="SESSION") as conn:
                address = DBusAddress(
                    "/org/freedesktop/Notifications",
                    bus_name="org.freedesktop.Notifications",
                    interface="org.freedesktop.Notifications",
                )
                message = new_method_call(
                    address,
                    "Notify",
                    "susssasa{sv}i",
                    (
                        "MCP Token Broker",
                        0,
                        "",
                        plain_for_notification(summary),
                        plain_for_notification(body),
                        [],
                        {},
                        _TIMEOUT_MS,
                    ),
                )
                conn.send_and_get_reply(message, timeout=5)
        except Exception as exc:  # noqa: BLE001 - a notification is a courtesy; the terminal line is the record
            log.debug("no desktop notification: %s", type(exc).__name__)

    threading.Thread(target=send, name="desktop-notification", daemon=True).start()
