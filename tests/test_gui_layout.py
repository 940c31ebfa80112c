"""The main window's layout at every size, its memory between runs, and its confirmations (issue 10).

pytest-qt with QT_QPA_PLATFORM=offscreen, over the real service (the `gui` fixture of test_gui).
"""

from __future__ import annotations

import os
import time

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QRect, Qt  # noqa: E402 - after QT_QPA_PLATFORM
from PySide6.QtWidgets import QApplication  # noqa: E402 - after QT_QPA_PLATFORM

from broker.model import ConnectionSettings, ConnectionState  # noqa: E402 - after QT_QPA_PLATFORM
from broker.oauth.tokens import TokenSet  # noqa: E402 - after QT_QPA_PLATFORM
from broker.secret import Secret  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.keystore import FileKeyStore  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.paths import APP_NAME, Paths  # noqa: E402 - after QT_QPA_PLATFORM
from broker.storage.store import Store  # noqa: E402 - after QT_QPA_PLATFORM

from . import test_gui  # noqa: E402 - after QT_QPA_PLATFORM
from .test_gui import DEMO_VIEWS, answer_next_box, row_status  # noqa: E402 - after QT_QPA_PLATFORM

gui = test_gui.gui  # the window over a real service, as a fixture here too

pytestmark = pytest.mark.timeout(120)

LONG_NAME = "a-very-long-connection-name-that-goes-on-and-on-0123456789abcdef"
LONG_URL = "https://mcp.internal.example.com/" + "a/rather/long/path/" * 6 + "mcp"


def seed(tmp_path, connections):
    """Write connected `(name, server_url)` pairs straight into the store."""
    now = int(time.time())
    store = Store(Paths.default(), lambda: FileKeyStore(tmp_path / "vault.key"))
    with store.transaction() as txn:
        for name, url in connections:
            txn.settings[name] = ConnectionSettings(name=name, server_url=url, added_at=now)
            txn.states[name] = ConnectionState(
                tokens=TokenSet(
                    access_token=Secret("a" * 40),
                    token_type="Bearer",
                    expires_at=now + 3600,
                    scope=("mcp:read",),
                    refresh_token=Secret("r" * 40),
                    obtained_at=now,
                )
            )


def with_demo_views(qtbot, window):
    """DEMO_VIEWS in the model once the service's first (empty) listing is in."""
    qtbot.waitUntil(lambda: window.status_label.text().startswith("No connections yet"), timeout=5000)
    window.model.set_views(DEMO_VIEWS)
    qtbot.waitUntil(lambda: window.stack.currentWidget() is window.table)


def settle(qtbot, window, width, height):
    window.resize(width, height)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == (width, height), timeout=5000)
    QApplication.processEvents()


def in_window(window, widget) -> QRect:
    return QRect(widget.mapTo(window, widget.rect().topLeft()), widget.size())


SIZES = ((640, 420), (1000, 600), (1280, 720), (1280, 800), (1920, 1080))


def test_every_size_shows_every_column_and_every_details_button(qtbot, gui):
    from ui.model import SERVER

    _, _, window = gui
    with_demo_views(qtbot, window)
    window.select("internal-docs")
    details = window.details
    buttons = (details.connect_button, details.disconnect_button, details.remove_button, details.copy_button)
    header = window.table.horizontalHeader()
    for width, height in SIZES:
        settle(qtbot, window, width, height)
        where = (width, height)
        if width >= 1000:  # no horizontal scrollbar: every column in the viewport, Server keeps some room
            assert window.table.horizontalScrollBar().maximum() == 0, where
            viewport = window.table.viewport().width()
            for col in range(window.model.columnCount()):
                assert header.sectionViewportPosition(col) + header.sectionSize(col) <= viewport, (where, col)
            assert header.sectionSize(SERVER) >= 120, (
                where,
                window.splitter.orientation(),
                window._needed_width(),
                window.splitter.width(),
            )
        # Details beside the table when both fit, else under it; never hidden under the status bar.
        table, pane = in_window(window, window.table), in_window(window, details)
        beside = pane.left() >= table.right()
        under = pane.top() >= table.bottom()
        assert beside or under, (where, table, pane)
        if width >= 1280:
            assert beside, where
        if width <= 640:
            assert under, where
        status = window.statusBar().geometry()
        for button in buttons:
            rect = in_window(window, button)
            assert window.rect().contains(rect), (where, button.text(), rect)
            assert not rect.intersects(status), (where, button.text(), rect, status)
            assert button.visibleRegion().boundingRect() == button.rect(), (where, button.text())
        copy = details.copy_button  # "Copy client config" and its menu arrow are never clipped
        assert copy.sizeHint().width() <= copy.width(), (where, copy.sizeHint(), copy.width())


def test_details_keeps_its_width_and_elides_long_values(qtbot, request, user_dirs, tmp_path):
    seed(tmp_path, [("a", "https://a.example/mcp"), (LONG_NAME, LONG_URL)])
    _, _, window = request.getfixturevalue("gui")
    details = window.details
    qtbot.waitUntil(lambda: window.model.rowCount() == 2, timeout=5000)
    settle(qtbot, window, 1280, 720)

    def show(name):
        window.select(name)
        qtbot.waitUntil(lambda: details.view is not None and details.view["name"] == name, timeout=5000)
        QApplication.processEvents()

    show("a")
    before = (details.width(), window.table.width())
    show(LONG_NAME)
    assert (details.width(), window.table.width()) == before
    # Long values elide, the URL in the middle; the full text is in the tool tip.
    assert LONG_URL in details.server.toolTip() and details.server.text() == LONG_URL
    shown = details.server.shown_text()
    assert "…" in shown and shown.startswith("https://mcp.") and shown.endswith("mcp")
    assert LONG_NAME in details.title.toolTip() and details.title.text() == LONG_NAME
    show("a")
    assert (details.width(), window.table.width()) == before
    assert details.server.shown_text() == "https://a.example/mcp"


def settings_file(user_dirs):
    return user_dirs["XDG_CONFIG_HOME"] / APP_NAME / "window.ini"


def new_window(qtbot, bridge, path):
    from ui.main_window import MainWindow

    window = MainWindow(bridge, settings_path=path)
    qtbot.addWidget(window)
    return window


def test_window_state_is_remembered_between_runs(qtbot, gui, user_dirs):
    from ui.model import NAME, SCOPES, STATUS

    _, bridge, window = gui
    path = settings_file(user_dirs)
    assert window.settings_path == path
    with_demo_views(qtbot, window)
    settle(qtbot, window, 1400, 760)
    window.splitter.setSizes([1400 - 450, 450])  # as if dragged: Details wider
    QApplication.processEvents()
    details_width = window.details.width()
    assert abs(details_width - 450) < 20
    # The offscreen screen is 800x800; a restored geometry must fit the screen.
    settle(qtbot, window, 760, 540)
    window.table.setColumnWidth(NAME, 211)
    window.table.setColumnWidth(SCOPES, 177)
    window.table.sortByColumn(STATUS, Qt.SortOrder.DescendingOrder)
    window.quitting = True
    window.close()
    assert path.is_file()

    second = new_window(qtbot, bridge, path)
    second.model.set_views(DEMO_VIEWS)
    second.show()
    qtbot.waitExposed(second)
    assert (second.width(), second.height()) == (760, 540)
    assert second.table.columnWidth(NAME) == 211 and second.table.columnWidth(SCOPES) == 177
    header = second.table.horizontalHeader()
    assert (header.sortIndicatorSection(), header.sortIndicatorOrder()) == (STATUS, Qt.SortOrder.DescendingOrder)
    assert second.model.data(second.proxy.mapToSource(second.proxy.index(0, 0))) == "internal-docs"
    assert not second.isMaximized()
    settle(qtbot, second, 1600, 760)  # wide enough again: Details beside the table, as wide as it was
    assert second.splitter.orientation() == Qt.Orientation.Horizontal
    assert second.details.width() == details_width
    settle(qtbot, second, 760, 540)
    second.showMaximized()
    qtbot.waitUntil(second.isMaximized, timeout=5000)
    second.quitting = True
    second.close()

    third = new_window(qtbot, bridge, path)
    assert third.windowState() & Qt.WindowState.WindowMaximized
    assert (third.normalGeometry().width(), third.normalGeometry().height()) == (760, 540)


def test_a_corrupt_settings_file_is_ignored(qtbot, request, user_dirs):
    from ui.model import NAME

    path = settings_file(user_dirs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x00\xff\xfe not ini at all [window\n"
        b"[window]\ngeometry=@ByteArray(\x01\x02garbage)\nsplitter=zzz\nheader=@ByteArray(nonsense)\n"
        b"sort_column=banana\nsort_order=7\ncolumn_widths=-5, 99999, x\nmaximized=maybe\n"
    )
    _, _, window = request.getfixturevalue("gui")
    assert (window.width(), window.height()) == (1280, 720)
    assert not window.isMaximized()
    assert window.table.columnWidth(NAME) == 130
    header = window.table.horizontalHeader()
    assert (header.sortIndicatorSection(), header.sortIndicatorOrder()) == (NAME, Qt.SortOrder.AscendingOrder)
    # A foreign file with the right keys but wrong types: the same.
    from PySide6.QtCore import QSettings

    foreign = QSettings(str(path), QSettings.Format.IniFormat)
    foreign.clear()
    for key, value in {"window/geometry": 42, "window/splitter": "text", "window/column_widths": ["a", "b"]}.items():
        foreign.setValue(key, value)
    foreign.setValue("window/sort_column", 99)
    foreign.sync()
    _, bridge, _ = request.getfixturevalue("gui")
    other = new_window(qtbot, bridge, path)
    assert (other.width(), other.height()) == (1280, 720)
    assert other.table.columnWidth(NAME) == 130
    assert other.table.horizontalHeader().sortIndicatorSection() == NAME


def test_confirmations_use_verbs_and_escape_cancels(qtbot, request, user_dirs, tmp_path):
    seed(tmp_path, [("demo", "https://mcp.example.com/mcp")])
    _, _, window = request.getfixturevalue("gui")
    qtbot.waitUntil(lambda: window.selected_name() == "demo", timeout=5000)

    seen = answer_next_box(qtbot, "Escape")
    window.disconnect_action.trigger()
    assert seen["buttons"] == ["Cancel", "Disconnect"] and seen["default"] == "Cancel"
    seen = answer_next_box(qtbot, "Escape")
    window.remove_action.trigger()
    assert seen["buttons"] == ["Cancel", "Remove"] and seen["default"] == "Cancel"
    assert row_status(window, "demo") == "connected" and window.model.rowCount() == 1

    answer_next_box(qtbot, "Disconnect")
    window.disconnect_action.trigger()
    qtbot.waitUntil(lambda: row_status(window, "demo") == "not_connected", timeout=10000)
    answer_next_box(qtbot, "Remove")
    window.remove_action.trigger()
    qtbot.waitUntil(lambda: window.model.rowCount() == 0, timeout=10000)


@pytest.mark.qt_log_ignore("systemTrayWindowChanged")  # the offscreen platform has no tray
def test_the_tray_notice_shows_once_ever(qtbot, gui, user_dirs):
    from ui.tray import Tray

    _, bridge, window = gui
    path = settings_file(user_dirs)
    shown = []

    def with_tray(win):
        tray = Tray(win.model, win)
        tray.icon.showMessage = lambda title, *rest: shown.append(title)  # records what the user would see
        tray.show()
        win.tray = tray
        return win

    with_tray(window)
    for _ in range(2):
        window.show()
        window.close()  # to the tray, still serving
        assert not window.isVisible() and bridge.is_ready
    assert shown == ["MCP Token Broker is still running"]

    again = with_tray(new_window(qtbot, bridge, path))  # the next run
    again.show()
    again.close()
    assert not again.isVisible()
    assert shown == ["MCP Token Broker is still running"]
    again.tray = window.tray = None
