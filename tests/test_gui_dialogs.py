"""The Add, Settings and Connect dialogs (issue 10, items 6, 8 and 10), driven
by pytest-qt against the real service and the real test servers."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Imports below need the platform chosen first (E402 on purpose).
from PySide6.QtCore import Qt  # noqa: E402 - after QT_QPA_PLATFORM
from PySide6.QtGui import QKeySequence  # noqa: E402 - after QT_QPA_PLATFORM
from PySide6.QtWidgets import QDialogButtonBox, QLabel  # noqa: E402 - after QT_QPA_PLATFORM

from broker.storage.config import load_config  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.paths import Paths  # noqa: E402 - after QT_QPA_PLATFORM

from . import test_gui as gui_tests  # noqa: E402 - after QT_QPA_PLATFORM

#: The fixture of tests/test_gui.py: the real window over a real service.
gui = gui_tests.gui

pytestmark = pytest.mark.timeout(120)

#: Words that give away an exception instead of a reason.
CLASS_WORDS = ("Error", "Exception", "ConnectError", "gaierror", "OSError", "Traceback")


def add_dialog(qtbot, window, debounce_ms=20):
    from ui.add_dialog import AddDialog

    dialog = AddDialog(window.bridge, window.model.names(), window, debounce_ms=debounce_ms)
    dialog.show()
    qtbot.waitExposed(dialog)
    return dialog


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- item 6: the Add dialog -----------------------------------------------------------------


def test_typing_a_url_without_scheme_discovers_after_a_pause(qtbot, gui, stack):
    oidc, mcp = stack
    _, bridge, window = gui
    dialog = add_dialog(qtbot, window)
    assert dialog.discover_button.isVisible()  # the button stays
    typed = mcp.url.removeprefix("http://")  # 127.0.0.1:PORT/mcp: loopback, so http
    qtbot.keyClicks(dialog.url, typed)
    qtbot.waitUntil(dialog.add_button.isEnabled, timeout=20000)  # nobody pressed Discover
    assert dialog.issuer.text() == oidc.issuer
    assert dialog.name.text() == "mcp"  # from the path, not "127"
    assert dialog.discovered["url"] == mcp.url
    assert not dialog.add_reason.isVisible()


def test_add_says_why_it_is_disabled(qtbot, gui, stack):
    _, mcp = stack
    _, bridge, window = gui
    dialog = add_dialog(qtbot, window, debounce_ms=60_000)  # only Discover starts discovery here
    assert not dialog.add_button.isEnabled()
    assert dialog.add_reason.isVisible() and dialog.add_reason.text() == "Enter the server's URL."
    qtbot.keyClicks(dialog.url, mcp.url)
    assert dialog.add_reason.text() == "Checking…"
    dialog.discover_button.click()
    qtbot.waitUntil(dialog.add_button.isEnabled, timeout=20000)
    assert not dialog.add_reason.isVisible()

    dialog.existing.add("taken")
    dialog.name.clear()
    qtbot.keyClicks(dialog.name, "taken")
    assert not dialog.add_button.isEnabled() and dialog.add_reason.text() == "Name already used."
    dialog.name.selectAll()
    qtbot.keyClick(dialog.name, Qt.Key.Key_Backspace)
    assert not dialog.add_button.isEnabled() and dialog.add_reason.text() == "Give the connection a name."
    qtbot.keyClicks(dialog.name, "fine")
    assert dialog.add_button.isEnabled() and not dialog.add_reason.isVisible()

    dialog.url.clear()
    qtbot.keyClicks(dialog.url, f"http://127.0.0.1:{closed_port()}/mcp")
    dialog.discover_button.click()
    qtbot.waitUntil(dialog.discover_error.isVisible, timeout=20000)
    assert not dialog.add_button.isEnabled()
    assert dialog.add_reason.text().startswith("Discovery failed")


@pytest.mark.parametrize("where", ["closed port", "unknown host"])
def test_network_errors_name_the_host_and_the_reason(qtbot, gui, where):
    _, bridge, window = gui
    dialog = add_dialog(qtbot, window)
    if where == "closed port":
        host, url, reason = "127.0.0.1", f"http://127.0.0.1:{closed_port()}/mcp", "connection refused"
    else:
        host, url, reason = "mcp.nosuch.invalid", "https://mcp.nosuch.invalid/mcp", "name"
    before = dialog.height()
    dialog.url.setText(url)
    dialog.discover_button.click()
    qtbot.waitUntil(dialog.discover_error.isVisible, timeout=20000)
    text = dialog.discover_error.text()
    assert f"cannot reach {host}" in text and reason in text, text
    assert not any(word in text for word in CLASS_WORDS), text
    # The dialog grew to show the line, rather than squeezing it.
    qtbot.waitUntil(lambda: dialog.height() >= dialog.sizeHint().height(), timeout=2000)
    assert dialog.height() > before


def test_security_check_rows_never_overlap(qtbot, gui, stack):
    _, mcp = stack
    _, bridge, window = gui
    dialog = add_dialog(qtbot, window, debounce_ms=60_000)
    qtbot.keyClicks(dialog.name, "demo")
    for _ in range(2):  # a second discovery replaces the rows, it does not pile them up
        dialog.url.setText(mcp.url)
        dialog.discover_button.click()
        qtbot.waitUntil(dialog.add_button.isEnabled, timeout=20000)
        qtbot.waitUntil(lambda: dialog.height() >= dialog.sizeHint().height(), timeout=2000)
        rows = [w for w in dialog.checklist.findChildren(QLabel) if w.isVisible()]
        assert len(rows) == len(dialog.checklist.labels) >= 5
        for i, a in enumerate(rows):
            assert a.height() >= a.minimumSizeHint().height(), a.text()
            for b in rows[i + 1 :]:
                assert not a.geometry().intersects(b.geometry()), (a.text(), b.text())


# -- item 8: Settings ----------------------------------------------------------------------------


def test_settings_apply_at_once_and_only_close(qtbot, gui, user_dirs):
    _, bridge, window = gui
    dialog = window.show_settings()
    assert [dialog.buttons.standardButton(b) for b in dialog.buttons.buttons()] == [
        QDialogButtonBox.StandardButton.Close
    ]
    assert "apply at once" in dialog.note.text()
    dialog.policy.setCurrentIndex(2)  # deny: in force without pressing anything
    qtbot.waitUntil(lambda: bridge.service.policy == "deny", timeout=5000)
    assert load_config(Paths.default()).client_policy == "deny"
    dialog.margin.setValue(1200)
    qtbot.waitUntil(lambda: load_config(Paths.default()).refresh_margin == 1200, timeout=5000)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Close).click()
    assert not dialog.isVisible()


@pytest.mark.parametrize(
    ("margin", "hour", "ten_minutes"),
    [(60, "45 min", "7 min 30 s"), (300, "45 min", "5 min"), (1200, "40 min", "5 min"), (3600, "30 min", "5 min")],
)
def test_refresh_margin_line_follows_the_value(qtbot, gui, margin, hour, ten_minutes):
    _, bridge, window = gui
    dialog = window.show_settings()
    dialog.margin.setValue(margin)
    assert dialog.margin_effect.text() == f"Refreshes a 1-hour token at {hour}, a 10-minute token at {ten_minutes}."


def test_settings_open_with_ctrl_comma(qtbot, gui):
    _, bridge, window = gui
    assert QKeySequence("Ctrl+,") in window.settings_action.shortcuts()


# -- item 10: the Connect dialog --------------------------------------------------------------


def test_connect_dialog_shows_the_login_host_first(qtbot, gui):
    from ui.connect_dialog import ConnectDialog

    _, bridge, window = gui
    dialog = ConnectDialog(bridge, "demo", window)
    dialog.show()
    long_url = "https://auth.example.com/oauth2/v1/authorize?client_id=" + "c" * 300 + "&state=" + "s" * 300
    bridge.flowProgress.emit("demo", "flow-1", "waiting_for_browser", "waiting", long_url)
    qtbot.waitUntil(dialog.link.isEnabled, timeout=2000)
    assert dialog.stage.text().startswith("Log in at auth.example.com")
    assert dialog.link.text() == long_url
    assert dialog.link.cursorPosition() == 0  # the start of the link shows, not its tail
    dialog.close()
