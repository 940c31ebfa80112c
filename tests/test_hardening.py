"""Issue 7, item 9: the processes that hold tokens dump no core and cannot be read by ptrace.

`serve`, `proxy` and the desktop app run real, and the kernel is asked:
/proc/PID/limits must show a core limit of 0 (soft and hard), and for a
process of an unprivileged user (uid 65534 under `setpriv`), /proc/PID/environ
must belong to root: that is what PR_SET_DUMPABLE 0 does, and it is what keeps
other processes of the same user from reading the memory (or the environment)
of the process. The unhardened control shows the test can tell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from broker.client.api_client import BrokerClient

from .conftest import start_service

pytestmark = pytest.mark.timeout(180)

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as an unprivileged user needs root")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def core_limit(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line[len("Max core file size") :].split()[:2]
            return soft, hard
    raise AssertionError("no core limit in /proc/PID/limits")


def environ_owner(pid: int) -> int:
    return os.stat(f"/proc/{pid}/environ").st_uid


def as_nobody(cmd: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd], env=env, text=True, **kw
    )


@pytest.fixture
def nobody_env():
    """Private directories of uid 65534, and a key file (root's keyring is not theirs).

    Not in pytest's tmp_path: that is root's, 0700, and uid 65534 cannot reach it."""
    outer = Path(tempfile.mkdtemp(prefix="broker-hardening-"))
    outer.chmod(0o711)
    home = outer / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MCP_TOKEN_BROKER_"))}
    env["HOME"] = str(home)
    for key in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        (home / key).mkdir(mode=0o700)
        env[key] = str(home / key)
    env["MCP_TOKEN_BROKER_KEY_FILE"] = str(home / "key" / "vault.key")
    for path in [home, *home.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)
    yield env
    shutil.rmtree(outer, ignore_errors=True)


def read_until(stream, words: str) -> list[str]:
    lines = []
    for line in stream:
        lines.append(line)
        if words in line:
            return lines
    raise AssertionError("".join(lines) or "the process ended without a word")


@linux_only
def test_serve_has_a_core_limit_of_zero(cli):
    service = start_service(cli)
    try:
        assert core_limit(service.proc.pid) == ("0", "0")
    finally:
        assert service.stop() == 0


@linux_only
@needs_root
def test_hardening_makes_an_unprivileged_process_undumpable(nobody_env):
    """The function itself, with an unhardened control next to it."""
    script = (
        "import sys\n"
        "if sys.argv[1] == 'harden':\n"
        "    from broker.service.hardening import harden_process\n"
        "    harden_process()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    owners = {}
    limits = {}
    for mode in ("control", "harden"):
        proc = as_nobody(
            [sys.executable, "-c", script, mode], nobody_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout.readline() == "ready\n"
            owners[mode] = environ_owner(proc.pid)
            limits[mode] = core_limit(proc.pid)
        finally:
            proc.kill()
            proc.wait()
    assert owners == {"control": NOBODY, "harden": 0}
    assert limits["harden"] == ("0", "0")


@linux_only
@needs_root
def test_unprivileged_serve_and_proxy_are_undumpable(nobody_env, stack):
    _, mcp = stack
    exe = str(Path(sys.executable).with_name("mcp-token-broker"))
    serve = as_nobody(
        [exe, "serve"], nobody_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    proxy = None
    try:
        read_until(serve.stderr, "serving on")
        assert core_limit(serve.pid) == ("0", "0")
        assert environ_owner(serve.pid) == 0, "serve is dumpable: its memory is open to ptrace by the same user"

        added = as_nobody([exe, "add", "demo", mcp.url], nobody_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = added.communicate(timeout=60)
        assert added.returncode == 0, err

        proxy = as_nobody(
            [exe, "proxy", "demo"], nobody_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        # A line that is not JSON-RPC: the proxy's stdio server reports it on stderr,
        # so the proxy is past its start when the line comes back.
        proxy.stdin.write("not json\n")
        proxy.stdin.flush()
        read_until(proxy.stderr, "from the client")
        assert core_limit(proxy.pid) == ("0", "0")
        assert environ_owner(proxy.pid) == 0, "proxy is dumpable: its memory is open to ptrace by the same user"
    finally:
        for proc in (proxy, serve):
            if proc is not None:
                proc.terminate()
                proc.communicate(timeout=30)


@linux_only
def test_desktop_app_has_a_core_limit_of_zero(cli, tmp_path):
    pytest.importorskip("PySide6")
    env = {**cli.env, "QT_QPA_PLATFORM": "offscreen", "MCP_TOKEN_BROKER_KEY_FILE": str(tmp_path / "vault.key")}
    app = subprocess.Popen(
        [sys.executable, "-m", "ui", "--minimized"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = BrokerClient(str(Path(cli.env["XDG_RUNTIME_DIR"]) / "mcp-token-broker" / "broker.sock"), timeout=2)
        deadline = time.monotonic() + 60
        while not client.is_running():  # the service inside the app answers: the app is up
            assert app.poll() is None, app.stderr.read()
            assert time.monotonic() < deadline, "the desktop app did not start its service"
            time.sleep(0.05)
        assert core_limit(app.pid) == ("0", "0")
    finally:
        app.terminate()
        app.communicate(timeout=30)
