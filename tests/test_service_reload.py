"""The startup race (issue 11 follow-up): `serve &` and then at once `add`
can have `add` find no socket yet and write connections.json itself, after
the service read its files. The service picks such a write up the first
time a request names the connection, instead of saying "no connection
named X" until it is restarted.

The CLI is given its own XDG_RUNTIME_DIR, so it finds no socket and takes
the direct path while a real `serve` runs over the same files."""

from __future__ import annotations

import json
from pathlib import Path

from broker.client.api_client import BrokerClient

from .conftest import start_service


def _direct(cli, tmp_path: Path) -> dict[str, str]:
    """An environment in which the CLI sees no service: it writes the files itself."""
    hidden = tmp_path / "run-hidden"
    hidden.mkdir(mode=0o700, exist_ok=True)
    return {"XDG_RUNTIME_DIR": str(hidden)}


def test_a_connection_added_directly_while_serve_runs_is_found(cli, stack, tmp_path):
    _, mcp = stack
    running = start_service(cli)
    try:
        assert BrokerClient(str(running.socket_path)).request("GET", "/v1/connections")["connections"] == []
        added = cli("add", "late", mcp.url, env=_direct(cli, tmp_path))
        assert added.returncode == 0, added.stderr
        shown = cli("show", "late", "--json")  # through the service
        assert shown.returncode == 0, shown.stderr
        assert shown.json()["server_url"] == mcp.url
        names = [
            c["name"] for c in BrokerClient(str(running.socket_path)).request("GET", "/v1/connections")["connections"]
        ]
        assert names == ["late"]
        # A name nobody wrote is still unknown, with the usual line.
        missing = cli("show", "nope")
        assert missing.returncode == 2 and "no connection named 'nope'" in missing.stderr
    finally:
        assert running.stop() == 0, running.log


def test_a_vault_written_directly_is_picked_up_with_the_connection(cli, stack, tmp_path):
    _, mcp = stack
    running = start_service(cli)
    try:
        direct = _direct(cli, tmp_path)
        assert cli("add", "late", mcp.url, env=direct).returncode == 0
        connected = cli("connect", "late", "--browser", env=direct)  # the test browser logs in
        assert connected.returncode == 0, connected.stderr
        token = cli("token", "late")  # through the service: it reads the vault too
        assert token.returncode == 0, token.stderr
        assert token.stdout.strip()
        view = json.loads(cli("show", "late", "--json").stdout)
        assert view["status"] == "connected"
    finally:
        assert running.stop() == 0, running.log


def test_the_list_picks_up_a_connection_added_directly(cli, stack, tmp_path):
    _, mcp = stack
    running = start_service(cli)
    try:
        assert BrokerClient(str(running.socket_path)).request("GET", "/v1/connections")["connections"] == []
        assert cli("add", "listed", mcp.url, env=_direct(cli, tmp_path)).returncode == 0
        # `list` names no connection: it reloads too, rather than showing nothing until a restart.
        listed = cli("list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [c["name"] for c in listed.json()["connections"]] == ["listed"]
    finally:
        assert running.stop() == 0, running.log
