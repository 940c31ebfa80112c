"""Never lose a rotated refresh token, never refresh for nothing, and refresh
tokens the server rejected even when they carry no expiry.

The real oidc-provider rotates refresh tokens and treats the reuse of a
consumed one as replay: it revokes the whole grant. Its counters tell how
many grants the broker made.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from dataclasses import replace

import anyio
import pytest

from broker.client.api_client import BrokerClient
from broker.driver.engine import Engine
from broker.driver.transport import Transport
from broker.errors import VaultLocked
from broker.secret import Secret
from broker.service.service import BrokerService
from broker.storage.keystore import FileKeyStore, KeyringKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .conftest import start_service
from .servers.fixtures import running_stack
from .test_cli_e2e import list_tools
from .test_service import Clock, api, browse, connect

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def short_stack():
    """Access tokens that live 5 seconds."""
    with running_stack(access_ttl=5) as (oidc, mcp):
        yield oidc, mcp


def refresh_grants(oidc) -> int:
    return oidc.stats()["grants"].get("refresh_token", 0)


def refused_grants(oidc) -> dict:
    return oidc.stats()["grant_errors_by_grant_type"].get("refresh_token", {})


class FlakyStore(Store):
    """A real store whose next `fail_writes` writes fail, as on a full disk
    or a lock another process holds too long. Reads are unaffected."""

    fail_writes = 0

    @contextlib.contextmanager
    def transaction(self, *, secrets: bool = True):
        with super().transaction(secrets=secrets) as txn:
            yield txn
            if self.fail_writes:
                self.fail_writes -= 1
                raise VaultLocked("injected: the store lock was held too long")


def flaky_service(tmp_path, clock, **kw) -> BrokerService:
    paths = Paths.default()
    store = FlakyStore(paths, lambda: FileKeyStore(tmp_path / "vault.key"))
    engine = Engine(store, Transport(), opener=browse, flow_timeout=30, clock=clock)
    socket_path = os.path.join(os.environ["XDG_RUNTIME_DIR"], "mcp-token-broker", "broker.sock")
    return BrokerService(paths=paths, store=store, engine=engine, socket_path=socket_path, clock=clock, **kw)


def test_a_failed_vault_write_keeps_the_rotated_refresh_token(stack, user_dirs, tmp_path):
    oidc, mcp = stack
    clock = Clock()

    async def main():
        service = flaky_service(tmp_path, clock, max_sleep=0.1)
        store = service.store
        await service.start()
        try:
            await connect(service, "keep", mcp.url)
            first = service._states["keep"].tokens
            grants_before, refused_before = refresh_grants(oidc), refused_grants(oidc)
            async with api(service) as client:
                # 20 s left: inside the refresh margin. The refresh's vault write fails once.
                store.fail_writes = 1
                clock.offset = first.expires_at - clock() - 20
                one = await client.get("/v1/connections/keep/token")
                held = service._states["keep"].tokens
                # The next refresh, while the vault may still hold the old token set.
                clock.offset += held.expires_at - clock() - 20
                two = await client.get("/v1/connections/keep/token")
            assert refused_grants(oidc) == refused_before, "an old refresh token was sent again (reuse)"
            assert one.status_code == 200, one.text
            assert one.json()["access_token"] != first.access_token.reveal()  # the new token is served
            assert held.refresh_token != first.refresh_token
            assert two.status_code == 200, two.text
            assert refresh_grants(oidc) == grants_before + 2
            newest = service._states["keep"].tokens
            assert two.json()["access_token"] == newest.access_token.reveal()
            assert store.load_states()["keep"].tokens.refresh_token == newest.refresh_token
            # The grant still works at the server, and so does the token.
            assert "whoami" in await list_tools(mcp.url, newest.access_token.reveal())
            third = await service.refresh("keep")
            assert third.refresh_token != newest.refresh_token
            assert service.view("keep")["status"] == "connected"
        finally:
            await service.stop()

    asyncio.run(main())


def test_an_unsaved_token_set_is_written_by_the_scheduler_and_at_stop(stack, user_dirs, tmp_path):
    _, mcp = stack
    clock = Clock()

    async def main():
        service = flaky_service(tmp_path, clock, max_sleep=0.1)
        store = service.store
        await service.start()
        stopped = False
        try:
            await connect(service, "later", mcp.url)
            first = service._states["later"].tokens
            store.fail_writes = 2  # the refresh's write and the first retry fail
            clock.offset = first.expires_at - clock() - 20
            async with api(service) as client:
                assert (await client.get("/v1/connections/later/token")).status_code == 200
            held = service._states["later"].tokens
            assert held.refresh_token != first.refresh_token
            assert store.load_states()["later"].tokens.refresh_token == first.refresh_token
            # The scheduler retries the write with backoff; move the clock past each retry.
            for _ in range(400):
                if store.load_states()["later"].tokens.refresh_token == held.refresh_token:
                    break
                deadline = service.scheduler.deadline("later")
                if deadline is not None and deadline > clock():
                    clock.offset += min(deadline - clock() + 0.01, 30)
                await asyncio.sleep(0.05)
            assert store.load_states()["later"].tokens.refresh_token == held.refresh_token
            assert store.fail_writes == 0
            # Once more, and this time the service stops before any retry: stop writes it.
            store.fail_writes = 1
            clock.offset += held.expires_at - clock() - 20
            service.scheduler.set("later", None)
            newer = await service.refresh("later")
            assert store.load_states()["later"].tokens.refresh_token == held.refresh_token
            await service.stop()
            stopped = True
            assert store.load_states()["later"].tokens.refresh_token == newer.refresh_token
        finally:
            if not stopped:
                await service.stop()

    asyncio.run(main())


def connected(cli, name: str, url: str) -> None:
    r = cli("add", name, url)
    assert r.returncode == 0, r.stderr
    r = cli("connect", name)
    assert r.returncode == 0, r.stderr + cli.browser_log.read_text()


def test_min_ttl_above_the_lifetime_does_not_refresh_per_request(cli, short_stack, user_dirs):
    oidc, mcp = short_stack
    connected(cli, "short", mcp.url)
    running = start_service(cli)
    try:
        client = BrokerClient(str(running.socket_path))
        before = refresh_grants(oidc)
        answers = [client.token("short", min_ttl=30) for _ in range(20)]
        made = refresh_grants(oidc) - before
    finally:
        assert running.stop() == 0, running.log
    assert made <= 1, f"{made} refresh grants for 20 requests"
    assert all(a["expires_at"] is not None for a in answers)  # served with the real expiry


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def without_expiry(name: str, access_token: str) -> None:
    """A token set as a server without `expires_in` leaves it, holding an
    access token the MCP server rejects, and the real refresh token."""
    store = Store(Paths.default(), KeyringKeyStore)
    with store.transaction() as txn:
        state = txn.states[name]
        txn.states[name] = replace(
            state, tokens=replace(state.tokens, access_token=Secret(access_token), expires_at=None)
        )


def test_a_rejected_token_without_expiry_is_refreshed_once(cli, stack, user_dirs):
    oidc, mcp = stack
    connected(cli, "bare", mcp.url)
    connected(cli, "burst", mcp.url)
    without_expiry("bare", "rejected-by-the-server")
    without_expiry("burst", "also-rejected")
    running = start_service(cli)
    try:
        client = BrokerClient(str(running.socket_path))
        before = refresh_grants(oidc)

        # An SDK client: the MCP server answers 401, BrokerAuth reports it, then fetches again.
        async def sdk():
            import httpx2
            from mcp.client.client import Client
            from mcp.client.streamable_http import streamable_http_client

            from broker.client.httpx_auth import httpx2_auth

            async with (
                httpx2.AsyncClient(auth=httpx2_auth("bare", client=client)) as http,
                Client(streamable_http_client(mcp.url, http_client=http)) as session,
            ):
                return [t.name for t in (await session.list_tools()).tools]

        assert "whoami" in anyio.run(sdk)
        assert refresh_grants(oidc) == before + 1
        current = client.token("bare")["access_token"]
        assert current != "rejected-by-the-server"

        # The old token again (a second client that saw it fail): nothing happens.
        assert client.report_rejected("bare", "rejected-by-the-server") == {"refreshed": False, "reason": "stale"}
        # The current token at once: rate limited.
        limited = client.report_rejected("bare", current)
        assert limited["refreshed"] is False and limited["reason"] == "rate_limited"
        assert refresh_grants(oidc) == before + 1
        assert client.token("bare")["access_token"] == current

        # Many clients report the same rejected token at once: one refresh.
        answers: list[dict] = []

        def report():
            answers.append(BrokerClient(str(running.socket_path)).report_rejected("burst", "also-rejected"))

        threads = [threading.Thread(target=report) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert refresh_grants(oidc) == before + 2
        assert sum(a["refreshed"] for a in answers) >= 1
        assert all(a["refreshed"] or a["reason"] == "stale" for a in answers), answers
        # Malformed reports are a clear 400.
        bad = client.request
        with pytest.raises(Exception, match="token_sha256"):
            bad("POST", "/v1/connections/bare/token/rejected", {"token_sha256": "xyz"})
    finally:
        assert running.stop() == 0, running.log
    assert sha256(current) not in running.log and current not in running.log


def test_what_counts_as_fresh():
    from broker.service.schedule import is_fresh

    # A 5 s token is always as fresh as its server makes them: min_ttl never refreshes it.
    assert is_fresh(1000, 1005, 1004.9)
    # A 300 s token: for 30 s (a tenth of its life), then a long min_ttl refreshes it.
    assert is_fresh(1000, 1300, 1030) and not is_fresh(1000, 1300, 1031)
    # Short tokens get at least 5 s.
    assert is_fresh(1000, 1020, 1005) and not is_fresh(1000, 1020, 1006)
