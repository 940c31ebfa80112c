"""The details pane: one connection in full, never a secret."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QGridLayout,
    QLabel,
    QListWidget,
    QMenu,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .bridge import Bridge
from .checklist_view import ChecklistView
from .elided import ElidedLabel

if TYPE_CHECKING:
    from broker.service.service import BrokerService

__all__ = ["DetailsPane"]


def _label(tip: str, mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight) -> ElidedLabel:
    # Issuers, scopes, client ids: the server's words, shown as plain text on one line,
    # elided (URLs in the middle) so the pane keeps its width; the full value is the tool tip.
    label = ElidedLabel("—", mode=mode, tip=tip)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class DetailsPane(QWidget):
    connectRequested = Signal(str)
    disconnectRequested = Signal(str)
    removeRequested = Signal(str)
    copied = Signal(str)

    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.name: str | None = None
        self.view: dict[str, Any] | None = None
        self.setAccessibleName("Connection details")
        self.title = ElidedLabel("Select a connection")  # may quote an error
        self.title.setStyleSheet("font-size: 15px; font-weight: 600;")
        middle = Qt.TextElideMode.ElideMiddle  # a URL's host and its end both matter
        self.server = _label("The MCP server this connection's tokens are for", middle)
        self.issuer = _label("The authorization server that issues this connection's tokens", middle)
        self.requested = _label("The scopes the broker asked for")
        self.granted = _label("The scopes the authorization server granted (may differ from the request)")
        self.expiry = _label("When the current access token expires")
        # A server's scope challenge (insufficient_scope): what the next login adds.
        self.step_up = _label("Scopes a server asked for that this connection's token lacks")
        self.step_up.setStyleSheet("font-weight: 600;")
        self.refresh_token = _label("Whether the broker holds a refresh token, so it can renew access without you")
        self.registration = _label("How the broker is registered with the authorization server", middle)
        form = QFormLayout()
        form.addRow("Server:", self.server)
        form.addRow("Issuer:", self.issuer)
        form.addRow("Requested scopes:", self.requested)
        form.addRow("Granted scopes:", self.granted)
        form.addRow("Needs more access:", self.step_up)
        self._form = form
        form.setRowVisible(self.step_up, False)
        form.addRow("Token expires:", self.expiry)
        form.addRow("Refresh token:", self.refresh_token)
        form.addRow("Registration:", self.registration)
        self.checklist = ChecklistView()
        form.addRow("Security check:", self.checklist)
        self.audit = QListWidget()
        self.audit.setAccessibleName("Recent token hand-outs")
        self.audit.setToolTip("Which client got this connection's token, and when (from the audit log)")
        self.audit.setMaximumHeight(140)

        self.connect_button = QPushButton("&Connect")
        self.connect_button.setToolTip("Log in through your browser and store the tokens")
        self.disconnect_button = QPushButton("&Disconnect")
        self.disconnect_button.setToolTip("Revoke the tokens at the server and forget them")
        self.remove_button = QPushButton("&Remove")
        self.remove_button.setToolTip("Disconnect and forget this connection")
        # A push button with a menu keeps room for its arrow (a tool button drew it over the text).
        self.copy_button = QPushButton("Copy client &config")
        self.copy_button.setToolTip("Copy a ready-to-paste snippet that makes an MCP client use this connection")
        menu = QMenu(self.copy_button)
        menu.aboutToShow.connect(self._fill_copy_menu)
        self.copy_button.setMenu(menu)
        self.test_button = QPushButton("&Test")
        self.test_button.setToolTip(
            "Check that the MCP server answers with the current token (MCP initialize and tools/list)"
        )
        # The last test's outcome, per connection: what answered and how fast, or the exact failure.
        self.test_result = ElidedLabel(tip="The last Test: the server, its tools, the protocol and the round trip")
        self.test_result.setAccessibleName("Test result")
        self.test_result.hide()
        self._tests: dict[str, str] = {}
        self._testing: set[str] = set()
        # Two rows: "Copy client config" never shares a row with more than Test.
        buttons = QGridLayout()
        for column, b in enumerate((self.connect_button, self.disconnect_button, self.remove_button)):
            buttons.addWidget(b, 0, column)
        buttons.addWidget(self.test_button, 1, 0)
        buttons.addWidget(self.copy_button, 1, 1, 1, 2)

        # The values scroll; the title and the buttons stay in view at any window size.
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        body_layout.addLayout(form)
        body_layout.addWidget(QLabel("Recent activity:"))
        body_layout.addWidget(self.audit)
        body_layout.addStretch(1)
        self.values_area = QScrollArea()
        self.values_area.setWidget(body)
        self.values_area.setWidgetResizable(True)
        self.values_area.setFrameShape(QFrame.Shape.NoFrame)

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.values_area, 1)
        layout.addWidget(self.test_result)
        layout.addLayout(buttons)

        self.connect_button.clicked.connect(lambda: self._emit_for_shown(self.connectRequested))
        self.disconnect_button.clicked.connect(lambda: self._emit_for_shown(self.disconnectRequested))
        self.remove_button.clicked.connect(lambda: self._emit_for_shown(self.removeRequested))
        self.test_button.clicked.connect(self.run_test)
        self._set_enabled(False)
        # Hand-outs can come many a second: reload at most every 300 ms.
        self._soon = QTimer(self)
        self._soon.setSingleShot(True)
        self._soon.setInterval(300)
        self._soon.timeout.connect(self.refresh)

    def _emit_for_shown(self, signal: Any) -> None:
        """A button's request, for the connection the pane shows (if any)."""
        if self.name:
            signal.emit(self.name)

    def _set_enabled(self, on: bool) -> None:
        for b in (self.connect_button, self.disconnect_button, self.remove_button, self.copy_button):
            b.setEnabled(on)
        self.test_button.setEnabled(on and self.name not in self._testing)

    def show_connection(self, name: str | None) -> None:
        self.name = name
        if name is None:
            self.clear()
            return
        self.title.setText(name)
        self._show_test(name)

        async def load(service: BrokerService) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            # Enough entries that a busy proxy, folded to a line a minute, leaves room for the rest.
            return await service.show(name), await service.recent_audit(name, limit=2000)

        self.bridge.run(load, lambda result: self._loaded(name, *result), lambda exc: self._failed(name, exc))

    def clear(self) -> None:
        """Nothing selected: no stale values of the connection shown before."""
        self.name = None
        self.view = None
        self._soon.stop()
        self.title.setText("Select a connection")
        self._form.setRowVisible(self.step_up, False)
        for label in (
            self.server,
            self.issuer,
            self.requested,
            self.granted,
            self.expiry,
            self.refresh_token,
            self.registration,
        ):
            label.setText("—")
        self.checklist.set_items([])
        self.audit.clear()
        self.test_result.hide()
        self.connect_button.setText("&Connect")
        self._set_enabled(False)

    def refresh(self) -> None:
        self.show_connection(self.name)

    def refresh_soon(self, name: str) -> None:
        """`name` changed (a hand-out, a refresh): reload if it is the one shown."""
        if name == self.name and not self._soon.isActive():
            self._soon.start()

    def _failed(self, name: str, exc: BaseException) -> None:
        if name == self.name:
            self.title.setText(f"{name} (could not load: {exc})")

    def _loaded(self, name: str, view: dict[str, Any], audit: list[dict[str, Any]]) -> None:
        if name != self.name:
            return  # the selection moved on
        self.view = view
        self._set_enabled(True)
        connected = view["status"] != "not_connected"
        self.connect_button.setText("Re&connect" if connected else "&Connect")
        self.disconnect_button.setEnabled(connected)
        self.server.setText(view.get("server_url") or "—")
        self.issuer.setText(view.get("issuer") or "—")
        self.requested.setText(" ".join(view.get("requested_scopes") or ()) or "—")
        self.granted.setText(" ".join(view.get("scopes") or ()) or "—")
        step_up = view.get("step_up") or {}
        missing = " ".join(step_up.get("missing") or ())
        if step_up.get("pending"):
            self.step_up.setText(f"{missing}: Reconnect to grant it")
        else:
            self.step_up.setText(f"{missing}: the server did not grant it")
        self._form.setRowVisible(self.step_up, bool(step_up and missing))
        expires = view.get("expires_at")
        self.expiry.setText(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires)) if expires else "—")
        self.refresh_token.setText("Yes: renewed in the background" if view.get("has_refresh_token") else "No")
        reg = view.get("registration") or {}
        self.registration.setText(f"{reg.get('method') or '—'} · client {reg.get('client_id') or '—'}")
        from broker.oauth.checklist import CheckItem

        self.checklist.set_items([CheckItem(**item) for item in view.get("security") or ()])
        self.audit.clear()
        from broker.service.activity import describe, fold

        # One line per client, outcome and minute, newest first ("... got demo's token ×42").
        for item in reversed(fold(audit)[-20:]):
            self.audit.addItem(f"{time.strftime('%H:%M:%S', time.localtime(item.last))}  {describe(item)}")
        if not audit:
            self.audit.addItem("No client has asked for this token yet.")

    def run_test(self) -> None:
        """MCP initialize and tools/list with the current token, on the service's
        loop (the window stays live); "Testing…" until the result comes back."""
        name = self.name
        if name is None or name in self._testing:
            return
        self._testing.add(name)
        self._tests[name] = f"Testing {name}…"
        self._show_test(name)
        self.test_button.setEnabled(False)

        async def check(service: BrokerService) -> Any:
            import asyncio
            import importlib

            # Its imports (httpx2, then the MCP SDK) load in a thread: the loop serves meanwhile.
            probe = await asyncio.to_thread(importlib.import_module, "broker.client.probe")
            return await probe.probe_in_process(service, name)

        self.bridge.run(
            check,
            lambda result: self._tested(name, f"OK: {result.summary()}"),
            lambda exc: self._tested(name, f"Failed: {exc}"),
        )

    def _tested(self, name: str, text: str) -> None:
        self._testing.discard(name)
        self._tests[name] = text
        if name == self.name:
            self._show_test(name)
            self.test_button.setEnabled(self.view is not None)

    def _show_test(self, name: str) -> None:
        text = self._tests.get(name)
        self.test_result.setText(text or "")
        self.test_result.setVisible(text is not None)

    def _fill_copy_menu(self) -> None:
        from broker.cli.snippets import CLIENTS

        menu = self.copy_button.menu()
        if menu.actions():
            return
        for key, label in CLIENTS.items():
            action = QAction(label, menu)
            action.triggered.connect(lambda _checked=False, k=key: self.copy_snippet(k))
            menu.addAction(action)

    def copy_snippet(self, client: str) -> None:
        if self.name is None or self.view is None:
            return
        from broker.cli.snippets import CLIENTS, snippet

        QGuiApplication.clipboard().setText(snippet(client, self.name, self.view["server_url"]))
        self.copied.emit(CLIENTS[client])
