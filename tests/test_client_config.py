"""Copied client configs run (issue 10, item 16).

A client starts the command a snippet names with its own PATH, on which a
checkout's `.venv/bin` is not: "command not found" unless the snippet gives
the absolute path. `config` prints the same snippets as the app's *Copy
client config* (both call broker.cli.snippets).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from broker.cli.snippets import client_command

pytestmark = pytest.mark.timeout(120)

VENV_BIN = os.path.dirname(os.path.abspath(sys.executable))
CONSOLE_SCRIPT = os.path.join(VENV_BIN, "mcp-token-broker")
#: The PATH a client has: the system's, without the venv's bin.
CLIENT_PATH = os.pathsep.join(
    d
    for d in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/bin"]
    if d and os.path.abspath(d) != VENV_BIN
)


def run_helper(helper: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As Claude Code runs headersHelper: through a shell."""
    return subprocess.run(["/bin/sh", "-c", helper], env=env, capture_output=True, text=True, timeout=30)


def test_snippets_name_a_command_the_client_finds(cli, stack, service):
    _, mcp = stack
    assert shutil.which("mcp-token-broker", path=CLIENT_PATH) is None
    assert cli("add", "demo", mcp.url).returncode == 0
    r = cli("connect", "demo")
    assert r.returncode == 0, r.stderr

    # Not on PATH: the absolute path of the running install's command.
    away = {"PATH": CLIENT_PATH}
    r = cli("config", "demo", env=away)
    assert r.returncode == 0, r.stderr
    helper = r.json()["mcpServers"]["demo"]["headersHelper"]
    assert helper == f"{shlex.quote(CONSOLE_SCRIPT)} headers demo"
    out = run_helper(helper, {**cli.env, **away})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Authorization"].startswith("Bearer ")

    stdio = cli("config", "demo", "--client", "cursor", env=away).json()["mcpServers"]["demo"]
    assert stdio == {"command": CONSOLE_SCRIPT, "args": ["proxy", "demo"]}
    version = subprocess.run([stdio["command"], "--version"], env={**cli.env, **away}, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("mcp-token-broker ")

    # On PATH: the bare name, which the client finds the same way.
    home = {"PATH": VENV_BIN + os.pathsep + CLIENT_PATH}
    helper = cli("config", "demo", env=home).json()["mcpServers"]["demo"]["headersHelper"]
    assert helper == "mcp-token-broker headers demo"
    out = run_helper(helper, {**cli.env, **home})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["Authorization"].startswith("Bearer ")


def test_config_for_an_unknown_connection_is_a_usage_error(cli):
    r = cli("config", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr


def test_frozen_bundle_names_its_own_executable(monkeypatch):
    """The installer bundle has no console script: its one executable is
    sys.executable (packaging/entry.py)."""
    monkeypatch.setenv("PATH", CLIENT_PATH)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert client_command() == os.path.abspath(sys.executable)
