"""Opening the browser: the URL check, and the redirect page that keeps the
authorization URL off every command line (issue 7, item 2)."""

from __future__ import annotations

import os
import stat
import threading
import urllib.parse
import urllib.request
import webbrowser
from pathlib import Path

import pytest

from broker.driver import browser
from broker.driver.browser import discard_pages, open_browser
from broker.errors import BrowserRefused
from tests.helpers.browser import resolve

URL = "https://auth.example.com/authorize?client_id=c&state=S3CR3T-STATE&code_challenge=abc"


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # re-read $BROWSER
    yield path
    discard_pages()


def fake_browser(tmp_path, monkeypatch, status=0):
    """A $BROWSER that records its argv, the page it was given and its modes."""
    seen = tmp_path / "seen"
    script = tmp_path / "browser"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s" "$*" > {seen}.argv\n'
        f'path=$(printf "%s" "$1" | sed "s|^file://||")\n'
        f'cp "$path" {seen}.page 2>/dev/null; stat -c "%a %u" "$path" "$(dirname "$path")" > {seen}.modes 2>/dev/null\n'
        f"exit {status}\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(script))
    return seen


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "javascript:alert(1)", "http://evil.example/login", "data:text/html,x", "ssh://host"]
)
def test_refuses_unsafe_urls_before_any_browser_runs(url, tmp_path, monkeypatch, runtime):
    marker = tmp_path / "ran"
    script = tmp_path / "browser"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(script))
    import webbrowser

    monkeypatch.setattr(webbrowser, "_tryorder", None)  # re-read $BROWSER
    with pytest.raises(BrowserRefused):
        open_browser(url)
    assert not marker.exists()
    assert list(runtime.iterdir()) == []  # not even a page was written


def test_the_browser_gets_a_private_page_that_redirects_not_the_url(tmp_path, monkeypatch, runtime):
    seen = fake_browser(tmp_path, monkeypatch)
    assert open_browser(URL) is True
    argv = (tmp_path / "seen.argv").read_text()
    assert "S3CR3T-STATE" not in argv and argv.startswith(f"file://{runtime}/mcp-token-broker-login-")
    assert (tmp_path / "seen.modes").read_text().split("\n")[:2] == [f"600 {os.geteuid()}", f"700 {os.geteuid()}"]
    # What a browser makes of the page: exactly the URL.
    (tmp_path / "copy.html").write_text((tmp_path / "seen.page").read_text())
    assert resolve((tmp_path / "copy.html").as_uri()) == URL
    page = Path(urllib.request.url2pathname(urllib.parse.urlsplit(argv).path))
    assert page.exists()
    discard_pages()
    assert not page.parent.exists()
    assert seen.with_suffix(".argv").exists()


def test_markup_in_the_url_cannot_break_out_of_the_page(tmp_path, monkeypatch, runtime):
    fake_browser(tmp_path, monkeypatch)
    url = "https://auth.example.com/authorize?a=1&b=\"><script>x</script>&c='y'"
    assert open_browser(url) is True
    page = (tmp_path / "seen.page").read_text()
    assert "<script>" not in page
    (tmp_path / "copy.html").write_text(page)
    assert resolve((tmp_path / "copy.html").as_uri()) == url


def test_a_browser_that_fails_leaves_no_page(tmp_path, monkeypatch, runtime):
    fake_browser(tmp_path, monkeypatch, status=1)
    assert open_browser(URL) is False
    assert (tmp_path / "seen.page").exists()  # the browser did get it
    assert list(runtime.iterdir()) == []


def test_without_xdg_runtime_dir_the_page_is_in_a_private_temp_dir(tmp_path, monkeypatch, runtime):
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(browser.tempfile, "tempdir", None)  # re-read $TMPDIR
    fake_browser(tmp_path, monkeypatch)
    assert open_browser(URL) is True
    argv = (tmp_path / "seen.argv").read_text()
    assert argv.startswith(f"file://{tmp_path}/mcp-token-broker-login-")
    assert (tmp_path / "seen.modes").read_text().split("\n")[:2] == [f"600 {os.geteuid()}", f"700 {os.geteuid()}"]


@pytest.mark.skipif(not os.environ.get("DBUS_SESSION_BUS_ADDRESS"), reason="needs a (private) session bus")
def test_the_portal_gets_the_page_as_a_descriptor(monkeypatch, runtime):
    """A stand-in for xdg-desktop-portal on the session bus: it receives
    OpenFile with a descriptor, never a URL, and reads the page through it."""
    from jeepney import HeaderFields, MessageType, new_method_return
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    monkeypatch.delenv("BROWSER", raising=False)
    opened_by_webbrowser = []
    monkeypatch.setattr(webbrowser, "open", lambda *a, **k: opened_by_webbrowser.append(a) or True)
    got = {}
    with open_dbus_connection(bus="SESSION", enable_fds=True) as portal:
        reply = portal.send_and_get_reply(message_bus.RequestName("org.freedesktop.portal.Desktop", 4), timeout=5)
        if reply.body != (1,):
            pytest.skip("a portal already owns the name on this bus")

        def serve() -> None:
            while True:
                msg = portal.receive(timeout=30)
                if msg.header.message_type == MessageType.method_call:
                    break
            got["call"] = {
                k: msg.header.fields.get(k)
                for k in (HeaderFields.interface, HeaderFields.member, HeaderFields.signature)
            }
            handle, fd, options = msg.body
            with fd:
                path = os.readlink(f"/proc/self/fd/{fd.fileno()}")
                got.update(handle=handle, options=options, path=path, page=Path(path).read_text())
                got["mode"] = stat.S_IMODE(os.stat(path).st_mode)
            portal.send(new_method_return(msg, "o", ("/org/freedesktop/portal/desktop/request/1_1/t",)))

        thread = threading.Thread(target=serve)
        thread.start()
        assert open_browser(URL) is True
        thread.join(30)
    assert got["call"] == {
        HeaderFields.interface: "org.freedesktop.portal.OpenURI",
        HeaderFields.member: "OpenFile",
        HeaderFields.signature: "sha{sv}",
    }
    assert got["handle"] == "" and got["options"] == {}
    assert got["mode"] == 0o600 and got["path"].startswith(f"{runtime}/mcp-token-broker-login-")
    assert opened_by_webbrowser == []
    Path(got["path"]).with_name("copy.html").write_text(got["page"])
    assert resolve(Path(got["path"]).with_name("copy.html").as_uri()) == URL
