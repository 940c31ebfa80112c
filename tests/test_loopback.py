"""The loopback redirect listener on real sockets."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from broker.driver.loopback import LoopbackListener
from broker.errors import AccessDenied, FlowTimeout, IssuerMismatchInCallback, RedirectPortUnavailable
from broker.oauth.authorization import start_authorization, validate_callback

from .sansio import ISSUER, as_metadata

pytestmark = pytest.mark.timeout(30)


async def flow():
    listener = LoopbackListener()
    await listener.start()
    pending = start_authorization(
        as_metadata(), client_id="c", redirect_uri=listener.redirect_uri, scope=(), resource=None
    )
    task = asyncio.create_task(listener.wait(lambda p: validate_callback(pending, p), timeout=10))
    await asyncio.sleep(0)
    return listener, pending, task


async def get(url, **kw):
    async with httpx.AsyncClient() as client:
        return await client.get(url, **kw)


def test_binds_loopback_only():
    async def main():
        listener, _, task = await flow()
        host, port = listener._server.sockets[0].getsockname()[:2]
        assert host == "127.0.0.1" and listener.redirect_uri == f"http://127.0.0.1:{port}/callback"
        task.cancel()
        await listener.aclose()

    asyncio.run(main())


def test_forged_callbacks_are_ignored_then_the_real_one_wins_and_a_second_is_refused():
    async def main():
        listener, pending, task = await flow()
        base = listener.redirect_uri
        forged = await get(base, params={"code": "evil", "state": "guess", "iss": ISSUER})
        assert forged.status_code == 400 and "does not belong" in forged.text
        assert (await get(f"http://127.0.0.1:{listener.port}/other")).status_code == 404
        async with httpx.AsyncClient() as c:
            assert (await c.post(base, data={"code": "x"})).status_code == 405
        assert not task.done() and listener.rejected == 1
        ok = await get(base, params={"code": "good", "state": pending.state.reveal(), "iss": ISSUER})
        assert ok.status_code == 200 and "close this tab" in ok.text
        assert ok.headers["cache-control"] == "no-store"
        assert (await task).reveal() == "good"
        port = listener.port
        with pytest.raises(httpx.ConnectError):
            await get(f"http://127.0.0.1:{port}/callback", params={"code": "again", "state": pending.state.reveal()})

    asyncio.run(main())


def test_error_callback_with_right_iss_ends_flow_typed():
    async def main():
        listener, pending, task = await flow()
        r = await get(
            listener.redirect_uri, params={"error": "access_denied", "state": pending.state.reveal(), "iss": ISSUER}
        )
        assert r.status_code == 400 and "access_denied" in r.text
        with pytest.raises(AccessDenied):
            await task

    asyncio.run(main())


def test_iss_mismatch_ends_flow_without_showing_error_fields():
    async def main():
        listener, pending, task = await flow()
        params = {
            "error": "access_denied",
            "error_description": "VISIT-EVIL-SITE",
            "state": pending.state.reveal(),
            "iss": "https://evil.example",
        }
        r = await get(listener.redirect_uri, params=params)
        assert r.status_code == 400 and "VISIT-EVIL-SITE" not in r.text and "access_denied" not in r.text
        with pytest.raises(IssuerMismatchInCallback) as info:
            await task
        assert "VISIT-EVIL-SITE" not in str(info.value)

    asyncio.run(main())


def test_oversized_and_garbage_requests_do_not_disturb_the_flow():
    async def main():
        listener, pending, task = await flow()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"GET /callback?" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
        try:
            await writer.drain()
            await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            pass
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"\x00\x01garbage\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        ok = await get(listener.redirect_uri, params={"code": "c", "state": pending.state.reveal(), "iss": ISSUER})
        assert ok.status_code == 200
        assert (await task).reveal() == "c"

    asyncio.run(main())


def test_too_many_parameters_get_a_400_page_and_the_flow_goes_on():
    async def main():
        listener, pending, task = await flow()
        flood = await get(listener.redirect_uri, params={f"p{i}": "x" for i in range(40)})
        assert flood.status_code == 400 and "too many parameters" in flood.text
        assert not task.done() and listener.rejected == 1
        ok = await get(listener.redirect_uri, params={"code": "c", "state": pending.state.reveal(), "iss": ISSUER})
        assert ok.status_code == 200
        assert (await task).reveal() == "c"

    asyncio.run(main())


def test_timeout_closes_the_port():
    async def main():
        listener = LoopbackListener()
        await listener.start()
        port = listener.port
        with pytest.raises(FlowTimeout):
            await listener.wait(lambda p: p, timeout=0.3)
        with pytest.raises(httpx.ConnectError):
            await get(f"http://127.0.0.1:{port}/callback")

    asyncio.run(main())


def test_cancel_closes_the_port():
    async def main():
        listener = LoopbackListener()
        await listener.start()
        port = listener.port
        task = asyncio.create_task(listener.wait(lambda p: p, timeout=60))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(httpx.ConnectError):
            await get(f"http://127.0.0.1:{port}/callback")

    asyncio.run(main())


def test_taken_port_is_a_typed_error():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]

    async def main():
        with pytest.raises(RedirectPortUnavailable):
            await LoopbackListener(port=port).start()

    try:
        asyncio.run(main())
    finally:
        blocker.close()
