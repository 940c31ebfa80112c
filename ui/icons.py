"""The SVG icon set from `resources/`, shared by window, tray and installer."""

from __future__ import annotations

import importlib.resources
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
    return str(importlib.resources.files("mcp_token_broker_resources").joinpath(name))


@cache
def icon(name: str) -> QIcon:
    return QIcon(resource_path(f"icons/{name}.svg"))


def app_icon() -> QIcon:
    return icon("app")
