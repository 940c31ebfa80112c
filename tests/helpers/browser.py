#!/usr/bin/env python3
"""Fake system browser for the integration tests: the user's clicks, scripted.

Set ``BROWSER=/abs/path/tests/helpers/browser.py``. Python's ``webbrowser``
module then runs this file as ONE executable with the URL as its only
argument (no shell, no argument splitting). Standard library only, so it
runs under whatever ``python3`` is on PATH.

The argument is either the URL itself or, as the broker passes it, the
``file:`` URL of a local page that redirects there with ``<meta
http-equiv="refresh">`` (broker/driver/browser.py keeps the authorization URL off
every command line that way). Like a real browser, this one reads the page
and follows the refresh; it never guesses the URL from anywhere else.

Modes (env ``BROWSER_MODE``):

``follow`` (default)
    GET the URL with a cookie jar and walk the authorization server's pages
    like a user: redirects are followed by hand, and a page holding exactly
    one ``<form>`` is submitted (hidden inputs kept, text inputs get
    ``BROWSER_LOGIN`` (default ``alice``), password inputs get ``secret``, a
    named submit button contributes its name/value). As soon as a redirect
    points at an ``http://127.0.0.1`` / ``http://localhost`` URL whose
    host:port is not the authorization server's, that is the app's loopback
    callback: GET it once (this is what hands the code to the app) and exit.
``deny``
    Same, but on the consent page follow the "Cancel" (``.../abort``) link
    instead of consenting, so the server redirects to the callback with
    ``error=access_denied``; that callback is delivered.
``device``
    The user on their phone, for a device login (RFC 8628): open the URL
    (the ``verification_uri``, or the ``verification_uri_complete`` that
    carries the code), type ``BROWSER_USER_CODE`` into the code form if one
    is shown, confirm, log in and consent as in ``follow``; done when the
    server shows its success page (a page without a form, after a form was
    submitted). Nothing is delivered to the app: it learns by polling.
``print``
    Do not visit anything: append the URL to ``BROWSER_LOG`` and exit 0 (for
    tests that forge or paste the callback themselves).

Other knobs:

``BROWSER_LOG``
    File to append one line per step to. Token values never appear there
    (only URLs, which may carry an authorization ``code``, and statuses).
``BROWSER_LOGIN``
    Login name typed into the login form, which becomes the token ``sub``.
``BROWSER_AS``
    host:port of the authorization server. Default: that of the first URL.
``BROWSER_NO_DELIVER``
    ``1``: walk the pages but do not GET the final callback; log it as
    ``CALLBACK <url>`` instead (the user pastes it into ``connect --paste``).
``BROWSER_FIRST``
    A command (split with ``shlex``) to run with the resolved URL on its
    stdin before anything is visited, while this process is the open browser.
    The attack tests use it to let another local user act at exactly that
    moment.
``BROWSER_DETACH``
    ``1``: fork, let the parent exit 0 at once and run the flow in the
    child, like a real browser launcher. ``webbrowser.open`` waits for this
    process to exit, so without detaching an app that calls it on the same
    thread/event loop that serves its callback listener would deadlock
    until the callback GET times out.

Exit status: 0 when the callback was delivered (whatever the app answered)
or in ``print`` mode; 1 on an unexpected page, a failed request or too many
steps (the status and the first 500 characters of the page are logged).
"""

from __future__ import annotations

import http.cookiejar
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

MAX_STEPS = 20
TIMEOUT = 10.0  # seconds per HTTP request
REDIRECTS = {301, 302, 303, 307, 308}
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}

LOG_PATH = os.environ.get("BROWSER_LOG")
MODE = os.environ.get("BROWSER_MODE", "follow").strip().lower() or "follow"
LOGIN = os.environ.get("BROWSER_LOGIN", "alice")
USER_CODE = os.environ.get("BROWSER_USER_CODE", "")
PASSWORD = "secret"


def log(message: str) -> None:
    if not LOG_PATH:
        return
    with open(LOG_PATH, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} [browser pid={os.getpid()} mode={MODE}] {message}\n")


def host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return (parts.hostname or "").lower(), parts.port or default


def is_app_callback(url: str, as_host_port: tuple[str, int]) -> bool:
    """A plain-http loopback URL that is not on the authorization server."""
    parts = urllib.parse.urlsplit(url)
    return (
        parts.scheme == "http" and (parts.hostname or "").lower() in LOOPBACK_HOSTS and host_port(url) != as_host_port
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Make urllib hand 3xx responses back (as HTTPError) instead of following."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Refresh(HTMLParser):
    """The target of a page's ``<meta http-equiv="refresh">``, as HTML parses it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.target: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag != "meta" or a.get("http-equiv", "").lower() != "refresh" or self.target is not None:
            return
        # HTML "shared declarative refresh steps": "<delay>;url=<rest of the string>".
        _delay, _, rest = a.get("content", "").partition(";")
        rest = rest.strip()
        if rest[:4].lower() == "url=":
            rest = rest[4:].strip()
        self.target = rest or None


def resolve(arg: str) -> str:
    """The URL to load: ``arg`` itself, or where the local page it names redirects."""
    parts = urllib.parse.urlsplit(arg)
    if parts.scheme != "file":
        return arg
    with open(urllib.request.url2pathname(parts.path), encoding="utf-8") as fh:
        page = _Refresh()
        page.feed(fh.read())
    if page.target is None:
        raise ValueError(f"the page {arg} does not redirect anywhere")
    return page.target


class _Page(HTMLParser):
    """Collects forms (with their fields) and link targets of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {
                "action": a.get("action", ""),
                "method": (a.get("method") or "get").lower(),
                "fields": [],
            }
            self.forms.append(self._form)
        elif tag in ("input", "button", "select", "textarea") and self._form is not None:
            self._form["fields"].append((tag, a))
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def form_data(form: dict) -> list[tuple[str, str]]:
    """Fill a form the way a user would and return its name/value pairs."""
    data: list[tuple[str, str]] = []
    submit_used = False
    for tag, a in form["fields"]:
        name = a.get("name")
        kind = (a.get("type") or ("submit" if tag == "button" else "text")).lower()
        if kind in ("submit", "image"):
            # Only the clicked (first) submit button contributes, and only if named.
            if name and not submit_used:
                data.append((name, a.get("value", "")))
            submit_used = True
            continue
        if not name or "disabled" in a or kind in ("button", "reset", "file"):
            continue
        if kind == "hidden":
            data.append((name, a.get("value", "")))
        elif kind == "password":
            data.append((name, PASSWORD))
        elif kind in ("checkbox", "radio"):
            if "checked" in a:
                data.append((name, a.get("value", "on")))
        elif tag in ("select", "textarea"):
            data.append((name, a.get("value", "")))
        elif name == "user_code":  # the device login's code form
            data.append((name, USER_CODE))
        else:  # text, email, and untyped inputs
            data.append((name, LOGIN))
    return data


def field_value(form: dict, field_name: str) -> str | None:
    for _tag, a in form["fields"]:
        if a.get("name") == field_name:
            return a.get("value", "")
    return None


class Browser:
    def __init__(self, as_host_port: tuple[str, int]) -> None:
        self.as_host_port = as_host_port
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            _NoRedirect(),
        )

    def request(self, method: str, url: str, body: bytes | None = None):
        """Return (status, headers, text) for any HTTP status; raise on network errors."""
        headers = {"User-Agent": "mcp-token-broker-test-browser/1", "Accept": "text/html,*/*"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            resp = self.opener.open(req, timeout=TIMEOUT)
        except urllib.error.HTTPError as err:  # 3xx (not followed), 4xx, 5xx
            resp = err
        with resp:
            raw = resp.read()
            charset = resp.headers.get_content_charset() or "utf-8"
            return resp.status, resp.headers, raw.decode(charset, errors="replace")

    def deliver(self, url: str) -> int:
        """GET the app's loopback callback once; that hands the code (or error) over."""
        if os.environ.get("BROWSER_NO_DELIVER") == "1":
            # A browser on another machine (SSH): the redirect cannot reach
            # the app, and the user copies the address bar instead.
            log(f"CALLBACK {url}")
            return 0
        log(f"callback GET {url}")
        try:
            status, _headers, _text = self.request("GET", url)
        except OSError as err:
            log(f"callback delivery failed: {err!r}")
            return 1
        log(f"callback answered {status}")
        return 0

    def unexpected(self, status: int, url: str, text: str, why: str) -> int:
        log(f"UNEXPECTED ({why}) {status} at {url}: {text[:500]!r}")
        return 1

    def run(self, url: str) -> int:
        method, body = "GET", None
        submitted = False
        for step in range(1, MAX_STEPS + 1):
            try:
                status, headers, text = self.request(method, url, body)
            except OSError as err:
                log(f"step {step}: {method} {url} failed: {err!r}")
                return 1
            log(f"step {step}: {method} {url} -> {status}")

            if status in REDIRECTS:
                location = headers.get("Location")
                if not location:
                    return self.unexpected(status, url, text, "redirect without Location")
                target = urllib.parse.urljoin(url, location)
                if is_app_callback(target, self.as_host_port):
                    return self.deliver(target)
                if host_port(target) != self.as_host_port:
                    return self.unexpected(status, url, text, f"redirect off the authorization server to {target}")
                if status not in (307, 308):  # 307/308 replay the method and body
                    method, body = "GET", None
                url = target
                continue

            if status != 200:
                return self.unexpected(status, url, text, "error status")

            page = _Page()
            page.feed(text)
            if MODE == "device" and submitted and not page.forms:
                log(f"step {step}: device login finished: {'Success' in text}")
                return 0 if "Success" in text else self.unexpected(status, url, text, "no success page")
            if len(page.forms) != 1:
                return self.unexpected(status, url, text, f"{len(page.forms)} forms on page")
            form = page.forms[0]

            if MODE == "deny" and field_value(form, "prompt") == "consent":
                aborts = [h for h in page.links if urllib.parse.urlsplit(h).path.rstrip("/").endswith("/abort")]
                if not aborts:
                    return self.unexpected(status, url, text, "consent page without an abort link")
                log(f"step {step}: denying consent")
                method, body, url = "GET", None, urllib.parse.urljoin(url, aborts[0])
                continue

            action = urllib.parse.urljoin(url, form["action"] or url)
            encoded = urllib.parse.urlencode(form_data(form))
            # Field names only: values may include the password.
            log(f"step {step}: submitting form ({form['method']}) to {action}")
            submitted = True
            if form["method"] == "post":
                method, body, url = "POST", encoded.encode("ascii"), action
            else:
                split = urllib.parse.urlsplit(action)
                method, body, url = "GET", None, urllib.parse.urlunsplit(split._replace(query=encoded))

        log(f"gave up after {MAX_STEPS} steps at {url}")
        return 1


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        log(f"expected exactly one URL argument, got {argv[1:]!r}")
        return 1
    try:
        url = resolve(argv[1])
    except (OSError, ValueError) as err:
        log(f"cannot open {argv[1]}: {err!r}")
        return 1
    if url != argv[1]:
        log(f"argv {argv[1]}")
    log(f"open {url}")

    if os.environ.get("BROWSER_FIRST"):
        subprocess.run(shlex.split(os.environ["BROWSER_FIRST"]), input=url, text=True, timeout=60, check=False)
    if MODE == "print":
        return 0
    if MODE not in ("follow", "deny", "device"):
        log(f"unknown BROWSER_MODE {MODE!r}")
        return 1

    if os.environ.get("BROWSER_DETACH") == "1":
        # Like a real browser launcher: return to the caller at once.
        if os.fork() > 0:
            return 0
        os.setsid()
        # Do not hold the caller's pipes open while the flow runs.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)

    as_env = os.environ.get("BROWSER_AS")
    as_host_port = host_port(f"http://{as_env}") if as_env else host_port(url)
    try:
        return Browser(as_host_port).run(url)
    except Exception as err:  # noqa: BLE001 - report anything to the log, never hang
        log(f"crashed: {err!r}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
