"""The engine in-process against the real servers: paths the CLI cannot steer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import urllib.request

import pytest

from broker.driver.engine import Engine
from broker.driver.transport import Transport
from broker.storage.keystore import FileKeyStore
from broker.storage.paths import Paths
from broker.storage.store import Store

from .servers.fixtures import BROWSER_SCRIPT

pytestmark = pytest.mark.timeout(120)


def make_engine(tmp_path, opener):
    store = Store(Paths.default(), lambda: FileKeyStore(tmp_path / "key"))
    return Engine(store, Transport(), opener=opener, flow_timeout=30)


def browse(url, log, **env):
    subprocess.run([BROWSER_SCRIPT, url], env={**os.environ, "BROWSER_LOG": str(log), **env}, check=True, timeout=30)


def test_server_forgets_client_between_browser_and_token_endpoint(stack, user_dirs, tmp_path):
    oidc, mcp = stack
    log = tmp_path / "browser.log"
    calls = []

    def opener(url):
        calls.append(url)
        if len(calls) == 1:
            # The first login completes, but the server loses every client
            # before the code reaches the token endpoint.
            browse(url, log, BROWSER_NO_DELIVER="1")
            lines = log.read_text().splitlines()
            callback = [line.split("CALLBACK ", 1)[1] for line in lines if "CALLBACK " in line][-1]
            oidc.forget_clients()
            urllib.request.urlopen(callback).read()
        else:
            browse(url, log)
        return True

    async def main():
        engine = make_engine(tmp_path, opener)
        await engine.add("flaky", mcp.url)
        created = oidc.stats()["registrations"]["created"]
        events = []
        view = await engine.connect("flaky", on_event=events.append)
        await engine.transport.aclose()
        return view, events, created

    view, events, created = asyncio.run(main())
    assert view["status"] == "connected"
    assert len(calls) == 2
    assert oidc.stats()["registrations"]["created"] == created + 2  # first connect, then the repair
    assert [e.stage for e in events].count("waiting_for_browser") == 2
    assert oidc.stats()["grant_errors"].get("invalid_client", 0) >= 1


def test_browser_that_cannot_start_is_reported(stack, user_dirs, tmp_path):
    _, mcp = stack
    log = tmp_path / "browser.log"
    seen = []

    def opener(url):
        return False  # no browser on this machine

    async def main():
        engine = make_engine(tmp_path, opener)
        await engine.add("nobrowser", mcp.url)

        def on_event(event):
            seen.append(event)
            if event.stage == "browser_failed":
                # The user copies the printed link into a browser themselves.
                asyncio.get_running_loop().run_in_executor(None, browse, event.url, log)

        view = await engine.connect("nobrowser", on_event=on_event)
        await engine.transport.aclose()
        return view

    assert asyncio.run(main())["status"] == "connected"
    assert "browser_failed" in [e.stage for e in seen]
