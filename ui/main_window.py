"""The main window: the connections table, its actions and the details pane."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QByteArray, QEvent, QModelIndex, QObject, QSettings, QSortFilterProxyModel, Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from broker.status import Status

from .details import DetailsPane
from .icons import app_icon
from .model import EXPIRES, LAST, NAME, NAME_ROLE, SCOPES, SERVER, SORT_ROLE, STATUS, ConnectionsModel

if TYPE_CHECKING:  # dialogs are imported when first opened: the window paints sooner
    from pathlib import Path

    from .approval import ApprovalDialog
    from .bridge import Bridge
    from .clients import ClientsDialog
    from .connect_dialog import ConnectDialog
    from .settings_dialog import SettingsDialog

__all__ = ["MainWindow"]

DEFAULT_SIZE = (1280, 720)  # every column beside the Details pane
MINIMUM_SIZE = (640, 420)  # Details under the table, its buttons in view
DETAILS_WIDTH = 380  # beside the table, until the user drags the splitter
SERVER_MIN = 160  # the least of Server (it stretches) before Details moves under the table
_INTERACTIVE = (NAME, SCOPES)  # the columns a user sizes; the others size themselves


def _as_int(value: object) -> int | None:
    """A small non-negative int from the INI file (text) or from this process's QSettings cache (int)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 100_000 else None
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 6 else None


class MainWindow(QMainWindow):
    """`settings_path`: an INI file for what the window remembers between runs (None: nothing)."""

    def __init__(
        self, bridge: Bridge, *, model: ConnectionsModel | None = None, settings_path: Path | None = None
    ) -> None:
        super().__init__()
        self.bridge = bridge
        self.tray: Any = None
        self.quitting = False
        self.dialogs: list[Any] = []
        self.settings_path = settings_path
        self.setWindowTitle("MCP Token Broker")
        self.setWindowIcon(app_icon())
        self.resize(*DEFAULT_SIZE)
        self.setMinimumSize(*MINIMUM_SIZE)
        self._details_width = DETAILS_WIDTH
        self._select_when_listed: str | None = None  # just added: select once the service lists it
        self._details_hidden_while_empty = False

        self.model = model or ConnectionsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter connections  (Ctrl+F)")
        self.filter.setClearButtonEnabled(True)
        self.filter.setAccessibleName("Filter connections")
        self.filter.setToolTip("Show only connections whose name, server, status or scopes contain this text")
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)

        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a URL's host and its end both matter
        self.table.setWordWrap(False)  # one line a row: wrapping would split URLs instead of eliding them
        header = self.table.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(SERVER, QHeaderView.ResizeMode.Stretch)
        for col in (STATUS, EXPIRES, LAST):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setColumnWidth(NAME, 130)
        self.table.setColumnWidth(SCOPES, 150)
        self.table.setAccessibleName("Connections")
        self.table.doubleClicked.connect(self._open_details)

        self.empty = QWidget()
        empty_layout = QVBoxLayout(self.empty)
        empty_layout.addStretch(1)
        headline = self.empty_headline = QLabel("Add your first MCP server")
        headline.setAlignment(Qt.AlignmentFlag.AlignCenter)
        headline.setStyleSheet("font-size: 18px; font-weight: 600;")
        explain = QLabel(
            "Add the URL of a remote MCP server (GitHub, Linear, Sentry, your own).\n"
            "The broker logs in once through your browser, keeps the tokens encrypted and fresh,\n"
            "and hands them to Claude Code, Cursor, VS Code and your own agents."
        )
        explain.setAlignment(Qt.AlignmentFlag.AlignCenter)
        explain.setWordWrap(True)
        self.empty_add = QPushButton("&Add an MCP server…")
        self.empty_add.setToolTip("Paste a server URL and see how it authorizes clients")
        self.empty_add.clicked.connect(self.add_connection)
        empty_layout.addWidget(headline)
        empty_layout.addWidget(explain)
        empty_layout.addWidget(self.empty_add, 0, Qt.AlignmentFlag.AlignCenter)
        # Someone coming from per-client logins already has servers configured somewhere.
        self.empty_import = QPushButton("&Import from Claude, Cursor, VS Code, Codex…")
        self.empty_import.setToolTip("Add the remote MCP servers your other MCP clients are configured with")
        self.empty_import.clicked.connect(self.import_connections)
        empty_layout.addWidget(self.empty_import, 0, Qt.AlignmentFlag.AlignCenter)
        empty_layout.addStretch(2)

        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        self.connections_box = QWidget()
        layout = self._connections_layout = QVBoxLayout(self.connections_box)
        layout.addWidget(self.filter)
        layout.addWidget(self.stack)

        self.details = DetailsPane(bridge)
        # Details beside the table when both fit, under it when not (see _fit_splitter).
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("splitter")
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.connections_box)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 1)  # the table takes what the window gains; Details keeps its width
        self.splitter.setStretchFactor(1, 0)
        self.splitter.setSizes([DEFAULT_SIZE[0] - DETAILS_WIDTH, DETAILS_WIDTH])
        self.splitter.splitterMoved.connect(self._splitter_moved)
        header.sectionResized.connect(lambda *_: self._fit_splitter())  # a status grew, a column was dragged
        self.splitter.installEventFilter(self)
        self.setCentralWidget(self.splitter)
        self.details.connectRequested.connect(self.connect_connection)
        self.details.disconnectRequested.connect(self.disconnect_connection)
        self.details.removeRequested.connect(self.remove_connection)
        self.details.copied.connect(
            lambda client: self.statusBar().showMessage(f"Copied the {client} configuration", 5000)
        )

        self._make_actions()
        self.status_label = QLabel()
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)  # shows the socket path
        self.status_label.setAccessibleName("Service status")
        self.statusBar().addPermanentWidget(self.status_label)

        self.model.modelReset.connect(self._update_empty_state)
        self.model.rowsInserted.connect(self._update_empty_state)
        self.model.rowsRemoved.connect(self._update_empty_state)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        # The filter can hide the selected row without a selection change: look again.
        for signal in (self.proxy.rowsRemoved, self.proxy.modelReset, self.proxy.layoutChanged):
            signal.connect(self._selection_changed)
        self.model.dataChanged.connect(self._update_actions)

        bridge.connectionChanged.connect(self._connection_changed)
        bridge.connectionRemoved.connect(self._connection_removed)
        bridge.refreshStarted.connect(self.model.refresh_started)
        bridge.tokenRefreshed.connect(self._refreshed)
        bridge.refreshFailed.connect(self._refresh_failed)
        bridge.reauthRequired.connect(self._reauth_required)
        bridge.scopeStepUp.connect(self._scope_step_up)
        bridge.clientAsked.connect(self.ask_approval)
        bridge.tokenServed.connect(self._token_served)
        bridge.showRequested.connect(self.bring_to_front)
        self._update_empty_state()
        self._selection_changed()
        self.status_label.setText("Starting the broker…")
        bridge.ready.connect(self.reload)
        self.settings = self._open_settings(settings_path)
        self._restore()

    # -- setup ------------------------------------------------------------------------

    def _action(self, text: str, shortcut: Any, tip: str, slot: Any) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        self.addAction(action)
        return action

    def _make_actions(self) -> None:
        self.add_action = self._action(
            "&Add…", QKeySequence.StandardKey.New, "Add a remote MCP server (Ctrl+N)", self.add_connection
        )
        self.import_action = self._action(
            "&Import…", None, "Add the servers your other MCP clients use", self.import_connections
        )
        self.connect_action = self._action(
            "&Connect",
            "Ctrl+Return",
            "Log in to the selected server (Ctrl+Enter)",
            lambda: self._with_selected(self.connect_connection),
        )
        self.disconnect_action = self._action(
            "&Disconnect",
            "Ctrl+D",
            "Revoke and forget the selected connection's tokens (Ctrl+D)",
            lambda: self._with_selected(self.disconnect_connection),
        )
        self.remove_action = self._action(
            "&Remove",
            QKeySequence.StandardKey.Delete,
            "Forget the selected connection (Del)",
            lambda: self._with_selected(self.remove_connection),
        )
        self.details_action = self._action(
            "De&tails", "Ctrl+I", "Show or hide the details pane (Ctrl+I)", self._toggle_details
        )
        self.details_action.setCheckable(True)
        self.details_action.setChecked(True)
        self.clients_action = self._action(
            "C&lients…", "Ctrl+K", "Applications you allowed or refused (Ctrl+K)", self.show_clients
        )
        self.settings_action = self._action(
            "&Settings…",
            "Ctrl+,",  # QKeySequence.Preferences is empty on Linux and Windows; Qt shows Cmd+, on macOS
            "Client policy, refresh margin, start at login",
            self.show_settings,
        )
        self.quit_action = self._action(
            "&Quit", QKeySequence.StandardKey.Quit, "Stop the broker and quit (Ctrl+Q)", self.quit
        )
        self.find_action = self._action(
            "&Find", QKeySequence.StandardKey.Find, "Filter the connections (Ctrl+F)", lambda: self.filter.setFocus()
        )
        toolbar = self.addToolBar("Actions")
        toolbar.setObjectName("actions")
        for action in (
            self.add_action,
            self.connect_action,
            self.disconnect_action,
            self.remove_action,
            self.details_action,
            self.clients_action,
            self.settings_action,
        ):
            toolbar.addAction(action)
        menu = self.menuBar().addMenu("&Broker")
        for action in (
            self.add_action,
            self.import_action,
            self.connect_action,
            self.disconnect_action,
            self.remove_action,
        ):
            menu.addAction(action)
        menu.addSeparator()
        for action in (self.clients_action, self.settings_action, self.find_action):
            menu.addAction(action)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        self.about_action = self._action("&About MCP Token Broker", None, "The version and the project", self.about)
        self.menuBar().addMenu("&Help").addAction(self.about_action)

    def about_text(self) -> str:
        from broker import __version__

        return (
            f"<b>MCP Token Broker {__version__}</b><br>"
            "Holds, refreshes and hands out the OAuth tokens of your remote MCP servers."
        )

    def about(self) -> None:
        QMessageBox.about(self, "About MCP Token Broker", self.about_text())

    def reload(self) -> None:
        if not self.bridge.is_ready:
            return

        def views(service: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            return service.views(), service.health()

        self.bridge.call(views, self._loaded)

    def _loaded(self, result: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
        views, health = result
        selected = self.selected_name()
        self.model.set_views(views)
        if selected is None and self.model.rowCount() == 1:
            selected = self.model.names()[0]  # the only one: show it
        if selected is not None:
            self.select(selected)
        self.status_label.setText(self._status_text(health))

    def _status_text(self, health: dict[str, Any]) -> str:
        count = health["connections"]
        where = f"on {self.bridge.service.socket_path} · policy: {health['policy']}"
        if count == 0:
            return f"No connections yet · serving {where}"
        return f"Serving {count} connection{'' if count == 1 else 's'} {where}"

    # -- state ----------------------------------------------------------------------------

    def _update_empty_state(self, *args: Any) -> None:
        empty = self.model.rowCount() == 0
        self.stack.setCurrentWidget(self.empty if empty else self.table)
        self.filter.setVisible(not empty)
        # No connections: the window says what to do, not a pane of dashes.
        if empty and not self.details.isHidden():
            self.details.hide()
            self._details_hidden_while_empty = True
        elif not empty and self._details_hidden_while_empty:
            self._details_hidden_while_empty = False
            self.details.show()
            self._apply_sizes()
        self.details_action.setEnabled(not empty)
        self._fit_splitter()

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(NAME_ROLE) if rows else None

    def select(self, name: str) -> None:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(NAME_ROLE) == name:
                self.table.selectRow(row)
                return

    def _selection_changed(self, *args: Any) -> None:
        name = self.selected_name()
        self._update_actions()
        if name is None or name != self.details.name:
            self.details.show_connection(name)

    def _update_actions(self, *args: Any) -> None:
        """The toolbar says what Details says: Reconnect once connected; Disconnect only then."""
        name = self.selected_name()
        row = self.model.row(name) if name is not None else None
        connected = row is not None and row.status != Status.NOT_CONNECTED
        self.connect_action.setEnabled(row is not None)
        self.remove_action.setEnabled(row is not None)
        self.disconnect_action.setEnabled(connected)
        self.connect_action.setText("Re&connect" if connected else "&Connect")

    def _with_selected(self, fn: Any) -> None:
        name = self.selected_name()
        if name is not None:
            fn(name)

    def _connection_changed(self, name: str, view: dict[str, Any]) -> None:
        self.model.upsert(name, view)
        if name == self._select_when_listed:
            self._select_when_listed = None
            self.filter.clear()  # a filter must not hide what was just added
            self.select(name)
        elif name == self.selected_name():
            self.details.refresh()
        self.reload_status()

    def _connection_removed(self, name: str) -> None:
        self.model.remove(name)
        self.reload_status()

    def _refreshed(self, name: str, expires_at: Any) -> None:
        self.model.refreshed(name, expires_at)
        self.details.refresh_soon(name)
        if self.tray is not None:
            self.tray.refreshed(name)

    def _refresh_failed(self, name: str, error: str, retry_at: Any) -> None:
        self.model.refresh_failed(name, error)
        self.details.refresh_soon(name)
        if self.tray is not None:
            self.tray.notify_refresh_failed(name, error)

    def _reauth_required(self, name: str, reason: str) -> None:
        self.model.reauth_required(name)
        self.details.refresh_soon(name)
        if self.tray is not None:
            self.tray.notify_reauth(name, reason)

    def _scope_step_up(self, name: str, message: str, given_up: bool) -> None:
        self.details.refresh_soon(name)
        if self.tray is not None:
            self.tray.notify_step_up(name, message, given_up)

    def _token_served(self, name: str, client: str, pid: Any) -> None:
        self.statusBar().showMessage(f"Gave {name}'s token to {client} (pid {pid})", 4000)
        self.details.refresh_soon(name)  # Recent activity, live

    def reload_status(self) -> None:
        self.bridge.call(
            lambda s: s.health(),
            lambda h: self.status_label.setText(self._status_text(h)),
        )

    # -- actions ------------------------------------------------------------------------

    def add_connection(self) -> None:
        from .add_dialog import AddDialog

        dialog = AddDialog(self.bridge, self.model.names(), self)
        dialog.added.connect(self._added)
        self._keep(dialog)
        dialog.open()

    def import_connections(self) -> None:
        from .import_dialog import ImportDialog

        dialog = ImportDialog(self.bridge, self)
        dialog.imported.connect(lambda names: self.statusBar().showMessage(f"Imported {', '.join(names)}", 5000))
        self._keep(dialog)
        dialog.open()

    def _added(self, name: str, connect_now: bool) -> None:
        self.statusBar().showMessage(f"Added {name}", 5000)
        if self.model.row(name) is not None:
            self.filter.clear()
            self.select(name)
        else:
            self._select_when_listed = name
        if connect_now:
            self.connect_connection(name)

    def connect_connection(self, name: str) -> ConnectDialog:
        from .connect_dialog import ConnectDialog

        dialog = ConnectDialog(self.bridge, name, self)
        self._keep(dialog)
        dialog.show()
        dialog.start()
        return dialog

    def _confirm(self, title: str, text: str, verb: str) -> bool:
        """Ask with the verb on the button ("Disconnect", not "Yes"); Cancel is the default and Escape."""
        box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, self)
        box.setTextFormat(Qt.TextFormat.PlainText)
        do = box.addButton(verb, QMessageBox.ButtonRole.DestructiveRole)
        cancel = box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(cancel)
        box.setEscapeButton(cancel)
        box.exec()
        return box.clickedButton() is do

    def disconnect_connection(self, name: str, *, confirm: bool = True) -> None:
        if confirm and not self._confirm(
            f"Disconnect {name}?",
            f"The broker revokes {name}'s tokens at the server and forgets them. "
            f"Clients using them stop working until you connect again.",
            "Disconnect",
        ):
            return
        self.bridge.run(lambda s: s.disconnect(name), lambda r: self._disconnected(name, r), self._error)

    def _disconnected(self, name: str, result: dict[str, Any]) -> None:
        revocation = result.get("revocation") or {}
        if not revocation.get("still_valid"):
            self._after(f"Disconnected {name}", result)
            return
        # The tokens keep working elsewhere: too important for the status bar
        # alone. Window-modal, not a nested event loop: the broker goes on.
        self.statusBar().showMessage(f"Disconnected {name}; not revoked at the server", 8000)
        title = f"{name}: not revoked at the server"
        box = QMessageBox(QMessageBox.Icon.Warning, title, str(result.get("warning") or ""), parent=self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # the line quotes the server
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self._keep(box)
        box.open()

    def remove_connection(self, name: str, *, confirm: bool = True) -> None:
        row = self.model.row(name)
        holds_tokens = row is not None and row.status != Status.NOT_CONNECTED
        revokes = f"The broker revokes {name}'s tokens and forgets" if holds_tokens else "The broker forgets"
        if confirm and not self._confirm(f"Remove {name}?", f"{revokes} the connection and its settings.", "Remove"):
            return
        self.bridge.run(lambda s: s.remove(name), lambda r: self._after(f"Removed {name}", r), self._error)

    def _after(self, message: str, result: dict[str, Any]) -> None:
        warning = result.get("warning")
        self.statusBar().showMessage(f"{message}. {warning}" if warning else message, 8000)

    def _error(self, exc: BaseException) -> None:
        from .plaintext import warn

        warn(self, "MCP Token Broker", str(exc))  # may quote a server: plain text

    def _open_details(self, index: QModelIndex) -> None:
        self._toggle_details(True)

    def _toggle_details(self, on: bool) -> None:
        self.details_action.setChecked(on)
        self.details.setVisible(on and self.model.rowCount() > 0)
        self._details_hidden_while_empty = on and self.model.rowCount() == 0
        if self.details.isVisible():
            self._apply_sizes()
        self._fit_splitter()

    # -- layout -----------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt's name
        if watched is self.splitter and event.type() == QEvent.Type.Resize:
            self._fit_splitter()  # before the splitter lays out its new size
        return super().eventFilter(watched, event)

    def _needed_width(self) -> int:
        """The splitter width at which the table (Server at SERVER_MIN) and Details fit side by side."""
        header = self.table.horizontalHeader()
        columns = sum(header.sectionSize(c) for c in range(self.model.columnCount()) if c != SERVER)
        margins = self._connections_layout.contentsMargins()
        chrome = (
            2 * self.table.frameWidth()
            + self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self.table)
            + margins.left()
            + margins.right()
        )
        return columns + SERVER_MIN + chrome + self.splitter.handleWidth() + self._details_width

    def _fit_splitter(self) -> None:
        """Details beside the table when both fit at that width, else under it (no horizontal scrollbar)."""
        if not hasattr(self, "splitter"):
            return
        wide = self.details.isHidden() or self.splitter.width() >= self._needed_width()
        want = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        if self.splitter.orientation() == want:
            return
        self._keep_details_width()
        self.splitter.setOrientation(want)
        self._apply_sizes()

    def _apply_sizes(self) -> None:
        """Details at its remembered width beside the table, or half the height under it."""
        handle = self.splitter.handleWidth()
        if self.splitter.orientation() == Qt.Orientation.Horizontal:
            total = self.splitter.width() - handle
            self.splitter.setSizes([max(total - self._details_width, 1), self._details_width])
        else:
            total = self.splitter.height() - handle
            top = max(total // 2, 1)
            self.splitter.setSizes([top, max(total - top, 1)])

    def _splitter_moved(self, pos: int, index: int) -> None:
        self._keep_details_width()

    def _keep_details_width(self) -> None:
        """Remember Details' width beside the table, for the next time it is there and the next run."""
        width = self.splitter.sizes()[1]
        if self.splitter.orientation() == Qt.Orientation.Horizontal and self.details.isVisible() and width >= 150:
            self._details_width = width

    # -- remembered between runs --------------------------------------------------------------

    @staticmethod
    def _open_settings(path: Path | None) -> QSettings | None:
        if path is None:
            return None
        settings = QSettings(str(path), QSettings.Format.IniFormat)
        if settings.status() != QSettings.Status.NoError:
            # Not ours or damaged: start afresh rather than never writing again.
            del settings
            path.unlink(missing_ok=True)
            settings = QSettings(str(path), QSettings.Format.IniFormat)
        return settings

    def _setting(self, key: str, kind: type) -> Any:
        """The value at `key` if it has the `kind` this window wrote, else None (foreign or damaged files)."""
        if self.settings is None:
            return None
        value = self.settings.value(key)
        if kind is bool:
            return {"true": True, "false": False}.get(str(value).lower()) if isinstance(value, (bool, str)) else None
        if kind is int:
            return _as_int(value)
        if kind is list:
            items = value if isinstance(value, list) else [value] if isinstance(value, str) else None
            return [_as_int(v) for v in items] if items else None
        return value if isinstance(value, kind) else None

    def _restore(self) -> None:
        geometry = self._setting("window/geometry", QByteArray)
        if geometry is not None and not self.restoreGeometry(geometry):
            self.resize(*DEFAULT_SIZE)
        widths = self._setting("window/column_widths", list)
        if widths is not None and len(widths) == self.model.columnCount():
            for col in _INTERACTIVE:
                if widths[col] is not None and 20 <= widths[col] <= 2000:
                    self.table.setColumnWidth(col, widths[col])
        column, order = self._setting("window/sort_column", int), self._setting("window/sort_order", int)
        if column is not None and column < self.model.columnCount() and order in (0, 1):
            self.table.sortByColumn(column, Qt.SortOrder(order))
        details = self._setting("window/details_width", int)
        if details is not None and 150 <= details <= 2000:
            self._details_width = details
            self.splitter.setSizes([max(self.width() - details, 1), details])
        if self._setting("window/maximized", bool):
            self.setWindowState(self.windowState() | Qt.WindowState.WindowMaximized)

    def save_settings(self) -> None:
        if self.settings is None:
            return
        header = self.table.horizontalHeader()
        self._keep_details_width()
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/maximized", self.isMaximized())
        self.settings.setValue("window/column_widths", [header.sectionSize(c) for c in range(self.model.columnCount())])
        self.settings.setValue("window/sort_column", header.sortIndicatorSection())
        self.settings.setValue("window/sort_order", header.sortIndicatorOrder().value)
        self.settings.setValue("window/details_width", self._details_width)
        self.settings.sync()

    def ask_approval(self, request: Any) -> ApprovalDialog:
        from .approval import ApprovalDialog

        dialog = ApprovalDialog(self.bridge, request, parent=self)
        self._keep(dialog)
        dialog.show()
        dialog.raise_()
        return dialog

    def show_clients(self) -> ClientsDialog:
        from .clients import ClientsDialog

        dialog = ClientsDialog(self.bridge, self)
        self._keep(dialog)
        dialog.show()
        return dialog

    def show_settings(self) -> SettingsDialog:
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.bridge, self.bridge.service.current_config(), self)
        dialog.accepted.connect(self.reload_status)
        self._keep(dialog)
        dialog.open()
        return dialog

    def _keep(self, dialog: Any) -> None:
        self.dialogs = [d for d in self.dialogs if d.isVisible()] + [dialog]

    def bring_to_front(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    def quit(self) -> None:
        self.quitting = True
        self.close()
        from PySide6.QtWidgets import QApplication

        QApplication.quit()

    def closeEvent(self, event: QCloseEvent) -> None:  # Qt's name
        self.save_settings()
        if not self.quitting and self.tray is not None and self.tray.icon.isVisible():
            # Keep serving from the tray.
            event.ignore()
            self.hide()
            told = self._setting("notices/tray_shown", bool) or getattr(self, "_told_about_tray", False)
            if not told:  # once ever, not on every close of every run
                self._told_about_tray = True
                if self.settings is not None:
                    self.settings.setValue("notices/tray_shown", True)
                    self.settings.sync()
                self.tray.icon.showMessage(
                    "MCP Token Broker is still running",
                    "It keeps serving tokens from the tray. Quit it from the tray menu.",
                )
            return
        event.accept()
        if not self.quitting:
            from PySide6.QtWidgets import QApplication

            QApplication.quit()
