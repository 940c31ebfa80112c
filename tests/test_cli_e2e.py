"""The CLI end to end, against the real oidc-provider and MCP SDK server.

The browser is tests/helpers/browser.py via $BROWSER: it fills in the login
and consent forms the way a user would.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time

import anyio
import pytest

from broker.storage.keystore import KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .conftest import Cli, start_service

pytestmark = pytest.mark.timeout(120)


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def vault_states():
    return Store(Paths.default(), KeyringKeyStore).load_states()


async def list_tools(url: str, token: str | None) -> list[str]:
    import httpx2
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.list_tools()
    return [tool.name for tool in result.tools]


def test_add_connect_use_refresh_disconnect_remove(cli, stack, user_dirs, service):
    oidc, mcp = stack
    before = oidc.stats()

    r = cli("add", "demo", mcp.url)
    assert r.returncode == 0, r.stderr
    assert f"authorization server: {oidc.issuer}" in r.stdout
    assert "dynamic client registration" in r.stdout
    assert "mcp:read offline_access" in r.stdout

    r = cli("connect", "demo")
    assert r.returncode == 0, r.stderr + cli.browser_log.read_text()
    assert "Connected demo" in r.stdout

    listing = cli("list", "--json").json()
    [row] = listing["connections"]
    assert set(row) == {"name", "server_url", "status", "scopes", "expires_at", "step_up"}
    assert row["step_up"] is None  # no server asked for more scope
    assert row["status"] == "connected" and row["scopes"] == ["mcp:read"]
    assert row["server_url"] == mcp.url
    assert time.time() < row["expires_at"] <= time.time() + 301

    states = vault_states()
    access = states["demo"].tokens.access_token.reveal()
    refresh = states["demo"].tokens.refresh_token.reveal()
    shown = cli("show", "demo", "--json")
    assert access not in shown.stdout and refresh not in shown.stdout
    view = shown.json()
    assert view["issuer"] == oidc.issuer and view["has_refresh_token"] is True
    assert view["requested_scopes"] == ["mcp:read", "offline_access"]
    assert view["registration"]["method"] == "dynamic"
    # Nothing secret in plaintext on disk.
    for path in (Paths.default().vault_file, Paths.default().connections_file):
        raw = path.read_text()
        assert access not in raw and refresh not in raw

    token = cli("token", "demo").stdout.strip()
    assert token == access
    claims = jwt_claims(token)
    assert claims["aud"] == mcp.url and claims["iss"] == oidc.issuer  # RFC 8707 audience binding
    assert "whoami" in anyio.run(list_tools, mcp.url, token)

    # Forcing a refresh (a min_ttl beyond the lifetime no longer does): a client
    # reports the token rejected. A new access token, a rotated refresh token, one grant.
    from broker.client.api_client import BrokerClient

    assert BrokerClient(str(service.socket_path)).report_rejected("demo", token)["refreshed"] is True
    refreshed = cli("token", "demo", "--min-ttl", "400")
    assert refreshed.returncode == 0, refreshed.stderr
    new_token = refreshed.stdout.strip()
    assert new_token != token
    assert vault_states()["demo"].tokens.refresh_token.reveal() != refresh
    stats = oidc.stats()
    assert stats["grants"].get("refresh_token", 0) == before["grants"].get("refresh_token", 0) + 1
    assert "whoami" in anyio.run(list_tools, mcp.url, new_token)

    r = cli("disconnect", "demo")
    assert r.returncode == 0, r.stderr
    assert oidc.stats()["revocations"]["refresh_token"] == before["revocations"]["refresh_token"] + 1
    assert cli("list", "--json").json()["connections"][0]["status"] == "not_connected"
    r = cli("token", "demo")
    assert r.returncode == 8 and "connect demo" in r.stderr and "Traceback" not in r.stderr

    assert cli("remove", "demo").returncode == 0
    assert cli("list", "--json").json() == {"connections": []}


def _connect(cli, name, **env):
    r = cli("connect", name, env=env or None)
    assert r.returncode == 0, r.stderr + (cli.browser_log.read_text() if cli.browser_log.exists() else "")
    return r


def _redirect(cli, name):
    return cli("show", name, "--json").json()["registration"]["redirect_uri"]


def test_redirect_port_is_stable_and_heals(cli, stack):
    oidc, mcp = stack
    assert cli("add", "stable", mcp.url).returncode == 0
    created = oidc.stats()["registrations"]["created"]
    _connect(cli, "stable")
    first = _redirect(cli, "stable")
    _connect(cli, "stable")
    assert _redirect(cli, "stable") == first
    assert oidc.stats()["registrations"]["created"] == created + 1  # registered once

    # The port is taken by someone else: a new port and a new registration.
    port = int(re.search(r":(\d+)/", first).group(1))
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        _connect(cli, "stable")
    finally:
        blocker.close()
    second = _redirect(cli, "stable")
    assert second != first
    assert oidc.stats()["registrations"]["created"] == created + 2


def test_stale_registration_heals_itself(cli, stack):
    oidc, mcp = stack
    assert cli("add", "stale", mcp.url).returncode == 0
    _connect(cli, "stale")
    old_client = cli("show", "stale", "--json").json()["registration"]["client_id"]
    oidc.forget_clients()  # the server lost every registration
    r = _connect(cli, "stale")
    assert "registering" in r.stderr
    assert cli("show", "stale", "--json").json()["registration"]["client_id"] != old_client
    assert cli("list", "--json").json()["connections"][0]["status"] == "connected"


def test_refresh_after_server_forgot_client_needs_reauth(cli, stack, service):
    oidc, mcp = stack
    assert cli("add", "forgot", mcp.url).returncode == 0
    _connect(cli, "forgot")
    oidc.forget_clients()
    # A client reports the token rejected; the refresh is refused (invalid_client).
    from broker.client.api_client import BrokerClient, ServiceError

    token = cli("token", "forgot").stdout.strip()
    with pytest.raises(ServiceError, match="re-authorization"):
        BrokerClient(str(service.socket_path)).report_rejected("forgot", token)
    # The token cannot live a day, and it cannot be refreshed.
    r = cli("token", "forgot", "--min-ttl", "86400")
    assert r.returncode == 8 and "re-authorization" in r.stderr
    assert cli("list", "--json").json()["connections"][0]["status"] == "reauth_required"
    # connect repairs everything.
    _connect(cli, "forgot")
    assert cli("list", "--json").json()["connections"][0]["status"] == "connected"


def test_user_denies_consent(cli, stack):
    _, mcp = stack
    assert cli("add", "deny", mcp.url).returncode == 0
    r = cli("connect", "deny", env={"BROWSER_MODE": "deny"})
    assert r.returncode == 5
    assert "access_denied" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()[-1]) < 300
    assert cli("list", "--json").json()["connections"][0]["status"] == "not_connected"


def _read_url(proc) -> str:
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        if line.strip().startswith("http"):
            return line.strip()
    raise AssertionError("no URL printed")


def test_no_browser_prints_url_and_waits(cli, stack):
    import subprocess

    from .servers.fixtures import BROWSER_SCRIPT

    _, mcp = stack
    assert cli("add", "ssh", mcp.url).returncode == 0
    proc = cli.popen("connect", "ssh", "--no-browser", env={"BROWSER": "/bin/false"})
    url = _read_url(proc)
    assert url.startswith(stack[0].issuer + "/auth?")
    subprocess.run([BROWSER_SCRIPT, url], env=cli.env, check=True, timeout=30)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Connected ssh" in out


def test_paste_mode(cli, stack):
    import subprocess

    from .servers.fixtures import BROWSER_SCRIPT

    _, mcp = stack
    assert cli("add", "paste", mcp.url).returncode == 0
    proc = cli.popen("connect", "paste", "--paste")
    url = _read_url(proc)
    # The browser runs elsewhere: the redirect never reaches the listener.
    subprocess.run([BROWSER_SCRIPT, url], env={**cli.env, "BROWSER_NO_DELIVER": "1"}, check=True, timeout=30)
    callback = [
        line.split("CALLBACK ", 1)[1] for line in cli.browser_log.read_text().splitlines() if "CALLBACK " in line
    ][-1]
    out, err = proc.communicate(callback + "\n", timeout=30)
    assert proc.returncode == 0, err
    assert "Connected paste" in out


def test_forged_paste_is_rejected_then_flow_times_out(cli, stack):
    _, mcp = stack
    assert cli("add", "forged", mcp.url).returncode == 0
    proc = cli.popen("connect", "forged", "--paste", "--timeout", "3")
    _read_url(proc)
    out, err = proc.communicate("http://127.0.0.1:1/callback?code=stolen&state=forged\n", timeout=30)
    assert proc.returncode == 4
    assert "state mismatch" in err and "no answer from the browser" in err
    assert cli("list", "--json").json()["connections"][0]["status"] == "not_connected"


def test_add_validation_errors(cli, stack):
    _, mcp = stack
    cases = [
        (("add", "Bad Name", mcp.url), 2, "not a valid connection name"),
        (("add", "x", "ftp://example.com"), 2, "only https"),
        (("add", "x", "http://example.com/mcp"), 2, "https is required"),
        (("add", "x", "not a url"), 2, "not an absolute URL"),
        (("show", "nope"), 2, "no connection named"),
        (("token", "nope"), 6, "no broker service is running"),
        (("add", "x", "http://127.0.0.1:1/mcp"), 5, "cannot reach"),
    ]
    for args, code, text in cases:
        r = cli(*args)
        assert r.returncode == code, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli("add", "dup", mcp.url).returncode == 0
    r = cli("add", "dup", mcp.url)
    assert r.returncode == 2 and "already exists" in r.stderr


def test_no_keyring_is_a_clear_error_and_key_file_is_opt_in(cli, stack, tmp_path):
    _, mcp = stack
    no_bus = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"}
    assert cli("add", "nokr", mcp.url).returncode == 0
    r = cli("connect", "nokr", env=no_bus)
    assert r.returncode == 3
    assert "no OS keyring" in r.stderr and "--key-file" in r.stderr and "Secret Service" in r.stderr
    assert not Paths.default().vault_file.exists()  # never plaintext, never a silent fallback

    key = tmp_path / "k" / "vault.key"
    r = cli("--key-file", str(key), "connect", "nokr", env=no_bus)
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and str(key) in r.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    r = cli("list", "--json", env={**no_bus, "MCP_TOKEN_BROKER_KEY_FILE": str(key)})
    assert r.returncode == 0 and r.json()["connections"][0]["status"] == "connected"


def test_add_without_a_keyring_fails_up_front_as_list_does(cli, stack):
    """Issue 10, item 15: no D-Bus session (so no Secret Service) makes `add`
    refuse before it writes anything, with `list`'s line and exit status,
    instead of accepting a connection that `connect` cannot store; directly
    and through a `serve` started first, as the quick start does."""
    _, mcp = stack
    no_bus = {k: v for k, v in cli.env.items() if k != "DBUS_SESSION_BUS_ADDRESS"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli.exe, *args], env=no_bus, capture_output=True, text=True, timeout=60)

    def refused(r: subprocess.CompletedProcess[str]) -> None:
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert "no OS keyring" in r.stderr and "--key-file" in r.stderr and len(r.stderr.splitlines()) == 1
        assert r.stdout == ""

    settings = Paths.default().connections_file
    service = start_service(Cli(no_bus, cli.browser_log))  # a fresh machine: it starts, nothing to decrypt
    try:
        refused(run("add", "fresh", mcp.url))
    finally:
        assert service.stop() == 0, service.log
    assert not settings.exists()
    refused(run("add", "fresh", mcp.url))  # no service
    assert not settings.exists()

    assert cli("add", "first", mcp.url).returncode == 0  # with the keyring
    before = settings.read_bytes()
    listed, added = run("list"), run("add", "second", mcp.url)
    refused(listed)
    assert added.returncode == listed.returncode and added.stderr == listed.stderr
    assert settings.read_bytes() == before  # nothing written for "second"


def test_corrupt_vault_is_an_error_and_left_alone(cli, stack):
    _, mcp = stack
    assert cli("add", "corrupt", mcp.url).returncode == 0
    _connect(cli, "corrupt")
    vault = Paths.default().vault_file
    damaged = vault.read_bytes()[:-40]
    vault.write_bytes(damaged)
    for args in (("list",), ("show", "corrupt"), ("connect", "corrupt")):
        r = cli(*args)
        assert r.returncode == 3 and "left untouched" in r.stderr and "Traceback" not in r.stderr
    assert vault.read_bytes() == damaged


def test_version_and_module_entry(cli):
    import subprocess
    import sys

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("mcp-token-broker 0.")
    out = subprocess.run([sys.executable, "-m", "broker", "--version"], capture_output=True, text=True)
    assert out.stdout == r.stdout


def test_server_without_s256_is_refused_and_nothing_stored(cli, hostile_server):
    hostile_server.metadata = {"code_challenge_methods_supported": ["plain"]}
    r = cli("add", "nos256", hostile_server.mcp_url)
    assert r.returncode == 5 and "S256" in r.stderr
    assert cli("list", "--json").json() == {"connections": []}


def test_issuer_mismatch_is_refused(cli, hostile_server):
    hostile_server.metadata = {"issuer": "https://honest.example.com"}
    r = cli("add", "mixup", hostile_server.mcp_url)
    assert r.returncode == 5 and "claims issuer" in r.stderr
    assert cli("list", "--json").json() == {"connections": []}


@pytest.mark.parametrize(
    "field,value,text",
    [
        ("authorization_endpoint", "javascript:alert(1)", "javascript"),
        ("token_endpoint", "file:///etc/passwd", "file"),
        ("token_endpoint", "http://example.com/token", "plain http"),
    ],
)
def test_hostile_endpoints_refused(cli, hostile_server, field, value, text):
    hostile_server.metadata = {field: value}
    r = cli("add", "hostile", hostile_server.mcp_url)
    assert r.returncode == 5 and text in r.stderr, r.stderr
    assert cli("list", "--json").json() == {"connections": []}


def test_oversized_and_slow_metadata(cli, hostile_server):
    hostile_server.mode = "huge"
    r = cli("add", "huge", hostile_server.mcp_url)
    assert r.returncode == 5 and "bytes" in r.stderr, r.stderr
    hostile_server.mode = "slow"
    r = cli("add", "slow", hostile_server.mcp_url, env={"MCP_TOKEN_BROKER_HTTP_TIMEOUT": "2"})
    assert r.returncode == 5 and "did not answer within" in r.stderr, r.stderr
    assert cli("list", "--json").json() == {"connections": []}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preregistered_confidential_client_with_fixed_port(cli, stack, service):
    """Like Slack: the user registered an app with a fixed redirect URI and got a secret."""
    import httpx

    oidc, mcp = stack
    port = _free_port()
    redirect = f"http://127.0.0.1:{port}/oauth/cb"
    reg = httpx.post(
        f"{oidc.issuer}/reg",
        json={
            "application_type": "native",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
    ).json()
    secret = reg["client_secret"]
    created = oidc.stats()["registrations"]["created"]
    r = cli(
        "add",
        "prereg",
        mcp.url,
        f"--client-id={reg['client_id']}",
        "--client-secret-stdin",
        "--redirect-port",
        str(port),
        "--redirect-path",
        "/oauth/cb",
        input=secret + "\n",
    )
    assert r.returncode == 0, r.stderr
    assert "pre-registered client id" in r.stdout
    _connect(cli, "prereg")
    view = cli("show", "prereg", "--json").json()
    assert view["registration"] == {
        "method": "preregistered",
        "client_id": reg["client_id"],
        "redirect_uri": redirect,
        "token_endpoint_auth_method": "client_secret_basic",
    }
    assert secret not in json.dumps(view)
    assert secret not in Paths.default().vault_file.read_text()
    assert oidc.stats()["registrations"]["created"] == created  # never registered by itself
    # Refresh authenticates with the secret (client_secret_basic).
    assert cli("token", "prereg", "--min-ttl", "400").returncode == 0

    # The fixed port is taken: a clear error, not a silent new redirect URI.
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        r = cli("connect", "prereg")
    finally:
        blocker.close()
    assert r.returncode == 4 and f"port {port} is taken" in r.stderr


def test_no_resource_switch(cli, stack, service):
    oidc, mcp = stack
    assert cli("add", "nores", mcp.url, "--no-resource").returncode == 0
    _connect(cli, "nores")
    log = cli.browser_log.read_text()
    assert "resource=" not in [line for line in log.splitlines() if " open " in line][-1]
    # Without a resource indicator oidc-provider issues an opaque token for
    # its own userinfo, not a JWT for the MCP server: the switch really works.
    token = cli("token", "nores").stdout.strip()
    assert token.count(".") != 2


def test_verbose_output_never_shows_secrets(cli, stack, service):
    _, mcp = stack
    assert cli("add", "quiet", mcp.url).returncode == 0
    connect = cli("-v", "connect", "quiet")
    assert connect.returncode == 0, connect.stderr
    refresh = cli("-v", "token", "quiet", "--min-ttl", "400")
    assert refresh.returncode == 0, refresh.stderr
    disconnect_before = vault_states()["quiet"].tokens
    disconnect = cli("-v", "disconnect", "quiet")
    secrets = [
        refresh.stdout.strip(),
        disconnect_before.access_token.reveal(),
        disconnect_before.refresh_token.reveal(),
    ]
    for out in (connect.stderr, connect.stdout, refresh.stderr, disconnect.stderr, disconnect.stdout):
        for secret in secrets:
            assert secret not in out


def test_paste_mode_through_the_service(cli, stack, service):
    """The login runs inside the service; the CLI follows it and forwards the paste."""
    import subprocess

    from .servers.fixtures import BROWSER_SCRIPT

    _, mcp = stack
    assert cli("add", "spaste", mcp.url).returncode == 0
    proc = cli.popen("connect", "spaste", "--paste")
    url = _read_url(proc)
    subprocess.run([BROWSER_SCRIPT, url], env={**cli.env, "BROWSER_NO_DELIVER": "1"}, check=True, timeout=30)
    callback = [
        line.split("CALLBACK ", 1)[1] for line in cli.browser_log.read_text().splitlines() if "CALLBACK " in line
    ][-1]
    proc.stdin.write("http://127.0.0.1:1/callback?code=x&state=forged\n")  # a wrong paste first
    proc.stdin.flush()
    proc.stdin.write(callback + "\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "state mismatch" in err and "Connected spaste" in out
    code = callback.split("code=", 1)[1].split("&", 1)[0]
    assert code not in service.log and code not in err  # the authorization code is never logged
    assert cli("list", "--json").json()["connections"][0]["status"] == "connected"
