"""Opening the user's browser, safely.

All flows (CLI and GUI) go through `open_browser`. It refuses anything but
https, or http to a loopback host, before a URL gets anywhere near
`webbrowser`, which would happily hand `file:` or `javascript:` to a shell
handler. `webbrowser` honours `$BROWSER`, which is also how the tests play
the user.
"""

from __future__ import annotations

import webbrowser

from .errors import BrowserRefused, UnsafeEndpoint
from .urls import check_endpoint_url

__all__ = ["open_browser"]


def open_browser(url: str) -> bool:
    """Open `url` in the system browser. Returns False if no browser could start.

    May block while a `$BROWSER` command runs, so async callers should use
    `asyncio.to_thread`.
    """
    try:
        check_endpoint_url(url, "the authorization URL")
    except UnsafeEndpoint as exc:
        raise BrowserRefused(f"refusing to open a browser: {exc}") from None
    try:
        return bool(webbrowser.open(url, new=1, autoraise=True))
    except webbrowser.Error:
        return False
