"""The broker service in-process: real oidc-provider with short-lived tokens,
real Unix sockets, the real refresh scheduler."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pwd
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from broker.driver.engine import Engine
from broker.driver.transport import Limits, Transport
from broker.errors import AlreadyRunning
from broker.service.events import ClientAsked, ReauthRequired, RefreshFailed, TokenRefreshed
from broker.service.service import BrokerService
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .servers.fixtures import BROWSER_SCRIPT, running_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def short_stack():
    """Access tokens that live 5 seconds."""
    with running_stack(access_ttl=5) as (oidc, mcp):
        yield oidc, mcp


def browse(url: str) -> bool:
    subprocess.run([BROWSER_SCRIPT, url], check=True, timeout=30, env={**os.environ, "BROWSER_LOG": os.devnull})
    return True


def make_service(tmp_path, *, clock=None, limits=Limits(), socket_path=None, **kw) -> BrokerService:
    paths = Paths.default()
    store = Store(paths, lambda: FileKeyStore(tmp_path / "vault.key"))
    engine_kw = {"clock": clock} if clock else {}
    engine = Engine(store, Transport(limits=limits), opener=browse, flow_timeout=30, **engine_kw)
    service_kw = {"clock": clock} if clock else {}
    socket_path = socket_path or os.path.join(os.environ["XDG_RUNTIME_DIR"], "mcp-token-broker", "broker.sock")
    return BrokerService(paths=paths, store=store, engine=engine, socket_path=socket_path, **service_kw, **kw)


async def connect(service: BrokerService, name: str, url: str) -> None:
    await service.add({"name": name, "server_url": url})
    flow = service.start_flow(name, "browser")
    await flow.task
    assert flow.error is None, flow.error
    assert service.view(name)["status"] == "connected"


def api(service: BrokerService) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(service.api.socket_path))
    return httpx.AsyncClient(
        transport=transport, base_url="http://broker", timeout=60, limits=httpx.Limits(max_connections=500)
    )


def grants(oidc) -> int:
    return oidc.stats()["grants"].get("refresh_token", 0)


def test_background_refresh_keeps_a_connection_fresh_and_rotates(short_stack, user_dirs, tmp_path):
    oidc, mcp = short_stack

    async def main():
        service = make_service(tmp_path, max_sleep=0.5)
        events = []
        service.events.subscribe(events.append)
        await service.start()
        try:
            await connect(service, "fresh", mcp.url)
            before = grants(oidc)
            refresh_tokens = set()
            async with api(service) as client:
                for _ in range(12):  # about three lifetimes
                    await asyncio.sleep(1)
                    body = (await client.get("/v1/connections/fresh/token")).json()
                    assert body["expires_at"] - service.clock() > 0
                    refresh_tokens.add(service._states["fresh"].tokens.refresh_token.reveal())
            refreshed = [e for e in events if isinstance(e, TokenRefreshed)]
            assert len(refreshed) >= 3
            assert grants(oidc) - before == len(refreshed)  # one grant per refresh
            assert len(refresh_tokens) >= 3  # rotated every time
            # Quiesce, then: what is served is what the vault holds.
            service.scheduler.set("fresh", None)
            if "fresh" in service._inflight:
                await asyncio.wait([service._inflight["fresh"]])
            token = service._states["fresh"].tokens.access_token.reveal()
            assert service.store.load_states()["fresh"].tokens.access_token.reveal() == token
            # The latest token works at the MCP server.
            from .test_cli_e2e import list_tools

            async with api(service) as client:
                token = (await client.get("/v1/connections/fresh/token")).json()["access_token"]
            assert "whoami" in await list_tools(mcp.url, token)
        finally:
            await service.stop()

    asyncio.run(main())


def test_100_concurrent_fetches_at_expiry_cause_one_grant(short_stack, user_dirs, tmp_path):
    oidc, mcp = short_stack

    async def main():
        service = make_service(tmp_path)
        await service.start()
        try:
            await connect(service, "burst", mcp.url)
            service.scheduler.set("burst", None)  # only the requests may refresh
            old = service._states["burst"].tokens
            await asyncio.sleep(max(0.0, old.expires_at - service.clock() - 2))  # inside the 2.5 s margin
            before = grants(oidc)
            async with api(service) as client:
                answers = await asyncio.gather(*(client.get("/v1/connections/burst/token") for _ in range(100)))
            assert all(a.status_code == 200 for a in answers)
            tokens = {a.json()["access_token"] for a in answers}
            assert tokens == {service._states["burst"].tokens.access_token.reveal()}
            assert old.access_token.reveal() not in tokens
            assert grants(oidc) - before == 1
        finally:
            await service.stop()

    asyncio.run(main())


def test_invalid_grant_means_reauth_required(short_stack, user_dirs, tmp_path):
    oidc, mcp = short_stack

    async def main():
        service = make_service(tmp_path)
        events = []
        service.events.subscribe(events.append)
        await service.start()
        try:
            await connect(service, "revoked", mcp.url)
            state = service._states["revoked"]
            # Someone revokes the grant at the server (e.g. in its web UI).
            r = await asyncio.to_thread(
                httpx.post,
                f"{oidc.issuer}/token/revocation",
                data={"token": state.tokens.refresh_token.reveal(), "client_id": state.registration.client_id},
            )
            assert r.status_code == 200
            # The MCP server now answers 401; the client reports it, the broker refreshes.
            digest = hashlib.sha256(state.tokens.access_token.reveal().encode()).hexdigest()
            async with api(service) as client:
                answer = await client.post("/v1/connections/revoked/token/rejected", json={"token_sha256": digest})
            assert answer.status_code == 409 and answer.json()["error"] == "authorization_required"
            assert service.view("revoked")["status"] == "reauth_required"
            assert any(isinstance(e, ReauthRequired) and e.name == "revoked" for e in events)
            assert service.scheduler.deadline("revoked") is None  # no more retries
            assert service.store.load_states()["revoked"].reauth_required
        finally:
            await service.stop()

    asyncio.run(main())


class Clock:
    def __init__(self):
        import time

        self.offset = 0.0
        self._time = time.time

    def __call__(self):
        return self._time() + self.offset


@pytest.mark.parametrize("outage", ["5xx", "unresponsive"])
def test_server_down_backs_off_and_keeps_serving_the_valid_token(user_dirs, tmp_path, outage):
    with running_stack(access_ttl=120) as (oidc, mcp):
        clock = Clock()

        async def main():
            service = make_service(tmp_path, clock=clock, limits=Limits(timeout=0.5, deadline=1), max_sleep=0.1)
            events = []
            service.events.subscribe(events.append)
            await service.start()
            try:
                await connect(service, "down", mcp.url)
                tokens = service._states["down"].tokens
                service.scheduler.set("down", None)
                oidc.outage(503) if outage == "5xx" else oidc.pause()
                # 20 s left: inside the 30 s margin, above the 10 s floor.
                clock.offset = tokens.expires_at - clock() - 20
                async with api(service) as client:
                    first = await client.get("/v1/connections/down/token")
                    assert first.status_code == 200
                    assert first.json()["access_token"] == tokens.access_token.reveal()
                    failures = [e for e in events if isinstance(e, RefreshFailed)]
                    assert len(failures) == 1 and failures[0].retry_at > clock()
                    # While backing off, requests are served without hammering the server.
                    for _ in range(5):
                        assert (await client.get("/v1/connections/down/token")).status_code == 200
                    assert len([e for e in events if isinstance(e, RefreshFailed)]) == 1
                    # The scheduler retries after the backoff, and backs off further.
                    clock.offset += failures[0].retry_at - clock() + 0.01
                    for _ in range(100):
                        await asyncio.sleep(0.05)
                        if len([e for e in events if isinstance(e, RefreshFailed)]) == 2:
                            break
                    second = [e for e in events if isinstance(e, RefreshFailed)][1]
                    assert second.retry_at - clock() > 7  # the second backoff is about twice the first
                    # 5 s left: below the floor. Never an expired or nearly expired token.
                    clock.offset += tokens.expires_at - clock() - 5
                    late = await client.get("/v1/connections/down/token")
                    assert late.status_code == 503 and late.json()["error"] == "refresh_failed"
                    if outage == "unresponsive":
                        # Requests that timed out may still be processed once the
                        # server wakes; with rotating refresh tokens that reuse
                        # revokes the grant. The broker must then say so plainly.
                        oidc.resume()
                        back = await client.get("/v1/connections/down/token")
                        assert back.status_code in (200, 409)
                        return
                    # The server comes back: the next request refreshes and succeeds.
                    oidc.outage(0)
                    back = await client.get("/v1/connections/down/token")
                    assert back.status_code == 200
                    assert back.json()["access_token"] != tokens.access_token.reveal()
                    assert service._failures.get("down") is None
                    assert oidc.stats()["outage_rejections"] == 3
            finally:
                oidc.resume()
                oidc.outage(0)
                await service.stop()

        asyncio.run(main())


def _as_nobody(socket_path: str, result: list) -> None:
    """fork, drop to nobody, connect: report what happened through a pipe."""
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            try:
                s.connect(socket_path)
            except OSError as exc:
                os.write(w, f"connect-failed:{exc.errno}".encode())
                os._exit(0)
            try:
                s.sendall(b"GET /v1/connections HTTP/1.1\r\nHost: x\r\n\r\n")
                data = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""  # closed unread: the kernel resets
            os.write(w, b"closed" if not data else b"answered:" + data[:40])
        except BaseException as exc:  # noqa: BLE001 - the forked child reports anything to the parent
            os.write(w, f"error:{exc!r}".encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        result.append(f.read().decode())
    os.waitpid(pid, 0)


def test_another_uid_is_refused(short_stack, user_dirs, tmp_path):
    import shutil
    import tempfile

    # pytest's tmp dirs are root-only; nobody must at least reach the socket's directory.
    outer = tempfile.mkdtemp(prefix="broker-uid-test-")
    os.chmod(outer, 0o711)

    async def main():
        service = make_service(tmp_path, socket_path=os.path.join(outer, "run", "broker.sock"))
        await service.start()
        try:
            path = str(service.api.socket_path)
            assert oct(os.stat(path).st_mode & 0o777) == "0o600"
            assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
            result: list[str] = []
            await asyncio.to_thread(_as_nobody, path, result)
            assert result[0].startswith("connect-failed")  # the file system says no first
            # Even when the permissions are opened up, the peer check refuses.
            os.chmod(os.path.dirname(path), 0o711)
            os.chmod(path, 0o666)
            result.clear()
            await asyncio.to_thread(_as_nobody, path, result)
            assert result == ["closed"]
            assert service.api.rejected_peers == 1
            async with api(service) as client:  # and we are still served
                assert (await client.get("/v1/health")).json()["status"] == "ok"
        finally:
            await service.stop()
            shutil.rmtree(outer, ignore_errors=True)

    asyncio.run(main())


async def raw(path: str, data: bytes, *, read: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 30) if read else b""
    writer.close()
    return out


def test_hostile_requests_get_4xx_or_closed_and_others_are_served(short_stack, user_dirs, tmp_path):
    _, mcp = short_stack

    async def main():
        service = make_service(tmp_path, api_options={"request_timeout": 1.0, "idle_timeout": 3.0})
        await service.start()
        path = str(service.api.socket_path)
        idle = []
        try:
            await connect(service, "busy", mcp.url)
            # 300 idle connections and 50 half-sent requests...
            for _ in range(300):
                idle.append(await asyncio.open_unix_connection(path))
            for _ in range(50):
                reader, writer = await asyncio.open_unix_connection(path)
                writer.write(b"GET /v1/conn")
                idle.append((reader, writer))
            # ...do not stop a normal client.
            async with api(service) as client:
                ok = await client.get("/v1/connections/busy/token")
                assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"
                assert (await client.get("/v1/nope")).status_code == 404
                assert (await client.post("/v1/health")).status_code == 405
                assert (await client.get("/v1/connections/busy/token", params={"min_ttl": "soon"})).status_code == 400
                assert (await client.get("/v1/connections/ghost/token")).json()["error"] == "unknown_connection"
                assert (await client.post("/v1/connections", content=b"[1]")).status_code == 400
                assert (await client.post("/v1/connections", content=b"{not json")).status_code == 400
            big_header = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
            assert (await raw(path, big_header)).startswith(b"HTTP/1.1 431")
            big_body = b"POST /v1/connections HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"{" * 100000
            assert (await raw(path, big_body)).startswith(b"HTTP/1.1 413")
            assert (await raw(path, b"\x00\x01garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
            # A request that never completes is answered 408 and closed.
            assert (await raw(path, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")).startswith(b"HTTP/1.1 408")
            # Keep-alive: several requests on one connection.
            reader, writer = await asyncio.open_unix_connection(path)
            for _ in range(3):
                writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                assert json.loads(await reader.readexactly(length))["status"] == "ok"
            writer.close()
            # The idle ones are eventually dropped by the server.
            reader, writer = idle[0]
            assert await asyncio.wait_for(reader.read(), 30) == b""
        finally:
            for _, writer in idle:
                writer.close()
            await service.stop()

    asyncio.run(main())


def test_policies_grants_and_audit(short_stack, user_dirs, tmp_path):
    _, mcp = short_stack

    async def main():
        service = make_service(tmp_path, policy="ask", approval_timeout=5)
        asked = []

        def answer(event):
            if isinstance(event, ClientAsked):
                asked.append(event.request)
                decision = "allow_session" if event.request.connection == "a" else "deny_always"
                asyncio.get_running_loop().call_soon(event.request.answer, decision)

        service.events.subscribe(answer)
        await service.start()
        try:
            await connect(service, "a", mcp.url)
            await connect(service, "b", mcp.url)
            async with api(service) as client:
                assert (await client.get("/v1/connections/a/token")).status_code == 200
                assert (await client.get("/v1/connections/a/token")).status_code == 200  # granted: no new question
                denied = await client.get("/v1/connections/b/token")
                assert denied.status_code == 403 and denied.json()["error"] == "access_denied"
                assert len(asked) == 2
                assert asked[0].client.pid == os.getpid() and asked[0].client.key
                listed = (await client.get("/v1/grants")).json()["grants"]
                assert {(g["connection"], g["allow"], g["scope"]) for g in listed} == {
                    ("a", True, "session"),
                    ("b", False, "always"),
                }
                # Revoke the "always deny": the next request is asked again.
                gid = [g["id"] for g in listed if g["connection"] == "b"][0]
                assert (await client.delete(f"/v1/grants/{gid}")).status_code == 200
                service.events._subscribers.clear()  # nobody answers now
                service.approval_timeout = 0.3
                timed_out = await client.get("/v1/connections/b/token")
                assert timed_out.status_code == 504 and timed_out.json()["error"] == "approval_timeout"
                service.policy = "deny"
                await connect(service, "c", mcp.url)
                assert (await client.get("/v1/connections/c/token")).status_code == 403
                service.policy = "allow"
                assert (await client.get("/v1/connections/c/token")).status_code == 200
        finally:
            await service.stop()
        from broker.service.audit import read_audit

        entries = read_audit(Paths.default().state_dir / "audit.log")
        outcomes = [(e["connection"], e["outcome"]) for e in entries]
        assert outcomes == [
            ("a", "answered"), ("a", "served"), ("a", "served"), ("b", "answered"), ("b", "denied"), ("b", "timeout"),
            ("c", "denied"), ("c", "served"),
        ]  # fmt: skip
        answers = [(e["decision"], e["answered_by"]) for e in entries if e["outcome"] == "answered"]
        assert answers == [("allow_session", "desktop app"), ("deny_always", "desktop app")]  # in process
        assert all(e["pid"] == os.getpid() and e["exe"] for e in entries)
        raw_log = (Paths.default().state_dir / "audit.log").read_text()
        for state in service.store.load_states().values():
            assert state.tokens.access_token.reveal() not in raw_log

    asyncio.run(main())


def test_second_instance_and_stale_socket(user_dirs, tmp_path):
    async def main():
        first = make_service(tmp_path)
        await first.start()
        second = make_service(tmp_path)
        with pytest.raises(AlreadyRunning):
            await second.start()
        await first.stop()
        assert not first.api.socket_path.exists()
        # A crash leaves a socket file nobody listens on.
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(first.api.socket_path))
        stale.close()
        assert first.api.socket_path.exists()
        third = make_service(tmp_path)
        await third.start()
        async with api(third) as client:
            assert (await client.get("/v1/health")).status_code == 200
        await third.stop()

    asyncio.run(main())


def test_sdk_client_with_broker_auth(short_stack, user_dirs, tmp_path):
    """A Python MCP client using the official SDK gets its token from the broker."""
    _, mcp = short_stack

    async def main():
        service = make_service(tmp_path)
        await service.start()
        try:
            await connect(service, "sdk", mcp.url)
            import httpx2
            from mcp.client.client import Client
            from mcp.client.streamable_http import streamable_http_client

            from broker.client.api_client import BrokerClient
            from broker.client.httpx_auth import httpx2_auth

            auth = httpx2_auth("sdk", client=BrokerClient(str(service.api.socket_path)))
            async with httpx2.AsyncClient(auth=auth) as http:
                async with Client(streamable_http_client(mcp.url, http_client=http)) as client:
                    tools = await client.list_tools()
            assert "whoami" in [t.name for t in tools.tools]
        finally:
            await service.stop()

    asyncio.run(main())


def test_httpx_auth_refetches_once_on_401(user_dirs, tmp_path):
    """BrokerAuth against a server that rejects the first token it sees."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from broker.client.httpx_auth import BrokerAuth

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(401 if len(seen) == 1 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    class FakeBroker:
        def __init__(self):
            self.calls = []
            self.reported = []

        def token(self, name, min_ttl=None):
            self.calls.append(min_ttl)
            return {"access_token": f"tok{len(self.calls)}"}

        def report_rejected(self, name, token):
            self.reported.append(token)
            return {"refreshed": True}

    broker = FakeBroker()
    try:
        with httpx.Client(auth=BrokerAuth("x", client=broker)) as client:
            assert client.get(f"http://127.0.0.1:{httpd.server_address[1]}/").status_code == 200
    finally:
        httpd.shutdown()
    assert seen == ["Bearer tok1", "Bearer tok2"]
    assert broker.reported == ["tok1"]  # the rejected token was reported before fetching again
    assert broker.calls[1] > broker.calls[0]


def test_token_hot_path_imports_nothing_heavy(user_dirs):
    code = (
        "import sys\n"
        "from broker.client.launcher import main\n"
        "code = main(['token', 'nothing-runs'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'httpx', 'keyring', 'cryptography', 'asyncio', 'platformdirs', 'PySide6', 'h11', 'argparse'})\n"
        "print(code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert out.stdout.strip() == "6 []", out.stdout + out.stderr
    assert "no broker service is running" in out.stderr
