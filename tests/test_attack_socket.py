"""Issue 7, item 1: another local user takes over the broker's socket.

Without XDG_RUNTIME_DIR and /run/user/UID (SSH sessions, `serve` on a shared
host) the socket used to fall back to $TMPDIR/runtime-UID. Another user (uid
65534, under `setpriv`) runs tests/helpers/fake_broker.py there, either before
anything else (squat) or after `serve` started (swap), and records every byte
the victim's real clients send: the client secret of `add
--client-secret-stdin`, the code of `connect --paste`, and `token` printing a
forged token. Then the victim's configuration leads into the other user's
directories (an override, a home below their directory), and finally the
other user's listener sits in the victim's own directory (as after a swap that
got past the directory checks): `serve` exits with the storage code, and the
clients refuse before sending a byte.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import Cli
from .servers.fixtures import BROWSER_SCRIPT

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="acting as a second user needs root"),
    pytest.mark.timeout(180),
]

ATTACKER = 65534
FAKE = str(Path(__file__).parent / "helpers" / "fake_broker.py")
FORGED_TOKEN = "forged-token-4d2b"
CLIENT_SECRET = "client-secret-7f3a0e"
AUTH_CODE = "auth-code-9c1e55"
PASTED = f"http://127.0.0.1:1/callback?code={AUTH_CODE}&state=s\n"
STORAGE = 3


@pytest.fixture
def shared():
    """A world-writable sticky directory, like /tmp, for this test only."""
    path = Path(tempfile.mkdtemp(prefix="broker-attack-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(tmp_path, shared):
    """The CLI of a user (root here) with no XDG_RUNTIME_DIR and TMPDIR=shared."""
    if os.path.lexists(f"/run/user/{os.getuid()}"):
        pytest.skip(f"/run/user/{os.getuid()} exists: the fallback is not used here")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MCP_TOKEN_BROKER_"))}
    for name in ("config", "data", "state", "home"):
        (tmp_path / name).mkdir(mode=0o700)
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        TMPDIR=str(shared),
        BROWSER=BROWSER_SCRIPT,
        BROWSER_LOG=str(tmp_path / "browser.log"),
    )
    return Cli(env, tmp_path / "browser.log")


class Attacker:
    """fake_broker.py as uid 65534; `received()` is every byte clients sent it."""

    def __init__(self, mode: str, where: Path, record: Path) -> None:
        self.record = record
        self.proc = subprocess.Popen(
            [
                "setpriv",
                f"--reuid={ATTACKER}",
                f"--regid={ATTACKER}",
                "--clear-groups",
                sys.executable,
                FAKE,
                mode,
                str(where),
                str(record),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "ready\n"

    def swap(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("swap\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "swapped\n"

    def received(self) -> bytes:
        return self.record.read_bytes()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def attackers():
    started: list[Attacker] = []

    def start(mode: str, where: Path, record: Path) -> Attacker:
        started.append(Attacker(mode, where, record))
        return started[-1]

    yield start
    for attacker in started:
        attacker.stop()


class Serve:
    """A real `serve`; `start` returns once it serves, or with its exit code."""

    def __init__(self, cli: Cli, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [cli.exe, "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**cli.env, **(env or {})},
        )
        assert self.proc.stderr is not None
        self.lines: list[str] = []
        for line in self.proc.stderr:
            self.lines.append(line)
            if "serving on" in line:
                self.socket_path = line.split("serving on ", 1)[1].split(" (", 1)[0]
                return
        self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=30)
        return self.proc.returncode


@pytest.fixture
def serves():
    started: list[Serve] = []

    def start(cli: Cli, env: dict | None = None) -> Serve:
        started.append(Serve(cli, env))
        return started[-1]

    yield start
    for serve in started:
        serve.stop()


def run_clients(cli: Cli, env: dict | None = None) -> dict:
    """The three flows that send something worth stealing, as the victim runs them."""
    return {
        "token": cli("token", "demo", env=env),
        "add": cli(
            "add",
            "demo",
            "https://127.0.0.1:9/mcp",
            "--client-id",
            "cid",
            "--client-secret-stdin",
            input=CLIENT_SECRET + "\n",
            env=env,
        ),
        "connect": cli("connect", "demo", "--paste", input=PASTED, env=env, timeout=90),
    }


def assert_nothing_reached(attacker: Attacker, results: dict) -> None:
    received = attacker.received()
    leaks = [
        what
        for what, leaked in (
            ("`token` printed their forged token", FORGED_TOKEN in results["token"].stdout),
            ("they received the client secret", CLIENT_SECRET.encode() in received),
            ("they received the authorization code", AUTH_CODE.encode() in received),
        )
        if leaked
    ]
    assert not leaks, "; ".join(leaks)
    assert received == b"", f"the other user received {len(received)} bytes: {received[:120]!r}"


def assert_refused(results: dict, words: str) -> None:
    for command, r in results.items():
        assert r.returncode == STORAGE, f"{command}: {r.returncode} {r.stderr}"
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], f"{command}: {r.stderr}"


def test_squatted_fallback_dir(victim, shared, attackers, serves):
    """(a) The other user creates the old fallback directory first and listens in it."""
    attacker = attackers(
        "squat", shared / f"runtime-{os.getuid()}" / "mcp-token-broker" / "broker.sock", shared / "record-a"
    )
    results = run_clients(victim)  # no service of ours runs yet
    assert_nothing_reached(attacker, results)
    assert results["token"].returncode == 6, results["token"].stderr

    serve = serves(victim)  # the service keeps to the user's own directories ...
    assert serve.running, "".join(serve.lines)
    assert serve.socket_path == os.path.join(victim.env["HOME"], ".cache", "mcp-token-broker", "run", "broker.sock")
    results = run_clients(victim)  # ... and the clients find it there
    assert_nothing_reached(attacker, results)
    assert results["token"].returncode == 2 and "no connection named 'demo'" in results["token"].stderr
    assert serve.stop() == 0


def test_fallback_dir_swapped_after_serve_starts(victim, shared, attackers, serves):
    """(b) The other user creates only runtime-UID, and swaps its contents once `serve` runs."""
    attacker = attackers("swap", shared / f"runtime-{os.getuid()}", shared / "record-b")
    serve = serves(victim)
    assert serve.running, "".join(serve.lines)
    attacker.swap()
    results = run_clients(victim)
    assert_nothing_reached(attacker, results)
    assert results["token"].returncode == 2, results["token"].stderr  # our own service answered
    assert serve.stop() == 0


@pytest.mark.parametrize("where", ["socket-override", "home"])
def test_configured_path_through_another_users_directory(victim, shared, attackers, serves, where):
    """The victim's socket path leads through a directory the other user owns, and
    the other user listens there: `serve` exits with the storage code, clients refuse."""
    theirs = shared / "theirs"
    if where == "socket-override":
        socket_path = theirs / "run" / "broker.sock"
        env = {"MCP_TOKEN_BROKER_SOCKET": str(socket_path)}
    else:  # a home below their directory: they can move it aside and put their own there
        socket_path = theirs / "home" / ".cache" / "mcp-token-broker" / "run" / "broker.sock"
        env = {"HOME": str(theirs / "home")}
    attacker = attackers("squat", socket_path, shared / "record-c")

    serve = serves(victim, env)
    assert not serve.running and serve.proc.returncode == STORAGE, "".join(serve.lines)
    assert len(serve.lines) == 1 and str(theirs) in serve.lines[0], serve.lines

    results = run_clients(victim, env)
    assert_nothing_reached(attacker, results)
    assert_refused(results, str(theirs))


def test_another_users_listener_in_our_own_directory(victim, shared, attackers, serves, tmp_path):
    """Whatever got past the directory checks, the clients ask the kernel who listens
    (SO_PEERCRED) and send nothing to another user's process."""
    ours = tmp_path / "sock"
    ours.mkdir(mode=0o700)
    env = {"MCP_TOKEN_BROKER_SOCKET": str(ours / "broker.sock")}
    serve = serves(victim, env)
    assert serve.running, "".join(serve.lines)
    assert victim("token", "demo", env=env).returncode == 2  # our service passes the check
    attacker = attackers("squat", shared / "theirs" / "broker.sock", shared / "record-d")
    os.rename(shared / "theirs" / "broker.sock", ours / "broker.sock")  # their socket, in our place
    results = run_clients(victim, env)
    assert_nothing_reached(attacker, results)
    assert_refused(results, f"uid {ATTACKER}")
