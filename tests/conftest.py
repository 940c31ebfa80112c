"""Shared fixtures: isolated user directories, the real server stack, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers.fixtures import BROWSER_SCRIPT, running_stack

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def user_dirs(tmp_path, monkeypatch):
    """Point every platformdirs location at a fresh temp dir (the XDG variables)."""
    dirs = {
        "XDG_CONFIG_HOME": tmp_path / "config",
        "XDG_DATA_HOME": tmp_path / "data",
        "XDG_STATE_HOME": tmp_path / "state",
        "XDG_RUNTIME_DIR": tmp_path / "run",
    }
    for key, value in dirs.items():
        value.mkdir(mode=0o700)
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("MCP_TOKEN_BROKER_KEY_FILE", raising=False)
    return dirs


@pytest.fixture(scope="session")
def stack():
    """oidc-provider and an OAuth-protected MCP server, both on 127.0.0.1."""
    with running_stack(access_ttl=300) as (oidc, mcp):
        yield oidc, mcp


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


class Cli:
    """Runs the real `mcp-token-broker` console script in a subprocess."""

    def __init__(self, env: dict[str, str], browser_log: Path) -> None:
        self.env = env
        self.browser_log = browser_log
        self.exe = str(Path(sys.executable).with_name("mcp-token-broker"))

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60, env: dict | None = None) -> Result:
        proc = subprocess.run(
            [self.exe, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [self.exe, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **(env or {})},
        )


@pytest.fixture
def cli(user_dirs, tmp_path):
    log = tmp_path / "browser.log"
    env = dict(os.environ)
    env.update({k: str(v) for k, v in user_dirs.items()})
    env["BROWSER"] = BROWSER_SCRIPT
    env["BROWSER_LOG"] = str(log)
    env.pop("MCP_TOKEN_BROKER_DEBUG", None)
    # Over SSH without a display, `connect` logs in on another device: tests choose.
    env.pop("SSH_CONNECTION", None)
    env.pop("SSH_TTY", None)
    return Cli(env, log)


@pytest.fixture
def spawn():
    """Start processes in their own session; kill each whole group afterwards."""
    started: list[subprocess.Popen] = []

    def start(argv, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def hostile_server():
    from .servers.hostile import HostileServer

    server = HostileServer()
    yield server
    server.close()


class RunningService:
    def __init__(self, proc, socket_path, log_path):
        self.proc = proc
        self.socket_path = socket_path
        self.log_path = log_path

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def start_service(cli, *args, env=None, log_name="serve.log"):
    """`mcp-token-broker serve` as a real subprocess; waits for /v1/health."""
    import time

    from broker.client.api_client import BrokerClient

    socket_path = Path(cli.env["XDG_RUNTIME_DIR"]) / "mcp-token-broker" / "broker.sock"
    log_path = Path(cli.env["XDG_STATE_HOME"]).parent / log_name
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [cli.exe, "serve", *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**cli.env, **(env or {})},
    )
    client = BrokerClient(str(socket_path), timeout=2)
    deadline = time.monotonic() + 20
    while not client.is_running():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"serve did not start: {log_path.read_text()}")
        time.sleep(0.05)
    return RunningService(proc, socket_path, log_path)


@pytest.fixture
def service(cli):
    running = start_service(cli)
    yield running
    code = running.stop()
    assert code == 0, running.log
    assert not running.socket_path.exists()
