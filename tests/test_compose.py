"""Every entry point honours every setting (broker.compose).

The settings: the refresh margin and client policy from config.json, the
HTTP timeout from MCP_TOKEN_BROKER_HTTP_TIMEOUT, the vault key file and the
socket path from MCP_TOKEN_BROKER_SOCKET. `serve` runs as a real process and
the desktop app's `build` under pytest-qt (offscreen); both are checked
through the socket API, the CLI's direct path through the real console script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from broker.client.api_client import BrokerClient, ServiceError
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .helpers.seed import seed_connection

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before the tests import PySide6 (through ui)

pytestmark = pytest.mark.timeout(120)

MARGIN = 1000  # beats the lifetime's quarter (900 s) of a one-hour token
LIFETIME = 3600


@pytest.fixture
def settings(user_dirs, tmp_path, monkeypatch):
    """config.json (deny, margin 1000), a key file, a socket elsewhere, a 1 s
    HTTP timeout, and one connection with an hour-long token in the vault."""
    config_dir = user_dirs["XDG_CONFIG_HOME"] / "mcp-token-broker"
    config_dir.mkdir(mode=0o700)
    (config_dir / "config.json").write_text(json.dumps({"client_policy": "deny", "refresh_margin": MARGIN}))
    key_file = tmp_path / "vault.key"
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o700)
    env = {
        "MCP_TOKEN_BROKER_KEY_FILE": str(key_file),
        "MCP_TOKEN_BROKER_SOCKET": str(sock_dir / "b.sock"),
        "MCP_TOKEN_BROKER_HTTP_TIMEOUT": "1",
    }
    now = int(time.time())
    store = Store(Paths.default(), lambda: FileKeyStore(key_file))
    seed_connection(store, now=now, lifetime=LIFETIME)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def check_through_socket(socket_path: str, hostile_server, *, ui: bool) -> None:
    """What a running service shows of the settings, over its socket API."""
    client = BrokerClient(socket_path, timeout=30)
    health = client.health()
    assert health["policy"] == "deny" and health["ui"] is ui  # the config's policy, on this socket

    view = client.request("GET", "/v1/connections/demo?detail=full")
    expires = view["expires_at"]
    # margin 1000 with up to 10% jitter; the default 60 would give the quarter, 900.
    assert expires - 1.1 * MARGIN <= view["next_refresh_at"] <= expires - MARGIN, view

    hostile_server.mode = "slow"  # one byte every 0.3 s: only the total deadline stops it
    with pytest.raises(ServiceError) as caught:
        client.request("POST", "/v1/connections", {"name": "slow", "server_url": hostile_server.mcp_url}, timeout=60)
    assert caught.value.code == "remote_error"
    assert "did not answer within 1 s" in caught.value.message


def test_serve_honours_every_setting(cli, settings, hostile_server, spawn, tmp_path):
    with open(tmp_path / "serve.log", "w") as log:
        proc = spawn(
            [cli.exe, "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**cli.env, **settings},
        )
    client = BrokerClient(settings["MCP_TOKEN_BROKER_SOCKET"], timeout=2)
    while not client.is_running():
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        time.sleep(0.05)
    check_through_socket(settings["MCP_TOKEN_BROKER_SOCKET"], hostile_server, ui=False)
    # The CLI finds that service at the same socket and is answered by it.
    r = cli("show", "demo", "--json", env=settings)
    assert r.returncode == 0, r.stderr
    assert r.json()["next_refresh_at"] is not None
    proc.terminate()
    assert proc.wait(timeout=20) == 0


def test_desktop_app_honours_every_setting(qtbot, settings, hostile_server):
    from ui.app import build

    runner, bridge, window = build(argparse.Namespace(minimized=False, policy=None))
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: bridge.is_ready or runner.error is not None, timeout=20000)
        assert runner.error is None, runner.error
        check_through_socket(settings["MCP_TOKEN_BROKER_SOCKET"], hostile_server, ui=True)
    finally:
        window.quitting = True
        runner.stop()


def test_desktop_app_policy_flag_beats_the_config(qtbot, settings):
    from ui.app import build

    runner, bridge, window = build(argparse.Namespace(minimized=False, policy="allow"))
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: bridge.is_ready or runner.error is not None, timeout=20000)
        assert BrokerClient(settings["MCP_TOKEN_BROKER_SOCKET"]).health()["policy"] == "allow"
    finally:
        window.quitting = True
        runner.stop()


def test_cli_direct_path_honours_key_file_and_http_timeout(cli, settings, hostile_server):
    # No service runs: the CLI opens the vault with the key file itself...
    r = cli("show", "demo", "--json", env=settings)
    assert r.returncode == 0, r.stderr
    assert r.json()["status"] == "connected"
    # ... also when given as --key-file instead of the environment.
    moved = Path(settings["MCP_TOKEN_BROKER_KEY_FILE"]).rename(Path(settings["MCP_TOKEN_BROKER_KEY_FILE"] + ".moved"))
    env = {**settings, "MCP_TOKEN_BROKER_KEY_FILE": ""}
    r = cli("--key-file", str(moved), "show", "demo", "--json", env=env)
    assert r.returncode == 0 and r.json()["status"] == "connected", r.stderr
    # ... and its HTTP exchanges end at the configured deadline.
    hostile_server.mode = "slow"
    r = cli("--key-file", str(moved), "add", "slow", hostile_server.mcp_url, env=env)
    assert r.returncode == 5 and "did not answer within 1 s" in r.stderr, r.stderr


def test_serve_refuses_a_bad_http_timeout(cli, settings):
    r = cli("serve", env={**settings, "MCP_TOKEN_BROKER_HTTP_TIMEOUT": "soon"})
    assert r.returncode == 2 and "MCP_TOKEN_BROKER_HTTP_TIMEOUT must be" in r.stderr, r.stderr


def test_desktop_app_refuses_a_bad_http_timeout(qtbot, settings, monkeypatch):
    from broker.errors import UsageError
    from ui.app import build

    monkeypatch.setenv("MCP_TOKEN_BROKER_HTTP_TIMEOUT", "soon")
    runner, bridge, window = build(argparse.Namespace(minimized=False, policy=None))
    qtbot.addWidget(window)
    with qtbot.waitSignal(bridge.failed, timeout=20000) as failed:
        pass
    window.quitting = True
    runner.stop()
    assert isinstance(failed.args[0], UsageError)
    assert "MCP_TOKEN_BROKER_HTTP_TIMEOUT must be" in str(failed.args[0])


def test_compose_builds_what_the_setup_says(settings):
    from broker.compose import build_service, resolve
    from broker.driver.transport import Limits

    setup = resolve(policy=None)
    assert setup.policy == "deny" and setup.refresh_margin == MARGIN
    assert setup.key_file == Path(settings["MCP_TOKEN_BROKER_KEY_FILE"])
    assert setup.socket_path == settings["MCP_TOKEN_BROKER_SOCKET"]
    assert setup.limits == Limits(timeout=1.0, deadline=1.0)
    service = build_service(setup, approval_timeout=5, ui=True)
    assert (service.policy, service.min_margin, str(service.api.socket_path)) == ("deny", MARGIN, setup.socket_path)
    assert service.engine.transport.limits == setup.limits
    assert resolve(policy="allow", key_file="/k").policy == "allow"
    assert resolve(key_file="/k").key_file == Path("/k")


def test_gui_command_passes_the_key_file_on(cli, settings, spawn, tmp_path):
    """`mcp-token-broker --key-file K gui` execs the app: K must reach it."""
    env = {**cli.env, **settings, "MCP_TOKEN_BROKER_KEY_FILE": "", "QT_QPA_PLATFORM": "offscreen"}
    with open(tmp_path / "gui.log", "w") as log:
        proc = spawn(
            [cli.exe, "--key-file", settings["MCP_TOKEN_BROKER_KEY_FILE"], "gui"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    client = BrokerClient(settings["MCP_TOKEN_BROKER_SOCKET"], timeout=2)
    deadline = time.monotonic() + 30  # a bound on the wait, not a measurement
    while not client.is_running():
        assert proc.poll() is None, (tmp_path / "gui.log").read_text()
        assert time.monotonic() < deadline, "the app did not serve (its vault did not open?)"
        time.sleep(0.05)
    assert client.health()["ui"] is True
    assert client.request("GET", "/v1/connections/demo")["status"] == "connected"


def test_gui_command_passes_its_own_options_on(cli, settings, spawn, tmp_path):
    """`gui --policy deny --minimized`: argparse used to refuse both ("unrecognized arguments")."""
    env = {**cli.env, **settings, "QT_QPA_PLATFORM": "offscreen"}
    with open(tmp_path / "gui.log", "w") as log:
        proc = spawn(
            [cli.exe, "gui", "--policy", "deny", "--minimized"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    client = BrokerClient(settings["MCP_TOKEN_BROKER_SOCKET"], timeout=2)
    deadline = time.monotonic() + 30  # a bound on the wait, not a measurement
    while not client.is_running():
        assert proc.poll() is None, (tmp_path / "gui.log").read_text()
        assert time.monotonic() < deadline, "the app did not serve"
        time.sleep(0.05)
    assert client.health()["policy"] == "deny"
