"""`mcp-token-broker serve` as a real process: crash safety, instances, signals."""

from __future__ import annotations

import random
import signal
import time

import pytest

from broker.storage.keystore import KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .conftest import start_service
from .servers.fixtures import running_stack

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def short_stack():
    with running_stack(access_ttl=5) as (oidc, mcp):
        yield oidc, mcp


def test_kill_9_during_refresh_churn_leaves_a_loadable_vault(cli, short_stack):
    oidc, mcp = short_stack
    names = [f"churn{i}" for i in range(4)]
    service = start_service(cli)
    for name in names:
        assert cli("add", name, mcp.url).returncode == 0
        r = cli("connect", name)
        assert r.returncode == 0, r.stderr
    before = oidc.stats()["grants"].get("refresh_token", 0)
    rng = random.Random()
    for round_ in range(5):
        time.sleep(rng.uniform(0.5, 2.5))  # refreshes every ~2.5 s per connection
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait()
        assert service.socket_path.exists()  # a crash leaves the socket behind
        store = Store(Paths.default(), KeyringKeyStore)
        states = store.load_states()  # never raises: old or new, never torn
        assert set(states) == set(names) == set(store.load_settings())
        assert all(s.tokens is not None for s in states.values())
        service = start_service(cli, log_name=f"serve{round_}.log")  # replaces the stale socket
    assert oidc.stats()["grants"].get("refresh_token", 0) > before  # there really was churn
    listing = cli("list", "--json").json()["connections"]
    assert {c["name"] for c in listing} == set(names)
    assert service.stop() == 0


def test_second_serve_says_so_and_sigterm_is_clean(cli):
    first = start_service(cli)
    r = cli("serve", timeout=30)
    assert r.returncode == 6
    assert "already running" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert first.proc.poll() is None  # the first one is untouched
    assert cli("list", "--json").returncode == 0
    assert first.stop() == 0
    assert not first.socket_path.exists()
    assert "stopped" in first.log


def test_token_without_service_says_how_to_start_one(cli):
    for command in ("token", "headers"):
        r = cli(command, "anything")
        assert r.returncode == 6
        assert (
            r.stderr.strip() == "mcp-token-broker: no broker service is running; "
            "start one with `mcp-token-broker serve` (or the desktop app)"
        )


def test_headers_for_claude_code(cli, short_stack, service):
    _, mcp = short_stack
    assert cli("add", "hdr", mcp.url).returncode == 0
    assert cli("connect", "hdr").returncode == 0
    headers = cli("headers", "hdr").json()
    assert list(headers) == ["Authorization"] and headers["Authorization"].startswith("Bearer ey")
    audit = cli("audit", "--json", "--connection", "hdr")
    assert audit.returncode == 0 and '"outcome": "served"' in audit.stdout
    assert headers["Authorization"][7:] not in audit.stdout
    # The audit names the application that ran the command (this test process),
    # not the `mcp-token-broker headers` process that connected to the socket.
    import json
    import os

    entry = json.loads(audit.stdout.strip().splitlines()[-1])
    assert entry["pid"] == os.getpid() and entry["client"] == "python -m pytest"
    assert entry["peer_pid"] != os.getpid()  # the `headers` process itself
    assert "mcp-token-broker" not in (entry["script"] or "")


def test_stdio_proxy_for_clients_that_only_start_local_servers(cli, short_stack, service):
    """Claude Desktop / Cursor style: the client spawns `mcp-token-broker proxy NAME`."""
    import anyio
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    _, mcp = short_stack
    assert cli("add", "stdio", mcp.url).returncode == 0
    assert cli("connect", "stdio").returncode == 0

    async def main():
        params = StdioServerParameters(command=cli.exe, args=["proxy", "stdio"], env=cli.env)
        async with Client(stdio_client(params)) as client:
            tools = await client.list_tools()
            first = await client.call_tool("whoami", {})
            await anyio.sleep(6)  # longer than a token's 5 s life: the proxy keeps up
            second = await client.call_tool("echo", {"text": "still here"})
        return [t.name for t in tools.tools], first, second

    names, first, second = anyio.run(main)
    assert "whoami" in names
    assert "alice" in str(first.content)
    assert "still here" in str(second.content)
