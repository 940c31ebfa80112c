"""The desktop app, driven by pytest-qt against the real servers.

QT_QPA_PLATFORM=offscreen; any unexpected Qt warning fails a test
(qt_log_level_fail in pyproject.toml).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Imports below need the platform chosen first (E402 on purpose).
from PySide6.QtCore import Qt  # noqa: E402 - after QT_QPA_PLATFORM
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402 - after QT_QPA_PLATFORM

from broker.client.api_client import BrokerClient, ServiceError  # noqa: E402 - after QT_QPA_PLATFORM
from broker.client.socketpath import default_socket_path  # noqa: E402 - after QT_QPA_PLATFORM
from broker.driver.engine import Engine  # noqa: E402 - after QT_QPA_PLATFORM
from broker.driver.transport import Transport  # noqa: E402 - after QT_QPA_PLATFORM
from broker.service.service import BrokerService  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.keystore import FileKeyStore  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.paths import Paths  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.store import Store  # noqa: E402 - after QT_QPA_PLATFORM

from .servers.fixtures import BROWSER_SCRIPT  # noqa: E402 - after QT_QPA_PLATFORM

pytestmark = pytest.mark.timeout(120)


def browse(url: str) -> bool:
    subprocess.run([BROWSER_SCRIPT, url], check=True, timeout=30, env={**os.environ, "BROWSER_LOG": os.devnull})
    return True


@pytest.fixture
def gui(qtbot, user_dirs, tmp_path, request):
    from ui.app import build

    policy = getattr(request, "param", "allow")
    paths = Paths.default()

    def make_service():
        store = Store(paths, lambda: FileKeyStore(tmp_path / "vault.key"))
        engine = Engine(store, Transport(), opener=browse, flow_timeout=60)
        return BrokerService(
            paths=paths,
            store=store,
            engine=engine,
            socket_path=default_socket_path(),
            policy=policy,
            ui=True,
            approval_timeout=30,
        )

    runner, bridge, window = build(argparse.Namespace(minimized=False, policy=None), make_service=make_service)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: bridge.is_ready, timeout=20000)
    yield runner, bridge, window
    window.quitting = True
    runner.stop()


def row_status(window, name):
    from ui.rows import display_status

    row = window.model.row(name)
    import time

    return None if row is None else display_status(row, time.time())


def answer_next_box(qtbot, click):
    """Wait for the next modal QMessageBox, record it, then press `click` (a button's text, or 'Escape')."""
    from PySide6.QtCore import QTimer

    seen: dict[str, object] = {}

    def poll():
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(10, poll)
            return
        seen["title"], seen["text"] = box.windowTitle(), box.text()
        seen["buttons"] = sorted(b.text().replace("&", "") for b in box.buttons())
        seen["default"] = box.defaultButton().text().replace("&", "") if box.defaultButton() else None
        if click == "Escape":
            qtbot.keyClick(box, Qt.Key.Key_Escape)
        else:
            next(b for b in box.buttons() if b.text().replace("&", "") == click).click()

    QTimer.singleShot(0, poll)
    return seen


def add_via_dialog(qtbot, window, name, url):
    window.add_action.trigger()
    dialog = window.dialogs[-1]
    qtbot.keyClicks(dialog.url, url)
    dialog.name.clear()
    qtbot.keyClicks(dialog.name, name)
    dialog.discover_button.click()
    qtbot.waitUntil(dialog.add_button.isEnabled, timeout=20000)
    return dialog


def test_add_connect_fetch_and_disconnect(qtbot, gui, stack, monkeypatch):
    oidc, mcp = stack
    runner, bridge, window = gui
    assert window.windowTitle() == "MCP Token Broker"
    assert window.stack.currentWidget() is window.empty  # the empty state explains what to do

    dialog = add_via_dialog(qtbot, window, "demo", mcp.url)
    assert dialog.issuer.text() == oidc.issuer
    assert "mcp:read" in dialog.requested.text() and "offline_access" in dialog.requested.text()
    assert "Dynamic client registration" in dialog.method.text()
    checks = [label.accessibleName() for label in dialog.checklist.labels]
    assert any(c.startswith("PKCE with S256: passes") for c in checks)
    assert any(c.startswith("Issuer in the authorization response: passes") for c in checks)
    assert any(c.startswith("HTTPS-only endpoints: warning") for c in checks)  # loopback http

    dialog.add_button.click()  # "log in right after adding" is on: the browser script logs in
    qtbot.waitUntil(lambda: row_status(window, "demo") == "connected", timeout=30000)
    assert window.stack.currentWidget() is window.table
    connect_dialog = [d for d in window.dialogs if type(d).__name__ == "ConnectDialog"][-1]
    assert connect_dialog.finished_ok is True
    assert connect_dialog.link.text().startswith(oidc.issuer + "/auth?")

    index = window.model.index(0, 3)
    assert window.model.data(index) == "mcp:read"
    assert re.fullmatch(r"\d+:\d\d", window.model.data(window.model.index(0, 4)))

    # A token over the socket while the window runs; the status bar says who got it.
    token = BrokerClient().token("demo")["access_token"]
    assert token.count(".") == 2
    qtbot.waitUntil(lambda: "Gave demo's token" in window.statusBar().currentMessage(), timeout=5000)

    # Details pane: issuer, scopes, audit line, never the token.
    window.select("demo")
    qtbot.waitUntil(lambda: window.details.issuer.text() == oidc.issuer, timeout=5000)
    window.details.refresh()
    qtbot.waitUntil(
        lambda: window.details.audit.count() > 0 and "got demo's token" in window.details.audit.item(0).text(),
        timeout=5000,
    )
    assert window.details.refresh_token.text().startswith("Yes")
    texts = [w.text() for w in window.details.findChildren(type(window.details.issuer))]
    assert not any(token in t for t in texts)

    # Copy client config for Claude Code: the venv's bin is not on a client's
    # PATH, so the snippet names the console script by its absolute path.
    venv_bin = os.path.dirname(os.path.abspath(sys.executable))
    monkeypatch.setenv("PATH", os.pathsep.join(d for d in ("/usr/bin", "/bin") if d != venv_bin))
    window.details.copy_snippet("claude-code")
    script = os.path.join(venv_bin, "mcp-token-broker")
    assert f'"headersHelper": "{script} headers demo"' in QApplication.clipboard().text()

    window.disconnect_connection("demo", confirm=False)
    qtbot.waitUntil(lambda: row_status(window, "demo") == "not_connected", timeout=15000)
    with pytest.raises(ServiceError) as info:
        BrokerClient().token("demo")
    assert info.value.code == "authorization_required"

    window.remove_connection("demo", confirm=False)
    qtbot.waitUntil(lambda: window.model.rowCount() == 0, timeout=15000)
    assert window.stack.currentWidget() is window.empty


def test_add_dialog_explains_bad_input(qtbot, gui, hostile_server):
    _, bridge, window = gui
    window.add_action.trigger()
    dialog = window.dialogs[-1]
    qtbot.keyClicks(dialog.url, "ftp://example.com/mcp")
    dialog.discover_button.click()
    assert dialog.url_error.isVisible() and "only https" in dialog.url_error.text()
    dialog.url.clear()
    hostile_server.metadata = {"code_challenge_methods_supported": ["plain"]}
    qtbot.keyClicks(dialog.url, hostile_server.mcp_url)
    dialog.name.clear()
    qtbot.keyClicks(dialog.name, "Bad Name")
    assert dialog.name_error.isVisible() and "not a valid connection name" in dialog.name_error.text()
    dialog.discover_button.click()
    qtbot.waitUntil(dialog.discover_error.isVisible, timeout=15000)
    assert "S256" in dialog.discover_error.text()
    assert not dialog.add_button.isEnabled()


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_approval_dialog_allows_and_denies(qtbot, gui, stack):
    _, mcp = stack
    runner, bridge, window = gui
    for name in ("a", "b"):
        add_via_dialog(qtbot, window, name, mcp.url).add_button.click()
        qtbot.waitUntil(lambda n=name: row_status(window, n) == "connected", timeout=30000)

    def fetch(name, out):
        try:
            out.append(BrokerClient().token(name)["token_type"])
        except ServiceError as exc:
            out.append(exc.code)

    def approval_dialogs():
        return [d for d in window.dialogs if type(d).__name__ == "ApprovalDialog" and d.isVisible()]

    result: list[str] = []
    thread = threading.Thread(target=fetch, args=("a", result))
    thread.start()
    qtbot.waitUntil(lambda: len(approval_dialogs()) == 1, timeout=10000)
    dialog = approval_dialogs()[0]
    assert dialog.request.connection == "a" and dialog.request.client.pid == os.getpid()
    # The window keeps working while the question is open.
    assert window.model.rowCount() == 2 and BrokerClient().health()["status"] == "ok"
    dialog.allow_once.click()
    thread.join(10)
    assert result == ["Bearer"]

    result.clear()
    thread = threading.Thread(target=fetch, args=("b", result))
    thread.start()
    qtbot.waitUntil(lambda: len(approval_dialogs()) == 1, timeout=10000)
    approval_dialogs()[0].deny.click()
    thread.join(10)
    assert result == ["access_denied"]

    clients = window.show_clients()
    qtbot.waitUntil(lambda: clients.table.rowCount() == 2, timeout=5000)
    cells = {(clients.table.item(r, 1).text(), clients.table.item(r, 2).text()) for r in range(2)}
    assert cells == {("a", "Allow"), ("b", "Deny")}
    clients.table.selectRow([r for r in range(2) if clients.table.item(r, 1).text() == "b"][0])
    clients.revoke.click()
    qtbot.waitUntil(lambda: clients.table.rowCount() == 1, timeout=5000)


def test_settings_write_config_and_autostart(qtbot, gui, user_dirs):
    _, bridge, window = gui
    dialog = window.show_settings()
    dialog.policy.setCurrentIndex(2)  # deny
    dialog.margin.setValue(300)
    dialog.autostart.setChecked(True)
    dialog.save()
    qtbot.waitUntil(lambda: bridge.service.policy == "deny", timeout=5000)
    from broker.storage.config import load_config
    from ui import autostart

    assert load_config(Paths.default()).client_policy == "deny"
    assert load_config(Paths.default()).refresh_margin == 300
    assert autostart.is_enabled()
    assert "Exec=" in autostart.autostart_path().read_text() and "--minimized" in autostart.autostart_path().read_text()
    dialog = window.show_settings()
    dialog.autostart.setChecked(False)
    dialog.save()
    qtbot.waitUntil(lambda: not autostart.is_enabled(), timeout=5000)


def test_filter_and_tray_menu(qtbot, gui):
    from ui.tray import Tray

    _, bridge, window = gui
    window.model.set_views(
        [
            {
                "name": "github",
                "server_url": "https://api.githubcopilot.com/mcp/",
                "status": "connected",
                "scopes": ["repo"],
                "expires_at": 2**40,
            },
            {
                "name": "linear",
                "server_url": "https://mcp.linear.app/mcp",
                "status": "reauth_required",
                "scopes": [],
                "expires_at": None,
            },
        ]
    )
    qtbot.keyClicks(window.filter, "lin")
    assert window.proxy.rowCount() == 1
    window.filter.clear()
    assert window.proxy.rowCount() == 2
    tray = Tray(window.model, window)
    texts = [a.text() for a in tray.menu.actions() if a.text()]
    assert texts[0] == "&Open MCP Token Broker" and texts[-1] == "&Quit"
    assert "github — Connected" in texts and "linear — Re-authorization required" in texts
    assert "linear: Re-authorization required" in tray.icon.toolTip()


def test_help_about_shows_the_version(qtbot, gui, monkeypatch):
    from broker import __version__

    _, _, window = gui
    shown = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append((title, text)))
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    assert window.about_action in help_menu.actions()
    window.about_action.trigger()
    assert shown == [("About MCP Token Broker", window.about_text())]
    assert f"MCP Token Broker {__version__}" in shown[0][1]


def test_second_launch_raises_the_window(qtbot, gui):
    _, bridge, window = gui
    window.hide()
    assert not window.isVisible()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([sys.executable, "-m", "ui"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    qtbot.waitUntil(window.isVisible, timeout=5000)
    assert BrokerClient().health()["ui"] is True


def test_model_passes_qtmodeltester(qtmodeltester, qapp):
    from ui.model import ConnectionsModel

    model = ConnectionsModel()
    model.set_views(
        [
            {
                "name": f"c{i}",
                "server_url": f"https://s{i}.example/mcp",
                "status": s,
                "scopes": ["a"],
                "expires_at": 2**31 + i,
            }
            for i, s in enumerate(["connected", "expired", "not_connected", "reauth_required"])
        ]
    )
    qtmodeltester.check(model, force_py=True)
    model.upsert(
        "new", {"name": "new", "server_url": "https://n/mcp", "status": "connected", "scopes": [], "expires_at": None}
    )
    model.remove("c1")
    model.refresh_started("c0")
    qtmodeltester.check(model, force_py=True)


def test_countdown_ticks(qtbot, qapp):
    from ui.model import ConnectionsModel

    now = [1000.0]
    model = ConnectionsModel(clock=lambda: now[0], tick_ms=20)
    model.set_views(
        [{"name": "a", "server_url": "https://a/mcp", "status": "connected", "scopes": [], "expires_at": 1600}]
    )
    assert model.data(model.index(0, 4)) == "10:00"
    assert model.data(model.index(0, 2)) == "Connected"
    now[0] = 1500
    with qtbot.waitSignal(model.dataChanged, timeout=1000):
        pass
    assert model.data(model.index(0, 4)) == "1:40"
    assert model.data(model.index(0, 2)) == "Expiring soon"
    now[0] = 1700
    assert model.data(model.index(0, 2)) == "Expired"


def test_connect_progress_copy_link_and_cancel(qtbot, gui, stack, monkeypatch):
    """A browser that never comes back: the link can be copied and the login cancelled."""
    _, mcp = stack
    runner, bridge, window = gui
    opened = []
    bridge.service.engine.opener = lambda url: opened.append(url) or True  # the user walks away
    dialog = add_via_dialog(qtbot, window, "stuck", mcp.url)
    dialog.add_button.click()
    qtbot.waitUntil(lambda: any(type(d).__name__ == "ConnectDialog" for d in window.dialogs), timeout=10000)
    connect = [d for d in window.dialogs if type(d).__name__ == "ConnectDialog"][-1]
    qtbot.waitUntil(lambda: connect.copy.isEnabled() and bool(opened), timeout=15000)
    assert "Waiting for you to log in" in connect.stage.text()
    connect.copy.click()
    assert QApplication.clipboard().text() == connect.link.text() == opened[0]
    finished = []
    bridge.flowFinished.connect(lambda name, flow_id, error: finished.append((name, error)))
    connect.buttons.rejected.emit()  # Cancel
    qtbot.waitUntil(lambda: bool(finished), timeout=10000)
    assert finished[0][0] == "stuck" and finished[0][1]["error"] == "cancelled"
    assert row_status(window, "stuck") == "not_connected"


def test_name_clash_and_confirmations(qtbot, gui, stack, monkeypatch):
    _, mcp = stack
    runner, bridge, window = gui
    add_via_dialog(qtbot, window, "once", mcp.url).add_button.click()
    qtbot.waitUntil(lambda: row_status(window, "once") == "connected", timeout=30000)
    window.add_action.trigger()
    dialog = window.dialogs[-1]
    qtbot.keyClicks(dialog.name, "once")
    assert dialog.name_error.isVisible() and "already exists" in dialog.name_error.text()
    dialog.reject()
    # Disconnect and Remove ask first; saying no changes nothing.
    window.select("once")
    asked = answer_next_box(qtbot, "Cancel")
    window.disconnect_action.trigger()
    assert asked["title"] == "Disconnect once?"
    asked = answer_next_box(qtbot, "Cancel")
    window.remove_action.trigger()
    assert asked["title"] == "Remove once?"
    qtbot.wait(300)
    assert row_status(window, "once") == "connected"


# -- issue 10: the main window ------------------------------------------------------------

DEMO_VIEWS = [
    {
        "name": "github",
        "server_url": "https://api.githubcopilot.com/mcp/",
        "status": "connected",
        "scopes": ["repo", "read:org"],
        "expires_at": 2**40,
    },
    {
        "name": "internal-docs",
        "server_url": "https://mcp.internal.example.com/a/rather/long/path/to/the/mcp/endpoint",
        "status": "reauth_required",
        "scopes": ["read_content"],
        "expires_at": None,
    },
]


def seeded_gui(request, user_dirs, tmp_path, name="demo"):
    """The `gui` fixture over a store that already holds one connected `name`."""
    import time

    from .helpers.seed import seed_connection

    seed_connection(
        Store(Paths.default(), lambda: FileKeyStore(tmp_path / "vault.key")),
        now=int(time.time()),
        lifetime=3600,
        name=name,
    )
    return request.getfixturevalue("gui")


def test_every_column_fits_beside_details_at_the_default_size(qtbot, gui):
    from PySide6.QtWidgets import QHeaderView

    from ui.model import EXPIRES, LAST, SERVER, STATUS

    _, _, window = gui
    window.model.set_views(DEMO_VIEWS)
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.table)
    header = window.table.horizontalHeader()
    assert header.sectionResizeMode(SERVER) == QHeaderView.ResizeMode.Stretch
    assert window.table.textElideMode() == window.table.textElideMode().ElideMiddle
    assert not window.table.wordWrap()  # a long URL elides on one line, it does not wrap
    for col in (STATUS, EXPIRES, LAST):
        assert header.sectionResizeMode(col) == QHeaderView.ResizeMode.ResizeToContents
    assert window.details.isVisible()
    assert window.splitter.orientation() == Qt.Orientation.Horizontal  # Details beside the table
    viewport = window.table.viewport().width()
    for col in range(window.model.columnCount()):
        right = header.sectionViewportPosition(col) + header.sectionSize(col)
        assert header.sectionViewportPosition(col) >= 0 and right <= viewport, (col, right, viewport)
    assert window.table.horizontalScrollBar().maximum() == 0
    copy = window.details.copy_button  # "Copy client config" and its menu arrow are not clipped
    assert copy.width() >= copy.sizeHint().width()
    style, metric = copy.style(), copy.style().PixelMetric
    needed = (
        copy.fontMetrics().horizontalAdvance(copy.text().replace("&", ""))
        + style.pixelMetric(metric.PM_MenuButtonIndicator, None, copy)
        + 2 * style.pixelMetric(metric.PM_ButtonMargin, None, copy)
    )
    assert copy.width() >= needed, (copy.width(), needed)
    minimum = window.minimumSize()
    assert 600 <= minimum.width() < window.width() and 400 <= minimum.height() < window.height()


def test_a_single_connection_is_selected_at_start_and_details_follow_live(qtbot, request, user_dirs, tmp_path):
    _, bridge, window = seeded_gui(request, user_dirs, tmp_path)
    qtbot.waitUntil(lambda: window.selected_name() == "demo", timeout=5000)
    qtbot.waitUntil(lambda: window.details.issuer.text() != "" and window.details.view is not None, timeout=5000)
    assert window.details.title.text() == "demo"
    assert window.details.audit.item(0).text() == "No client has asked for this token yet."
    # A hand-out shows in Recent activity without selecting the row again.
    assert BrokerClient().token("demo")["token_type"] == "Bearer"
    qtbot.waitUntil(lambda: "got demo's token" in window.details.audit.item(0).text(), timeout=5000)
    # The filter hides the selected row: Details clears completely.
    qtbot.keyClicks(window.filter, "nothing matches this")
    assert window.proxy.rowCount() == 0
    assert window.details.name is None and window.details.view is None
    assert window.details.title.text() == "Select a connection"
    assert window.details.audit.count() == 0
    for label in (window.details.issuer, window.details.granted, window.details.expiry, window.details.registration):
        assert label.text() == "—"
    assert not window.details.connect_button.isEnabled() and not window.connect_action.isEnabled()


def test_a_just_added_connection_is_selected(qtbot, gui, stack):
    _, mcp = stack
    _, _, window = gui
    window.model.set_views(DEMO_VIEWS)
    window.select("github")
    dialog = add_via_dialog(qtbot, window, "fresh", mcp.url)
    dialog.connect_now.setChecked(False)
    dialog.add_button.click()
    qtbot.waitUntil(lambda: window.selected_name() == "fresh", timeout=10000)
    qtbot.waitUntil(lambda: window.details.view is not None and window.details.view["name"] == "fresh", timeout=5000)
    assert window.details.title.text() == "fresh"


def test_empty_state_and_status_line_read_like_english(qtbot, gui):
    _, bridge, window = gui
    qtbot.waitUntil(lambda: window.status_label.text().startswith("No connections yet"), timeout=5000)
    assert window.status_label.text().startswith(f"No connections yet · serving on {bridge.service.socket_path}")
    assert window.stack.currentWidget() is window.empty
    assert window.empty_headline.text() == "Add your first MCP server"
    assert window.empty_add.isVisible() and window.empty_add.text().startswith("&Add")
    # ...and offers to bring in what other clients already use.
    assert window.empty_import.isVisible() and window.empty_import.text().startswith("&Import")
    window.empty_import.click()
    qtbot.waitUntil(lambda: any(type(d).__name__ == "ImportDialog" for d in window.dialogs), timeout=5000)
    next(d for d in window.dialogs if type(d).__name__ == "ImportDialog").reject()
    assert not window.details.isVisible()  # not a pane of dashes


def test_status_line_counts_one_connection(qtbot, request, user_dirs, tmp_path):
    _, bridge, window = seeded_gui(request, user_dirs, tmp_path)
    qtbot.waitUntil(lambda: window.status_label.text().startswith("Serving 1 connection on"), timeout=5000)
    assert window.details.isVisible()


def test_toolbar_and_details_agree_by_state(qtbot, request, user_dirs, tmp_path, monkeypatch):
    _, bridge, window = seeded_gui(request, user_dirs, tmp_path)
    details = window.details
    qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=5000)
    window.select("demo")
    qtbot.waitUntil(lambda: details.view is not None, timeout=5000)
    assert window.connect_action.text() == details.connect_button.text() == "Re&connect"
    assert window.disconnect_action.isEnabled() and details.disconnect_button.isEnabled()
    window.disconnect_connection("demo", confirm=False)
    qtbot.waitUntil(lambda: row_status(window, "demo") == "not_connected", timeout=10000)
    qtbot.waitUntil(lambda: details.view is not None and details.view["status"] == "not_connected", timeout=5000)
    assert window.connect_action.text() == details.connect_button.text() == "&Connect"
    assert not window.disconnect_action.isEnabled() and not details.disconnect_button.isEnabled()
    asked = answer_next_box(qtbot, "Cancel")
    window.disconnect_action.trigger()  # disabled: nothing to revoke, nothing asked
    assert asked == {}
    window.remove_action.trigger()
    assert asked["title"] == "Remove demo?" and "revoke" not in asked["text"]


def test_a_refused_revocation_is_said_in_a_box_not_only_the_status_bar(qtbot, gui):
    from .servers.fixtures import SdkAsServer

    _, bridge, window = gui
    with SdkAsServer(refuse_revocation=True) as server:
        add_via_dialog(qtbot, window, "stubborn", server.url).add_button.click()
        qtbot.waitUntil(lambda: row_status(window, "stubborn") == "connected", timeout=30000)
        window.select("stubborn")
        answer_next_box(qtbot, "Disconnect")
        window.disconnect_action.trigger()  # returns once the confirmation is answered
        told = answer_next_box(qtbot, "OK")
        qtbot.waitUntil(lambda: "text" in told, timeout=20000)
    assert told["title"] == "stubborn: not revoked at the server"
    assert "refused to revoke the tokens" in told["text"] and "stay valid until they expire" in told["text"]
    assert row_status(window, "stubborn") == "not_connected"
