"""Attacks on the plaintext settings: the vault decides where secrets go, and
a lost or edited connections.json never wipes the vault's records.

Real `serve`, the real console script, the real oidc-provider and MCP server.
The attacker only writes connections.json, as a synced dotfile or a confined
app with access to the config directory could.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from broker.client.api_client import BrokerClient
from broker.storage.keystore import KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .conftest import start_service

pytestmark = pytest.mark.timeout(180)


class CaptureServer:
    """Records every request it receives; answers like a token endpoint that says no."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                server.requests.append((self.command, self.path, parse_qs(body)))
                data = b'{"error": "invalid_request"}'
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _record

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def received(self) -> list[str]:
        """What arrived, without the values (they may be secrets)."""
        return [f"{method} {path} fields={sorted(fields)}" for method, path, fields in self.requests]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def capture():
    server = CaptureServer()
    yield server
    server.close()


def store() -> Store:
    return Store(Paths.default(), KeyringKeyStore)


def connected(cli, name: str, url: str) -> None:
    r = cli("add", name, url)
    assert r.returncode == 0, r.stderr
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr + cli.browser_log.read_text()


def age(name: str, left: int) -> None:
    """Make the stored access token look `left` seconds from expiry (as if
    obtained long ago), so that the next start of `serve` refreshes it."""
    with store().transaction() as txn:
        state = txn.states[name]
        tokens = state.tokens
        shift = tokens.expires_at - tokens.obtained_at - left
        txn.states[name] = replace(
            state, tokens=replace(tokens, obtained_at=tokens.obtained_at - shift, expires_at=tokens.expires_at - shift)
        )


def edit_settings(change) -> None:
    path = Paths.default().connections_file
    doc = json.loads(path.read_text())
    change(doc["connections"])
    path.write_text(json.dumps(doc, indent=2))


def test_edited_token_endpoint_receives_no_secret(cli, stack, user_dirs, capture):
    oidc, mcp = stack
    connected(cli, "victim", mcp.url)
    real = json.loads(Paths.default().connections_file.read_text())["connections"]["victim"]["discovered"][
        "auth_server"
    ]
    age("victim", left=30)  # inside the refresh margin: `serve` refreshes at once

    def redirect(connections):
        auth = connections["victim"]["discovered"]["auth_server"]
        auth["token_endpoint"] = f"{capture.base}/token"
        auth["revocation_endpoint"] = f"{capture.base}/revoke"

    edit_settings(redirect)
    before = oidc.stats()["grants"]
    running = start_service(cli)
    try:
        r = cli("token", "victim", "--min-ttl", "60")  # forces a refresh if nothing else did
        assert capture.received() == [], "the refresh went to the edited token endpoint"
        assert r.returncode != 0 and r.stdout == ""
        line = (
            "connections.json no longer matches the vault for victim: the token endpoint changed from "
            f"{real['token_endpoint']} to {capture.base}/token; run `mcp-token-broker connect victim` to log in again"
        )
        assert line in r.stderr, r.stderr
        view = cli("show", "victim", "--json").json()
        assert view["status"] == "reauth_required" and line in view["last_error"]
        r = cli("disconnect", "victim")  # revocation sends the refresh token and client credentials too
        assert r.returncode == 0, r.stderr
        assert "no longer matches the vault" in r.stderr
        assert capture.received() == []
    finally:
        assert running.stop() == 0, running.log
    assert oidc.stats()["grants"] == before
    assert "no longer matches the vault for victim" in running.log
    # Logging in again binds the endpoints anew, and refreshes work.
    edit_settings(lambda c: c["victim"]["discovered"]["auth_server"].update(real))
    connected_again = cli("connect", "victim")
    assert connected_again.returncode == 0, connected_again.stderr
    age("victim", left=30)
    running = start_service(cli)
    try:
        r = cli("token", "victim", "--min-ttl", "60")
        assert r.returncode == 0, r.stderr
    finally:
        assert running.stop() == 0, running.log
    assert oidc.stats()["grants"].get("refresh_token", 0) >= before.get("refresh_token", 0) + 1
    assert capture.received() == []


def test_edited_server_url_gets_no_access_token(cli, stack, user_dirs, capture):
    """`proxy NAME` sends the access token to the server_url in the settings."""
    _, mcp = stack
    connected(cli, "victim", mcp.url)
    edit_settings(lambda c: c["victim"].update(server_url=f"{capture.base}/mcp"))
    running = start_service(cli)
    try:
        r = cli("token", "victim")
        assert r.returncode != 0 and r.stdout == "", "the access token was served for an edited server URL"
        assert f"the server URL changed from {mcp.url} to {capture.base}/mcp" in r.stderr, r.stderr
    finally:
        assert running.stop() == 0, running.log


def test_record_from_an_older_version_sends_no_secret_until_connect(cli, stack, user_dirs):
    """Migration: a record without the bound endpoints never refreshes on the
    plaintext settings' word; it asks for a login instead."""
    oidc, mcp = stack
    connected(cli, "old", mcp.url)
    age("old", left=30)
    vault = store().vault
    with store().transaction():
        records = vault.load()
        records["old"].pop("binding", None)  # as an older mcp-token-broker wrote it
        vault.save(records)
    before = oidc.stats()["grants"]
    running = start_service(cli)
    try:
        r = cli("token", "old", "--min-ttl", "60")
        assert oidc.stats()["grants"] == before, "the old record's refresh token was sent on the settings' word"
        assert r.returncode != 0
        assert "does not record where its secrets may be sent" in r.stderr, r.stderr
        assert "run `mcp-token-broker connect old`" in r.stderr
    finally:
        assert running.stop() == 0, running.log
    r = cli("connect", "old")
    assert r.returncode == 0, r.stderr
    assert store().load_states()["old"].binding is not None


def test_orphaned_record_is_kept_listed_and_removable(cli, stack, user_dirs):
    oidc, mcp = stack
    connected(cli, "lost", mcp.url)
    connected(cli, "other", mcp.url)
    refresh_token = store().load_states()["lost"].tokens.refresh_token
    edit_settings(lambda c: c.pop("lost"))  # a lost or hand-edited settings file
    r = cli("disconnect", "other")  # any vault write
    assert r.returncode == 0, r.stderr
    kept = store().load_states()
    assert "lost" in kept, "the vault record was dropped with the settings entry"
    assert kept["lost"].tokens.refresh_token == refresh_token

    note = (
        "orphaned: a vault record without settings; "
        "restore connections.json or `mcp-token-broker remove lost` to delete it"
    )
    r = cli("list")
    assert r.returncode == 0, r.stderr
    assert note in r.stdout and "other" in r.stdout
    listing = cli("list", "--json").json()
    assert [row["name"] for row in listing["connections"]] == ["other"]
    [orphan] = listing["orphaned"]
    assert orphan["name"] == "lost" and orphan["status"] == "orphaned" and orphan["message"] == note
    assert orphan["server_url"] == mcp.url  # from the vault's own copy
    r = cli("show", "lost")
    assert r.returncode == 0 and note in r.stdout, r.stderr
    # Adding the name again with a client secret would overwrite the record: refused.
    r = cli("add", "lost", mcp.url, "--client-id", "mine", "--client-secret-stdin", input="s3cret\n")
    assert r.returncode == 2 and "already exists" in r.stderr, r.stderr
    assert store().load_states()["lost"].tokens.refresh_token == refresh_token

    running = start_service(cli)
    try:
        client = BrokerClient(str(running.socket_path))
        answer = client.request("GET", "/v1/connections")
        assert [o["name"] for o in answer["orphaned"]] == ["lost"]
        assert client.request("GET", "/v1/connections/lost?detail=full")["status"] == "orphaned"
        r = cli("token", "lost")
        assert r.returncode != 0  # an orphan serves no token
        # Another write while serve runs keeps it too.
        assert cli("disconnect", "other").returncode == 0
        assert "lost" in store().load_states()
        revoked = oidc.stats()["revocations"]["refresh_token"]
        r = cli("remove", "lost")
        assert r.returncode == 0, r.stderr
        assert "lost" not in store().load_states()
        # Revoked at the server with the vault's own endpoints.
        assert oidc.stats()["revocations"]["refresh_token"] == revoked + 1
        assert "orphaned" not in cli("list").stdout
    finally:
        assert running.stop() == 0, running.log
