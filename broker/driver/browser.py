"""Opening the user's browser, safely, and without the login on a command line.

`open_browser` refuses anything but https, or http to a loopback host, before
a URL gets anywhere near a browser: `webbrowser` would happily hand `file:`
or `javascript:` to a shell handler.

The authorization URL carries `state` and the PKCE challenge, and every
local user can read every process's command line (/proc/PID/cmdline). With
them, another user could finish the login with their own account. So the URL
is never an argument of a program we start. It goes into a small page that
redirects to it (`<meta http-equiv="refresh">`, as Jupyter does for its
token), 0600 in a fresh 0700 directory under `$XDG_RUNTIME_DIR` (else the
temp dir), and that page is what gets opened:

1. through the freedesktop OpenURI portal's `OpenFile`, which takes the page
   as a file descriptor over D-Bus: no command line at all, and sandboxed
   browsers (snap, flatpak) get the page through the document portal. Tried
   when `$BROWSER` is unset and there is a session bus (jeepney comes with
   keyring's Secret Service backend on Linux). Not `OpenURI(url)`: the portal
   would start the browser with the URL as its argument.
2. otherwise through `webbrowser`, which honours `$BROWSER` (how the tests
   play the user); the command line then holds only the page's `file:` URL.

`file:` is only ever our own page, written after the URL check: no caller
can have a file opened. The page is deleted `PAGE_LIFETIME` seconds later,
when the browser has long read it, or at exit.

The portal call is tested against a stand-in portal service on the tests'
private session bus; a real xdg-desktop-portal is not part of CI.
"""

from __future__ import annotations

import atexit
import html
import os
import shutil
import stat
import sys
import tempfile
import threading
import webbrowser
from pathlib import Path

from ..errors import BrowserRefused, UnsafeEndpoint
from ..oauth.urls import check_endpoint_url

__all__ = ["PAGE_LIFETIME", "discard_pages", "open_browser"]

#: Seconds the redirect page lives: time enough for a browser to start cold.
PAGE_LIFETIME = 120.0
PORTAL_TIMEOUT = 10.0

_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0;url={url}">
<title>MCP Token Broker</title></head>
<body><p><a href="{url}">Continue to the login page</a></p></body></html>
"""

_pages: set[Path] = set()
_pages_lock = threading.Lock()


def open_browser(url: str) -> bool:
    """Open `url` in the system browser. Returns False if no browser could start.

    May block while a `$BROWSER` command runs, so async callers should use
    `asyncio.to_thread`.
    """
    try:
        check_endpoint_url(url, "the authorization URL")
    except UnsafeEndpoint as exc:
        raise BrowserRefused(f"refusing to open a browser: {exc}") from None
    page = _write_page(url)
    try:
        opened = _open_with_portal(page) or bool(webbrowser.open(page.as_uri(), new=1, autoraise=True))
    except webbrowser.Error:
        opened = False
    if not opened:
        _discard(page.parent)
        return False
    timer = threading.Timer(PAGE_LIFETIME, _discard, (page.parent,))
    timer.daemon = True
    timer.start()
    return True


def discard_pages() -> None:
    """Delete every redirect page still on disk (also run at exit)."""
    with _pages_lock:
        directories = list(_pages)
    for directory in directories:
        _discard(directory)


atexit.register(discard_pages)


def _base_dir() -> str | None:
    """`$XDG_RUNTIME_DIR` if it is ours and closed to others, else the temp dir
    (None), where `mkdtemp` still makes an unguessable directory only we can enter."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            st = os.lstat(runtime)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
            return runtime
    return None


def _write_page(url: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="mcp-token-broker-login-", dir=_base_dir()))  # 0700
    with _pages_lock:
        _pages.add(directory)
    page = directory / "login.html"
    fd = os.open(page, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_PAGE.format(url=html.escape(url, quote=True)))
    return page


def _discard(directory: Path) -> None:
    with _pages_lock:
        _pages.discard(directory)
    shutil.rmtree(directory, ignore_errors=True)


def _open_with_portal(page: Path) -> bool:
    """Hand `page` to the desktop's OpenURI portal as a descriptor; False when
    there is no portal to ask (or `$BROWSER` chooses the browser)."""
    if (
        os.environ.get("BROWSER")
        or not os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        or not sys.platform.startswith("linux")
    ):
        return False
    try:
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.io.blocking import open_dbus_connection
    except ImportError:
        return False
    portal = DBusAddress(
        "/org/freedesktop/portal/desktop",
        bus_name="org.freedesktop.portal.Desktop",
        interface="org.freedesktop.portal.OpenURI",
    )
    fd = os.open(page, os.O_PATH | os.O_CLOEXEC)
    try:
        with open_dbus_connection(bus="SESSION", enable_fds=True) as bus:
            call = new_method_call(portal, "OpenFile", "sha{sv}", ("", fd, {}))
            reply = bus.send_and_get_reply(call, timeout=PORTAL_TIMEOUT)
    except Exception:  # noqa: BLE001 - no bus, no portal, a timeout: fall back to webbrowser
        return False
    finally:
        os.close(fd)
    return bool(reply.header.message_type == MessageType.method_return)
