"""Scope step-up in the app (issue 11 §3), with pytest-qt over the real
service, oidc-provider and the test MCP server: after a 403
insufficient_scope the tray says so, and the Reconnect dialog names the new
scope before the browser opens."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from . import test_gui as gui_tests  # noqa: E402 - after QT_QPA_PLATFORM
from .test_stepup import REQUEST  # noqa: E402 - after QT_QPA_PLATFORM

#: The fixture of tests/test_gui.py: the real window over a real service.
gui = gui_tests.gui

pytestmark = pytest.mark.timeout(120)


def test_reconnect_dialog_names_the_new_scope_before_the_browser_opens(qtbot, gui, stack):
    import httpx

    from broker.client.api_client import BrokerClient
    from broker.client.httpx_auth import BrokerAuth
    from broker.client.socketpath import default_socket_path
    from ui.connect_dialog import ConnectDialog

    _, mcp = stack
    _, bridge, window = gui
    added = gui_tests.add_via_dialog(qtbot, window, "adm", mcp.url)
    added.add_button.click()
    qtbot.waitUntil(lambda: gui_tests.row_status(window, "adm") == "connected", timeout=30000)
    notified: list[tuple[str, str]] = []
    if window.tray is None:  # offscreen has no system tray; the same object the app makes
        from ui.tray import Tray

        window.tray = Tray(window.model, window)
    window.tray.icon.showMessage = lambda title, body, *a: notified.append((title, body))

    client = BrokerClient(str(default_socket_path()))
    with httpx.Client(auth=BrokerAuth("adm", client=client)) as http:
        answer = http.post(mcp.url, json=REQUEST, headers={"Accept": "application/json, text/event-stream"})
    assert answer.status_code == 403
    qtbot.waitUntil(lambda: bool(notified), timeout=10000)
    assert notified[0][0] == "adm needs more access" and "scope mcp:admin" in notified[0][1], notified
    # Details says it too, beside the scopes, until the next login grants it.
    window.select("adm")
    qtbot.waitUntil(lambda: window.details.step_up.text() == "mcp:admin: Reconnect to grant it", timeout=10000)
    assert window.details.step_up.isVisible()

    seen_at_browser: list[str] = []
    dialog = ConnectDialog(bridge, "adm", window)
    bridge.flowProgress.connect(
        lambda name, fid, stage, *_: stage == "waiting_for_browser" and seen_at_browser.append(dialog.asking.text())
    )
    dialog.show()
    dialog.start()
    qtbot.waitUntil(lambda: dialog.finished_ok is True, timeout=30000)
    assert seen_at_browser and seen_at_browser[0] == "Will also ask for: mcp:admin", seen_at_browser
    assert dialog.asking.isVisible() or dialog.asking.text()
    view = client.connection("adm")
    assert "mcp:admin" in view["scopes"] and view["step_up"] is None
    qtbot.waitUntil(lambda: not window.details.step_up.isVisible(), timeout=10000)
