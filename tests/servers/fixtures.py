"""Start and stop the real test servers (authorization server + MCP server).

Used from conftest.py files, e.g.::

    from tests.servers.fixtures import BROWSER_SCRIPT, running_stack

    @pytest.fixture(scope="module")
    def stack():
        with running_stack(access_ttl=300) as (oidc, mcp):
            yield oidc, mcp

(``tests.servers`` resolves from the repository root, which pytest puts on
sys.path because ``tests/`` is a package.)

* ``OidcServer`` wraps ``node tests/servers/oidc/server.mjs`` (oidc-provider;
  needs ``npm ci --prefix tests/servers/oidc`` once).
* ``McpServer`` wraps ``python tests/servers/mcp_server.py``.
* ``BROWSER_SCRIPT`` is the fake browser to put in ``$BROWSER``.

Every process is started with stdout piped (for its one JSON "ready" line) and
stderr sent to a temporary file whose tail is included in startup errors.
Processes still running at interpreter exit are killed.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

SERVERS_DIR = Path(__file__).resolve().parent
OIDC_DIR = SERVERS_DIR / "oidc"
OIDC_SCRIPT = OIDC_DIR / "server.mjs"
MCP_SCRIPT = SERVERS_DIR / "mcp_server.py"
REPO_ROOT = SERVERS_DIR.parent.parent
BROWSER_SCRIPT = str(REPO_ROOT / "tests" / "helpers" / "browser.py")

STARTUP_TIMEOUT = 30.0  # seconds to wait for a server's ready line
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _live.clear()


class ServerStartError(RuntimeError):
    """A test server exited or stayed silent instead of printing its ready line."""


class _Process:
    """A server subprocess that announces readiness with one JSON line on stdout."""

    def __init__(self, name: str, argv: list[str], cwd: Path, timeout: float) -> None:
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        self._stderr_final: str | None = None  # kept once the process is stopped
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        _live.add(self.proc)
        try:
            self.ready = self._read_ready_line(timeout)
        except BaseException:
            self.stop()
            raise

    def stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr_final is not None:
            return self._stderr_final[-limit:]
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")[-limit:]

    def _fail(self, why: str) -> ServerStartError:
        return ServerStartError(f"{self.name} {why}; stderr tail:\n{self.stderr_tail()}")

    def _read_ready_line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"did not report ready within {timeout:.0f}s")
            readable, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.2))
            if readable:
                line = self.proc.stdout.readline()
                if not line:  # EOF: the process is exiting
                    self.proc.wait(timeout=STOP_TIMEOUT)
                    raise self._fail(f"exited with status {self.proc.returncode} before it was ready")
                try:
                    return json.loads(line)
                except json.JSONDecodeError as err:
                    raise self._fail(f"printed a non-JSON ready line {line[:200]!r}") from err
            elif self.proc.poll() is not None:
                raise self._fail(f"exited with status {self.proc.returncode} before it was ready")

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT. Idempotent."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._stderr_final is None:
            self._stderr_final = self.stderr_tail(limit=64_000)
            self._stderr.close()
        _live.discard(self.proc)


# --------------------------------------------------------------------------- #
# Authorization server
# --------------------------------------------------------------------------- #


class OidcServer:
    """A running tests/servers/oidc/server.mjs (oidc-provider) on 127.0.0.1.

    State (clients, grants, tokens) lives in memory only: ``restart()`` keeps
    the port, the issuer, the signing key and the known resources, and loses
    everything else.
    """

    def __init__(
        self,
        resource_urls: Iterable[str] = (),
        *,
        access_ttl: int = 300,
        refresh_ttl: int = 86400,
        port: int = 0,
        timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.resource_urls: list[str] = list(resource_urls)
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.timeout = timeout
        # The signing key survives restarts, like a real server's would. The
        # directory goes away with close() or at interpreter exit.
        self._keydir = tempfile.mkdtemp(prefix="test-oidc-keys-")
        atexit.register(shutil.rmtree, self._keydir, ignore_errors=True)
        self.keys_file = os.path.join(self._keydir, "signing-key.json")
        self.port = port
        self.issuer = ""
        self._proc: _Process | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise ServerStartError("node is not on PATH (Node.js is needed for the test authorization server)")
        if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            raise ServerStartError(f"oidc-provider is not installed: run `npm ci --prefix {OIDC_DIR}`")
        # --opt=value form, so that values starting with "-" reach server.mjs's
        # own validation instead of confusing node's argument parser.
        argv = [
            node,
            str(OIDC_SCRIPT),
            f"--port={self.port}",
            f"--access-ttl={self.access_ttl}",
            f"--refresh-ttl={self.refresh_ttl}",
            f"--keys-file={self.keys_file}",
        ]
        argv += [f"--resource={url}" for url in self.resource_urls]
        self._proc = _Process("oidc server", argv, cwd=OIDC_DIR, timeout=self.timeout)
        self.port = int(self._proc.ready["port"])
        self.issuer = str(self._proc.ready["issuer"])

    # -- test endpoints -------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = httpx.request(method, f"{self.issuer}{path}", timeout=10, **kwargs)
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict[str, Any]:
        """Counters since start / last reset_stats(); see server.mjs for the shape."""
        return self._call("GET", "/__test/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/__test/reset-stats")

    def forget_clients(self) -> int:
        """Delete all dynamically registered clients; returns how many there were."""
        return int(self._call("POST", "/__test/forget-clients")["forgotten"])

    def add_resource(self, url: str) -> None:
        """Accept `url` as a resource indicator (kept across restarts)."""
        self._call("POST", "/__test/resources", json={"resource": url})
        if url not in self.resource_urls:
            self.resource_urls.append(url)

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def stderr_tail(self, limit: int = 4000) -> str:
        return self._proc.stderr_tail(limit) if self._proc else ""

    def outage(self, status: int = 503) -> None:
        """Make the token endpoint answer `status` (0 ends the outage); grants survive."""
        self._call("POST", "/__test/outage", json={"status": status})

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang, like an overloaded or unreachable host."""
        assert self._proc is not None
        os.kill(self._proc.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def restart(self) -> None:
        """Stop and start again on the same port (all in-memory state is lost)."""
        self.stop()
        self._start()

    def close(self) -> None:
        """stop() and remove the signing key file (no restart() after this)."""
        self.stop()
        shutil.rmtree(self._keydir, ignore_errors=True)

    def __enter__(self) -> OidcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_oidc_server(
    resource_urls: Iterable[str] = (),
    *,
    access_ttl: int = 300,
    refresh_ttl: int = 86400,
    port: int = 0,
    timeout: float = STARTUP_TIMEOUT,
) -> OidcServer:
    """Start the test authorization server; returns once it is serving."""
    return OidcServer(resource_urls, access_ttl=access_ttl, refresh_ttl=refresh_ttl, port=port, timeout=timeout)


# --------------------------------------------------------------------------- #
# MCP server
# --------------------------------------------------------------------------- #


class McpServer:
    """A running tests/servers/mcp_server.py (resource server) on 127.0.0.1."""

    def __init__(self, issuer: str, *, port: int = 0, timeout: float = STARTUP_TIMEOUT) -> None:
        self.issuer = issuer
        self.port = port
        self.timeout = timeout
        self.url = ""
        self._proc: _Process | None = None
        self._start()

    def _start(self) -> None:
        argv = [sys.executable, str(MCP_SCRIPT), "--issuer", self.issuer, "--port", str(self.port)]
        self._proc = _Process("mcp server", argv, cwd=REPO_ROOT, timeout=self.timeout)
        self.port = int(self._proc.ready["port"])
        self.url = str(self._proc.ready["url"])

    @property
    def resource_metadata_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/oauth-protected-resource/mcp"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def stderr_tail(self, limit: int = 4000) -> str:
        return self._proc.stderr_tail(limit) if self._proc else ""

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    def restart(self) -> None:
        """Stop and start again on the same port (same resource URL)."""
        self.stop()
        self._start()

    def __enter__(self) -> McpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_mcp_server(issuer: str, *, port: int = 0, timeout: float = STARTUP_TIMEOUT) -> McpServer:
    """Start the test MCP server trusting `issuer`; returns once it is serving."""
    return McpServer(issuer, port=port, timeout=timeout)


# --------------------------------------------------------------------------- #
# An MCP server that is its own authorization server (the SDK's AS handlers)
# --------------------------------------------------------------------------- #

SDK_AS_SCRIPT = SERVERS_DIR / "sdk_as_server.py"


class SdkAsServer:
    """A running tests/servers/sdk_as_server.py: ``url`` is its MCP endpoint,
    ``issuer`` its authorization server (same origin)."""

    def __init__(self, *, refuse_revocation: bool = False, timeout: float = STARTUP_TIMEOUT) -> None:
        argv = [sys.executable, str(SDK_AS_SCRIPT)]
        if refuse_revocation:
            argv.append("--refuse-revocation")
        self._proc = _Process("sdk as server", argv, cwd=REPO_ROOT, timeout=timeout)
        self.url = str(self._proc.ready["url"])
        self.issuer = str(self._proc.ready["issuer"])

    _call = OidcServer._call  # the same /__test endpoints' JSON calls

    def stats(self) -> dict[str, Any]:
        """{"revoked": {hint: n}, "revocation_answers": {status: n}, "clients": {id: auth method}}."""
        return self._call("GET", "/__test/stats")

    def refuse_revocation(self, refuse: bool) -> None:
        self._call("POST", "/__test/revocation", json={"refuse": refuse})

    def stderr_tail(self, limit: int = 4000) -> str:
        return self._proc.stderr_tail(limit)

    def stop(self) -> None:
        self._proc.stop()

    def __enter__(self) -> SdkAsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- #
# Both
# --------------------------------------------------------------------------- #


def start_stack(access_ttl: int = 300, refresh_ttl: int = 86400) -> tuple[OidcServer, McpServer]:
    """Start the authorization server and an MCP server that trusts it.

    The MCP server's resource URL contains its port, which is only known once
    it is bound, while it needs the issuer to start. So: start the
    authorization server first (no resources), then the MCP server on an
    ephemeral port, then register its URL with the authorization server via
    its test endpoint. No port is reserved and released, so there is no race.
    Stop both with ``mcp.stop(); oidc.close()`` (or use ``running_stack``).
    """
    oidc = start_oidc_server(access_ttl=access_ttl, refresh_ttl=refresh_ttl)
    try:
        mcp = start_mcp_server(oidc.issuer)
    except BaseException:
        oidc.close()
        raise
    try:
        oidc.add_resource(mcp.url)
    except BaseException:
        mcp.stop()
        oidc.close()
        raise
    return oidc, mcp


@contextmanager
def running_stack(access_ttl: int = 300, refresh_ttl: int = 86400) -> Iterator[tuple[OidcServer, McpServer]]:
    """``start_stack`` as a context manager that always stops both servers."""
    oidc, mcp = start_stack(access_ttl=access_ttl, refresh_ttl=refresh_ttl)
    try:
        yield oidc, mcp
    finally:
        mcp.stop()
        oidc.close()
