"""Copied client configs run (issue 10, item 16).

A client starts the command a snippet names with its own PATH, on which a
checkout's `.venv/bin` is not: "command not found" unless the snippet gives
the absolute path. `config` prints the same snippets as the app's *Copy
client config* (both call broker.cli.snippets).

Every client in snippets.CLIENTS (docs/clients.md has a section for each):
its snippet parses in that client's format (JSON, or TOML for Codex) and
names the command and arguments the client will start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import anyio
import pytest

from broker.cli.snippets import CLIENTS, client_command, snippet

from .test_gui import gui, seeded_gui  # noqa: F401 - `gui` is the fixture seeded_gui asks for

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


#: Codex starts only servers whose table key matches this (openai/codex#5635:
#: "invalid server name ...: must match pattern ^[a-zA-Z0-9_-]+$").
CODEX_KEY = re.compile(r"[a-zA-Z0-9_-]+")


def test_config_prints_every_clients_snippet_and_the_new_ones_run(cli, stack, service):
    """`config NAME --client X` for each client: the snippet parses in that
    client's format with the command (absolute off PATH) and `proxy NAME`; the
    Codex and Windsurf entries, started as those clients start them, list the
    server's tools through the broker."""
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    _, mcp = stack
    assert cli("add", "demo", mcp.url).returncode == 0
    r = cli("connect", "demo")
    assert r.returncode == 0, r.stderr
    away = {"PATH": CLIENT_PATH}
    printed = {}
    for client in CLIENTS:
        r = cli("config", "demo", "--client", client, env=away)
        assert r.returncode == 0, (client, r.stderr)
        printed[client] = r.stdout
    assert {"claude-code", "claude-desktop", "cursor", "vscode", "codex", "windsurf", "curl"} <= set(printed)

    stdio = {"command": CONSOLE_SCRIPT, "args": ["proxy", "demo"]}
    claude_code = json.loads(printed["claude-code"])["mcpServers"]["demo"]
    assert claude_code == {
        "type": "http",
        "url": mcp.url,
        "headersHelper": f"{shlex.quote(CONSOLE_SCRIPT)} headers demo",
    }
    for client in ("claude-desktop", "cursor", "windsurf"):
        assert json.loads(printed[client]) == {"mcpServers": {"demo": stdio}}, client
    assert json.loads(printed["vscode"]) == {"servers": {"demo": {"type": "stdio", **stdio}}}
    assert tomllib.loads(printed["codex"]) == {"mcp_servers": {"demo": stdio}}
    assert "--unix-socket" in printed["curl"] and printed["curl"].endswith("/v1/connections/demo/token\n")

    async def tools_through(entry: dict) -> set[str]:
        # As a stdio client starts it: the SDK's default environment plus the runtime dir.
        params = StdioServerParameters(
            command=entry["command"], args=entry["args"], env={"XDG_RUNTIME_DIR": cli.env["XDG_RUNTIME_DIR"]}
        )
        async with Client(stdio_client(params)) as client:
            return {t.name for t in (await client.list_tools()).tools}

    codex = tomllib.loads(printed["codex"])["mcp_servers"]["demo"]
    windsurf = json.loads(printed["windsurf"])["mcpServers"]["demo"]
    for entry in (codex, windsurf):
        assert {"whoami", "echo"} <= anyio.run(tools_through, entry)


def test_codex_snippet_is_toml_codex_accepts_for_any_name_and_path():
    """Connection names may hold '.', which TOML would read as a nested table
    and Codex refuses in a server name; install paths may hold spaces, quotes,
    backslashes (Windows) and characters TOML must escape."""
    odd = 'C:\\Program Files\\mcp "broker"\\bin\x7f\u00e9\U0001f511\\mcp-token-broker.exe'
    for name in ("demo", "my.server", "a.b.c", "x_y-z.1"):
        text = snippet("codex", name, "https://mcp.example.com/mcp", command=odd)
        doc = tomllib.loads(text)
        (key, entry), *rest = doc["mcp_servers"].items()
        assert rest == [] and set(doc) == {"mcp_servers"}, text
        assert CODEX_KEY.fullmatch(key), (name, key)
        assert entry == {"command": odd, "args": ["proxy", name]}, text


def test_every_json_snippet_parses_for_a_dotted_name():
    for client in CLIENTS:
        if client in ("codex", "curl"):
            continue
        doc = json.loads(snippet(client, "my.server", "https://mcp.example.com/mcp", command="/opt/b/mcp-token-broker"))
        table = doc["servers"] if client == "vscode" else doc["mcpServers"]
        assert list(table) == ["my.server"], client


def test_gui_copy_menu_offers_every_client_and_copies_the_same_text(qtbot, request, user_dirs, tmp_path):
    """The app's *Copy client config* menu is built from snippets.CLIENTS and
    copies exactly what `config NAME --client X` prints (snippets.snippet)."""
    from PySide6.QtWidgets import QApplication

    _, _, window = seeded_gui(request, user_dirs, tmp_path)
    window.select("demo")
    details = window.details
    qtbot.waitUntil(lambda: details.name == "demo" and details.view is not None, timeout=10000)
    menu = details.copy_button.menu()
    menu.aboutToShow.emit()
    assert [a.text() for a in menu.actions()] == list(CLIENTS.values())
    assert {"Codex CLI", "Windsurf"} <= set(CLIENTS.values())
    for action, key in zip(menu.actions(), CLIENTS, strict=True):
        action.trigger()
        assert QApplication.clipboard().text() == snippet(key, "demo", details.view["server_url"]), key


def test_clients_doc_shows_what_config_prints_for_every_client():
    """docs/clients.md has a section per client, and each example it shows is
    what `config github --client X` prints (parsed, so layout may differ)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "clients.md").read_text()
    sections = {s.split("\n", 1)[0]: s for s in doc.split("\n## ")[1:]}
    for key, label in CLIENTS.items():
        assert f"config github --client {key}" in doc, key
        if key == "curl":
            continue
        section = sections[label]
        blocks = re.findall(r"```(json|toml)\n(.*?)```", section, re.S)
        expected = snippet(key, "github", "https://api.githubcopilot.com/mcp/", command="mcp-token-broker")
        for lang, block in blocks:
            parse = json.loads if lang == "json" else tomllib.loads
            assert parse(block) == parse(expected), key
