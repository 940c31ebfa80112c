"""The broker's event loop (`broker.service.eventloop`): uvloop unless asked
for asyncio's, in `serve` as in the app, and a hosted proxy session on each."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from broker.client.api_client import BrokerClient
from broker.service import eventloop

from .conftest import start_service
from .helpers.stdio_proxy import StdioProxy
from .test_proxy_hosted import _connected, _echo, _initialized, _sessions

pytestmark = pytest.mark.timeout(120)


def test_uvloop_unless_asyncio_is_asked_for():
    assert eventloop.loop_factory({}) is uvloop.new_event_loop
    assert eventloop.loop_factory({eventloop.ENV: "uvloop"}) is uvloop.new_event_loop
    assert eventloop.loop_factory({eventloop.ENV: " AsyncIO "}) is None


@pytest.mark.parametrize(("environ", "name"), [({}, "uvloop"), ({eventloop.ENV: "asyncio"}, "asyncio")])
def test_run_names_the_loop_it_ran_on(environ, name):
    async def which() -> str:
        return eventloop.loop_name(asyncio.get_running_loop())

    assert eventloop.run(which(), environ=environ) == name


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serve_hosts_a_proxy_session_on_either_loop(cli, stack, loop):
    _, mcp = stack
    service = start_service(cli, env={eventloop.ENV: loop})
    try:
        assert BrokerClient(str(service.socket_path)).health()["event_loop"] == loop
        _connected(cli, mcp, "looped")
        proxy = StdioProxy(cli.exe, "looped", cli.env)
        try:
            _initialized(proxy)
            assert _sessions(service) == 1  # hosted by the broker, not run by the proxy itself
            assert "through the broker" in _echo(proxy, 2, "through the broker")
        finally:
            code, stderr = proxy.finish()
        assert code == 0 and stderr == "", stderr
    finally:
        service.stop()
