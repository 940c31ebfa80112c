"""The SVG icon set from `resources/`, shared by window, tray and installer."""

from __future__ import annotations

import os
from functools import cache

from PySide6.QtGui import QIcon

__all__ = ["icon", "app_icon", "STATUS_ICONS", "resource_path"]

STATUS_ICONS = {
    "connected": "connected",
    "expiring": "expiring",
    "refreshing": "refreshing",
    "expired": "expired",
    "reauth_required": "reauth",
    "error": "error",
    "not_connected": "not-connected",
}


def resource_path(name: str) -> str:
    # A plain directory in both the checkout and an installed wheel, so the
    # package's own path serves (importlib.resources costs start-up time).
    import mcp_token_broker_resources  # type: ignore[import-not-found]  # resources/, mapped by setuptools

    return os.path.join(os.path.dirname(mcp_token_broker_resources.__file__), name)


@cache
def icon(name: str) -> QIcon:
    return QIcon(resource_path(f"icons/{name}.svg"))


def app_icon() -> QIcon:
    return icon("app")
