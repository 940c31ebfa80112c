"""The official MCP SDK clients, through `mcp-token-broker proxy NAME`.

Real clients as users run them: the TypeScript SDK's `StdioClientTransport`
(node, tests/clients/client.mjs) and the Python SDK's `stdio_client`, each
starting the real proxy, against a real `serve`, oidc-provider (which rotates
refresh tokens) and the OAuth-protected test MCP server. Tokens live 5 s, so
each test runs across refreshes.

Stdio clients start servers with a minimal environment (HOME, LOGNAME, PATH,
SHELL, TERM, USER): the proxy must find the broker without XDG_RUNTIME_DIR,
through the platform's default runtime directory, whichever of the two had it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from broker.client.api_client import BrokerClient

from .conftest import REPO, Cli
from .helpers.stdio_proxy import StdioProxy
from .servers.fixtures import running_stack

pytestmark = pytest.mark.timeout(180)

CLIENTS = REPO / "tests" / "clients"
NOT_RUNNING = "MCP Token Broker is not running: start it with `mcp-token-broker serve` or open the app"
MINIMAL = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")  # the TypeScript SDK's getDefaultEnvironment()
ACCESS_TTL = 5


@pytest.fixture(scope="module")
def short_stack():
    with running_stack(access_ttl=ACCESS_TTL) as (oidc, mcp):
        yield oidc, mcp


class TsClient(StdioProxy):
    """tests/clients/client.mjs starting `mcp-token-broker proxy NAME`; one JSON line per request."""

    def __init__(self, exe: str, name: str, env: dict[str, str]) -> None:
        node = shutil.which("node")
        assert node, "node is not on PATH"
        assert (CLIENTS / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(), (
            f"the TypeScript SDK is not installed: run `npm ci --prefix {CLIENTS}`"
        )
        self.proc = subprocess.Popen(
            [node, str(CLIENTS / "client.mjs"), exe, "proxy", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=CLIENTS,
        )
        self._pending = b""

    def ask(self, **request: object) -> dict:
        self.send(request)
        return self.answer()


def _serve(cli, env: dict[str, str], socket_path: Path) -> subprocess.Popen:
    """A real `serve` with `env`; returns once it answers on `socket_path`."""
    proc = subprocess.Popen(
        [cli.exe, "serve"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    client = BrokerClient(str(socket_path), timeout=2)
    deadline = time.monotonic() + 20
    while not client.is_running():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            assert proc.stderr is not None
            raise AssertionError(f"serve did not start at {socket_path}: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    assert proc.wait(timeout=20) == 0
    if proc.stderr:
        proc.stderr.close()


def _connect(cli, env: dict[str, str], name: str, url: str) -> None:
    run = Cli(env, cli.browser_log)  # exactly `env`: a variable left out stays out
    for args in (("add", name, url), ("connect", name)):
        r = run(*args)
        assert r.returncode == 0, r.stderr


def _refreshes(oidc) -> int:
    return int(oidc.stats()["grants"].get("refresh_token", 0))


def _wait_past_expiry(socket_path: Path, name: str) -> None:
    """Until the token the client used so far has expired (a bounded wait)."""
    expires_at = BrokerClient(str(socket_path)).token(name)["expires_at"]
    deadline = time.monotonic() + 4 * ACCESS_TTL
    while time.time() <= expires_at + 0.5:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _texts(result: dict) -> str:
    return " ".join(str(c.get("text")) for c in result["result"]["content"])


# -- the TypeScript SDK ---------------------------------------------------------


def test_typescript_sdk_client_lists_and_calls_across_a_refresh(cli, short_stack, service):
    oidc, mcp = short_stack
    _connect(cli, cli.env, "ts", mcp.url)
    env = {**cli.env, "MCP_TEST_PASS_ENV": "XDG_RUNTIME_DIR"}  # as a client's "env" setting would
    client = TsClient(cli.exe, "ts", env)
    try:
        hello = client.answer()
        assert hello["ok"] and hello["server"]["name"] == "mcp-token-broker-test-server", hello
        assert {"whoami", "echo"} <= set(client.ask(op="list")["tools"])
        assert "alice" in _texts(client.ask(op="call", name="whoami"))
        before = _refreshes(oidc)
        _wait_past_expiry(service.socket_path, "ts")
        answer = client.ask(op="call", name="echo", arguments={"text": "after the refresh"})
        assert answer["ok"] and "after the refresh" in _texts(answer), answer
        assert _refreshes(oidc) > before  # the token really was replaced meanwhile
    finally:
        code, stderr = client.finish()
    assert code == 0 and stderr == "", stderr


# -- the Python SDK ---------------------------------------------------------------


def test_python_sdk_client_lists_and_calls_across_a_refresh(cli, short_stack, service):
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    oidc, mcp = short_stack
    _connect(cli, cli.env, "py", mcp.url)
    env = {"XDG_RUNTIME_DIR": cli.env["XDG_RUNTIME_DIR"]}  # added to the SDK's default environment

    async def main():
        params = StdioServerParameters(command=cli.exe, args=["proxy", "py"], env=env)
        async with Client(stdio_client(params)) as client:
            tools = await client.list_tools()
            first = await client.call_tool("whoami", {})
            before = _refreshes(oidc)
            await anyio.to_thread.run_sync(_wait_past_expiry, service.socket_path, "py")
            second = await client.call_tool("echo", {"text": "after the refresh"})
        return {t.name for t in tools.tools}, first, second, before

    names, first, second, before = anyio.run(main)
    assert {"whoami", "echo"} <= names
    assert not first.is_error and "alice" in str(first.content)
    assert not second.is_error and "after the refresh" in str(second.content)
    assert _refreshes(oidc) > before


# -- three proxies, one rotating refresh token ------------------------------------


def test_three_proxies_share_one_refresh_per_interval(cli, short_stack, service):
    from mcp.client.client import Client
    from mcp.client.stdio import StdioServerParameters, stdio_client

    oidc, mcp = short_stack
    _connect(cli, cli.env, "shared", mcp.url)
    errors_before = dict(oidc.stats()["grant_errors"])
    start_count = _refreshes(oidc)
    wanted = 4  # refreshes to live through
    env = {"XDG_RUNTIME_DIR": cli.env["XDG_RUNTIME_DIR"]}
    calls: list[int] = [0, 0, 0]
    started = time.monotonic()

    async def proxy_client(index: int, done: anyio.Event) -> None:
        params = StdioServerParameters(command=cli.exe, args=["proxy", "shared"], env=env)
        async with Client(stdio_client(params)) as client:
            while not done.is_set():
                result = await client.call_tool("echo", {"text": f"proxy {index}"})
                assert not result.is_error, result.content  # no invalid_grant, nor anything else
                assert f"proxy {index}" in str(result.content)
                calls[index] += 1
                await anyio.sleep(0.1)

    async def main() -> None:
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(proxy_client, index, done)
            deadline = time.monotonic() + 20 * ACCESS_TTL
            while await anyio.to_thread.run_sync(_refreshes, oidc) - start_count < wanted:
                assert time.monotonic() < deadline, "the broker stopped refreshing"
                await anyio.sleep(0.2)
            done.set()

    anyio.run(main)
    elapsed = time.monotonic() - started
    refreshes = _refreshes(oidc) - start_count
    # The broker refreshes a 5 s token 2.5 s before it expires (less up to 10% jitter):
    # one refresh per 2.25 s or more. A refresh per proxy would triple the count.
    intervals = elapsed / (ACCESS_TTL / 2 * 0.9)
    assert refreshes <= intervals + 1, (refreshes, elapsed)
    assert all(count >= 5 for count in calls), calls  # all three were busy throughout
    stats = oidc.stats()
    assert stats["grant_errors"] == errors_before, stats["grant_errors"]  # no invalid_grant at the server
    audit = cli("audit", "--json", "--connection", "shared")
    assert "invalid_grant" not in audit.stdout and '"outcome": "failed"' not in audit.stdout


# -- minimal environment -----------------------------------------------------------


def _minimal(env: dict[str, str]) -> dict[str, str]:
    return {k: env[k] for k in MINIMAL if k in env}


@pytest.fixture
def default_runtime():
    """/run/user/UID as logind makes it (0700, ours): kept if it exists, else made (root) and removed."""
    path = Path(f"/run/user/{os.getuid()}")
    if path.is_dir():
        st = path.lstat()
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
            pytest.skip(f"{path} is not private here")
        yield path
        return
    if os.geteuid() != 0 or not path.parent.is_dir():
        pytest.skip(f"{path} does not exist, and only root can make it")
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_minimal_env_proxy_finds_serve_that_had_xdg_runtime_dir(cli, short_stack, default_runtime, tmp_path):
    _, mcp = short_stack
    env = {**cli.env, "XDG_RUNTIME_DIR": str(default_runtime)}  # a desktop session's
    env.pop("MCP_TOKEN_BROKER_SOCKET", None)
    serve = _serve(cli, env, default_runtime / "mcp-token-broker" / "broker.sock")
    try:
        _connect(cli, env, "bare", mcp.url)
        client = TsClient(cli.exe, "bare", env)  # passes on only the six variables
        try:
            assert client.answer()["ok"]
            assert "alice" in _texts(client.ask(op="call", name="whoami"))
        finally:
            code, stderr = client.finish()
        assert code == 0 and stderr == "", stderr
    finally:
        _stop(serve)


def test_proxy_with_xdg_runtime_dir_finds_serve_without_it(cli, short_stack, default_runtime):
    _, mcp = short_stack
    env = {k: v for k, v in cli.env.items() if k != "XDG_RUNTIME_DIR"}
    serve = _serve(cli, env, default_runtime / "mcp-token-broker" / "broker.sock")  # no XDG_RUNTIME_DIR
    try:
        _connect(cli, env, "other", mcp.url)
        client_env = {**cli.env, "XDG_RUNTIME_DIR": str(default_runtime), "MCP_TEST_PASS_ENV": "XDG_RUNTIME_DIR"}
        client = TsClient(cli.exe, "other", client_env)
        try:
            assert client.answer()["ok"]
            assert "alice" in _texts(client.ask(op="call", name="whoami"))
        finally:
            code, stderr = client.finish()
        assert code == 0 and stderr == "", stderr
    finally:
        _stop(serve)


def test_minimal_env_without_a_runtime_dir_meets_serve_in_the_cache_dir(cli, short_stack, tmp_path):
    if os.path.lexists(f"/run/user/{os.getuid()}"):
        pytest.skip(f"/run/user/{os.getuid()} exists: the fallback is not used here")
    _, mcp = short_stack
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in cli.env.items() if k not in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME")} | {"HOME": str(home)}
    serve = _serve(cli, env, home / ".cache" / "mcp-token-broker" / "run" / "broker.sock")
    try:
        _connect(cli, env, "ssh", mcp.url)
        client = TsClient(cli.exe, "ssh", env)
        try:
            assert client.answer()["ok"]
            assert "alice" in _texts(client.ask(op="call", name="whoami"))
        finally:
            code, stderr = client.finish()
        assert code == 0 and stderr == "", stderr
    finally:
        _stop(serve)


def test_typescript_client_without_a_broker_is_told_what_to_do(cli, tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    client = TsClient(cli.exe, "anything", {**cli.env, "HOME": str(home)})
    answer = client.answer()
    code, stderr = client.finish()
    assert not answer["ok"] and NOT_RUNNING in answer["error"]["message"], answer
    assert code == 1  # the client gave up on connect
    assert stderr.strip() == f"mcp-token-broker: {NOT_RUNNING}", stderr
