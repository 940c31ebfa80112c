import pytest

from broker.browser import open_browser
from broker.errors import BrowserRefused


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "http://evil.example/login", "data:text/html,x", "ssh://host"])
def test_refuses_unsafe_urls_before_any_browser_runs(url, tmp_path, monkeypatch):
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


def test_opens_https_through_BROWSER(tmp_path, monkeypatch):
    out = tmp_path / "url"
    script = tmp_path / "browser"
    script.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {out}\n')
    script.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(script))
    import webbrowser

    monkeypatch.setattr(webbrowser, "_tryorder", None)
    assert open_browser("https://auth.example.com/authorize?x=1") is True
    assert out.read_text() == "https://auth.example.com/authorize?x=1"
