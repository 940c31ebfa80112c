"""The broker's event loop (`broker.service.eventloop`): uvloop unless asked
for asyncio's, in `serve` as in the app, and a hosted proxy session on each."""

from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import logging
import sys

import pytest

from broker.client.api_client import BrokerClient
from broker.service import eventloop

from .conftest import start_service
from .helpers.stdio_proxy import StdioProxy
from .test_proxy_hosted import _connected, _echo, _initialized, _sessions

pytestmark = pytest.mark.timeout(120)


def test_uvloop_unless_asyncio_is_asked_for(caplog):
    uvloop = pytest.importorskip("uvloop")
    with caplog.at_level(logging.WARNING, logger=eventloop.__name__):
        assert eventloop.loop_factory({}) is uvloop.new_event_loop
        assert eventloop.loop_factory({eventloop.ENV: "uvloop"}) is uvloop.new_event_loop
        assert eventloop.loop_factory({eventloop.ENV: " AsyncIO "}) is None
    assert caplog.records == []


def test_an_unknown_value_is_named_in_a_warning_and_uvloop_runs(caplog):
    uvloop = pytest.importorskip("uvloop")
    with caplog.at_level(logging.WARNING, logger=eventloop.__name__):
        assert eventloop.loop_factory({eventloop.ENV: "asycnio"}) is uvloop.new_event_loop
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING and eventloop.ENV in message and "'asycnio'" in message, message
    assert '"uvloop"' in message and '"asyncio"' in message, message
    assert message.endswith("running on uvloop"), message


def test_an_unknown_value_without_uvloop_names_the_standard_loop_that_runs(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop: ImportError, as where it is not installed
    with caplog.at_level(logging.WARNING, logger=eventloop.__name__):
        assert eventloop.loop_factory({eventloop.ENV: "asycnio"}) is None
    [record] = caplog.records
    message = record.getMessage()
    assert "'asycnio'" in message and message.endswith("running on asyncio's standard loop"), message
    assert "taken as" not in message, message


class _BrokenUvloop(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A uvloop whose import fails as a broken binary's may (not with ImportError)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == "uvloop" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise RuntimeError("uvloop: incompatible libuv")


def test_a_uvloop_that_fails_to_load_leaves_the_standard_loop(monkeypatch, caplog):
    monkeypatch.delitem(sys.modules, "uvloop", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenUvloop(), *sys.meta_path])
    with caplog.at_level(logging.WARNING, logger=eventloop.__name__):
        assert eventloop.loop_factory({}) is None
        assert eventloop.run(_loop_name(), environ={}) == "asyncio"
    assert len(caplog.records) == 2, caplog.records  # once per attempt to load it
    message = caplog.records[0].getMessage()
    assert "RuntimeError" in message and "asyncio" in message, message


async def _loop_name() -> str:
    return eventloop.loop_name(asyncio.get_running_loop())


@pytest.mark.parametrize(("environ", "name"), [({}, "uvloop"), ({eventloop.ENV: "asyncio"}, "asyncio")])
def test_run_names_the_loop_it_ran_on(environ, name):
    if name == "uvloop":
        pytest.importorskip("uvloop")

    async def which() -> str:
        return eventloop.loop_name(asyncio.get_running_loop())

    assert eventloop.run(which(), environ=environ) == name


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serve_hosts_a_proxy_session_on_either_loop(cli, stack, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
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
