"""Device login (RFC 8628) end to end: the real console script and `serve`
against oidc-provider with its device flow on. The only scripted part is
the user on their phone: tests/helpers/browser.py in `device` mode enters
the code the CLI printed, logs in and consents."""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from .conftest import start_service
from .servers.fixtures import BROWSER_SCRIPT

pytestmark = pytest.mark.timeout(120)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def read_url_and_code(proc) -> tuple[str, str, str]:
    """What `connect` printed for the person: the URL, the code, and all of stderr so far."""
    seen, url, code = [], None, None
    deadline = time.monotonic() + 30
    while code is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        text = line.strip()
        if url is None and text.startswith("http"):
            url = text
        elif (
            url is not None
            and text
            and not text.startswith("mcp-token-broker:")
            and any("enter the code" in s for s in seen)
        ):
            code = text
    assert url and code, "".join(seen)
    return url, code, "".join(seen)


def phone(cli, url: str, code: str) -> None:
    """The user, on another device: open the URL, enter the code, log in, consent."""
    env = {**cli.env, "BROWSER_MODE": "device", "BROWSER_USER_CODE": code}
    done = subprocess.run([BROWSER_SCRIPT, url], env=env, timeout=60, check=False)
    assert done.returncode == 0, cli.browser_log.read_text()


def device_polls(oidc) -> dict:
    return dict(oidc.stats()["device"]["polls"])


def test_connect_device_prints_url_and_code_honours_slow_down_then_token_works(cli, stack):
    oidc, mcp = stack
    assert cli("add", "dev", mcp.url).returncode == 0
    before = oidc.stats()
    # The server answers the first pending poll with slow_down: the CLI must wait 5 s more.
    oidc._call("POST", "/__test/device-slow-down", json={"count": 1})
    proc = cli.popen("connect", "dev", "--device", env={"BROWSER": "/bin/false"})
    try:
        url, code, shown = read_url_and_code(proc)
        assert url == f"{oidc.issuer}/device"
        assert "it is at 127.0.0.1" in shown
        # Let the CLI meet slow_down before the user finishes (a bounded wait on the server's count).
        deadline = time.monotonic() + 30
        while oidc.stats()["device"]["slow_downs_sent"] == before["device"]["slow_downs_sent"]:
            assert time.monotonic() < deadline, "the CLI never polled"
            time.sleep(0.1)
        phone(cli, url, code)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Connected dev" in out
    assert "poll less often: every 6 s" in err
    after = oidc.stats()
    assert after["grants"].get(DEVICE_GRANT, 0) == before["grants"].get(DEVICE_GRANT, 0) + 1
    assert after["grants"].get("authorization_code", 0) == before["grants"].get("authorization_code", 0)

    running = start_service(cli)  # `token` asks the service; the login above ran without one
    try:
        r = cli("token", "dev")
    finally:
        assert running.stop() == 0
    assert r.returncode == 0, r.stderr
    claims = jwt_claims(r.stdout.strip())
    assert claims["aud"] == mcp.url and "mcp:read" in claims["scope"]


def test_over_ssh_without_display_connect_offers_device_first(cli, stack):
    oidc, mcp = stack
    assert cli("add", "remote", mcp.url).returncode == 0
    running = start_service(cli)
    try:
        ssh = {"SSH_CONNECTION": "192.0.2.1 50000 192.0.2.2 22", "DISPLAY": "", "WAYLAND_DISPLAY": ""}
        proc = cli.popen("connect", "remote", env={**ssh, "BROWSER": "/bin/false"})
        try:
            url, code, shown = read_url_and_code(proc)
            assert "no display in this SSH session" in shown and "--browser" in shown
            phone(cli, url, code)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err
        assert "Connected remote" in out
        r = cli("token", "remote")
        assert r.returncode == 0, r.stderr
        assert jwt_claims(r.stdout.strip())["aud"] == mcp.url

        # --browser forces the browser login, even over SSH.
        r = cli("connect", "remote", "--browser", env=ssh)
        assert r.returncode == 0, r.stderr + cli.browser_log.read_text()
        assert "another device" not in r.stderr
    finally:
        assert running.stop() == 0
    assert code not in running.log  # the user code is for the person, not the log


def test_device_login_replaces_a_waiting_browser_login(cli, stack, service):
    _, mcp = stack
    assert cli("add", "swap", mcp.url).returncode == 0
    waiting = cli.popen("connect", "swap", "--no-browser", env={"BROWSER": "/bin/false"})
    try:
        assert waiting.stderr.readline()  # the browser login is under way in the service
        proc = cli.popen("connect", "swap", "--device")
        url, code, _ = read_url_and_code(proc)  # not the browser login's URL: a device login of its own
        phone(cli, url, code)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Connected swap" in out
        _, err = waiting.communicate(timeout=30)
        assert waiting.returncode != 0 and "cancelled" in err
    finally:
        for p in (waiting,):
            if p.poll() is None:
                p.kill()
                p.communicate()
