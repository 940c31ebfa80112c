"""Add connection: paste a URL, see what discovery finds, then add it.

Discovery starts by itself a moment after the URL stops changing (and at
once with Discover or Enter); a line under the form says why Add is not
available yet.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from broker.errors import BrokerError, InvalidName, InvalidURL
from broker.model import check_name
from broker.oauth.checklist import security_check
from broker.oauth.urls import canonical_server_url, suggest_name, typed_server_url

from .bridge import Bridge
from .checklist_view import ChecklistView

__all__ = ["AddDialog"]

log = logging.getLogger(__name__)

_METHODS = {
    "preregistered": "Pre-registered client id (yours)",
    "metadata_document": "Client ID metadata document",
    "dynamic": "Dynamic client registration (RFC 7591), done for you",
}


def _error_label() -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)  # errors quote what the server sent
    label.setWordWrap(True)
    label.setStyleSheet("color: #cf222e;")
    label.setVisible(False)
    label.setAccessibleName("Error")
    return label


def _for_people(exc: BaseException) -> str:
    """A BrokerError's sentence; anything else is a bug: logged, and not named to the user."""
    if isinstance(exc, BrokerError):
        return str(exc)
    log.error("unexpected failure in the Add dialog", exc_info=exc)
    return "something unexpected went wrong; see the log"


class AddDialog(QDialog):
    #: Emitted with the connection name after it was added; `connect_now` tells whether to log in.
    added = Signal(str, bool)

    def __init__(
        self, bridge: Bridge, existing: list[str], parent: QWidget | None = None, *, debounce_ms: int = 600
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.existing = set(existing)
        self.discovered: dict[str, Any] | None = None
        #: "idle" (no URL yet), "pending" (waiting for typing to pause), "discovering", "failed" or "done".
        self.phase = "idle"
        self._generation = 0  # answers to an older URL are dropped
        self.debounce = QTimer(self)
        self.debounce.setSingleShot(True)
        self.debounce.setInterval(debounce_ms)
        self.debounce.timeout.connect(self.discover)
        self.setWindowTitle("Add an MCP server")
        self.setMinimumWidth(560)

        self.url = QLineEdit()
        self.url.setPlaceholderText("https://mcp.example.com/mcp")
        self.url.setToolTip("The URL of the remote MCP server, as its documentation gives it")
        self.url.setAccessibleName("MCP server URL")
        self.url_error = _error_label()
        self.name = QLineEdit()
        self.name.setPlaceholderText("a short name, e.g. github")
        self.name.setToolTip("Used in `mcp-token-broker token NAME` and client configs: a-z, 0-9, '.', '_', '-'")
        self.name.setAccessibleName("Connection name")
        self.name_error = _error_label()
        self.discover_button = QPushButton("&Discover")
        self.discover_button.setToolTip("Ask the server how it authorizes clients (nothing is stored yet)")

        form = QFormLayout()
        url_row = QHBoxLayout()
        url_row.addWidget(self.url)
        url_row.addWidget(self.discover_button)
        url_label = QLabel("Server &URL:")
        url_label.setBuddy(self.url)
        form.addRow(url_label, url_row)
        form.addRow("", self.url_error)
        form.addRow("&Name:", self.name)
        form.addRow("", self.name_error)

        # Advanced options
        self.advanced = QGroupBox("&Advanced options")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        self.advanced.setToolTip("For providers that need a client you registered yourself, or special settings")
        adv = QFormLayout(self.advanced)
        self.client_id = QLineEdit()
        self.client_id.setAccessibleName("Client id")
        self.client_id.setToolTip(
            "A client id you registered with the provider (leave empty to register automatically)"
        )
        self.client_secret = QLineEdit()
        self.client_secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.client_secret.setAccessibleName("Client secret")
        self.client_secret.setToolTip("That client's secret, if it has one; stored encrypted in the vault")
        self.redirect_port = QSpinBox()
        self.redirect_port.setRange(0, 65535)
        self.redirect_port.setSpecialValueText("any free port")
        self.redirect_port.setAccessibleName("Fixed redirect port")
        self.redirect_port.setToolTip(
            "Only for providers that demand an exact redirect URI such as http://127.0.0.1:PORT/callback"
        )
        self.scopes = QLineEdit()
        self.scopes.setPlaceholderText("as the server suggests")
        self.scopes.setAccessibleName("Requested scopes")
        self.scopes.setToolTip("Space-separated scopes to request instead of the server's suggestion")
        self.no_resource = QCheckBox("Leave out the &resource parameter (RFC 8707)")
        self.no_resource.setToolTip(
            "Only for authorization servers that reject it; tokens may then be valid beyond this server"
        )
        adv.addRow("Client &id:", self.client_id)
        adv.addRow("Client &secret:", self.client_secret)
        adv.addRow("Redirect &port:", self.redirect_port)
        adv.addRow("S&copes:", self.scopes)
        adv.addRow(self.no_resource)

        # Results of discovery
        self.results = QGroupBox("What the server says")
        res = QFormLayout(self.results)
        self.issuer = QLabel("—")
        self.issuer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.offered = QLabel("—")
        self.requested = QLabel("—")
        self.method = QLabel("—")
        for label, tip in (
            (self.issuer, "The authorization server that will issue the tokens"),
            (self.offered, "Scopes the MCP server lists in its metadata"),
            (self.requested, "Scopes the broker will ask for"),
            (self.method, "How the broker identifies itself to the authorization server"),
        ):
            label.setWordWrap(True)
            label.setToolTip(tip)
            label.setTextFormat(Qt.TextFormat.PlainText)  # the server's words, never markup
        res.addRow("Authorization server:", self.issuer)
        res.addRow("Scopes offered:", self.offered)
        res.addRow("Will request:", self.requested)
        res.addRow("Registration:", self.method)
        self.checklist = ChecklistView()
        res.addRow("Security check:", self.checklist)
        self.discover_error = _error_label()
        self.status = QLabel("")
        self.status.setAccessibleName("Discovery status")
        self.status.setVisible(False)  # no empty gap in the form while idle

        self.connect_now = QCheckBox("&Log in right after adding")
        self.connect_now.setChecked(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.add_button = self.buttons.addButton("&Add", QDialogButtonBox.ButtonRole.AcceptRole)
        self.add_button.setEnabled(False)
        self.add_reason = QLabel()
        self.add_reason.setTextFormat(Qt.TextFormat.PlainText)
        self.add_reason.setWordWrap(True)
        self.add_reason.setAccessibleName("Why Add is not available")
        footer = QHBoxLayout()
        footer.addWidget(self.add_reason, 1)
        footer.addWidget(self.buttons)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addWidget(self.status)
        layout.addWidget(self.discover_error)
        layout.addWidget(self.results)
        layout.addWidget(self.connect_now)
        layout.addLayout(footer)

        self.discover_button.clicked.connect(self.discover)
        self.url.returnPressed.connect(self.discover)
        self.url.textEdited.connect(self._url_edited)
        self.name.textEdited.connect(self._name_edited)
        self.buttons.rejected.connect(self.reject)
        self.add_button.clicked.connect(self.add)
        self._name_touched = False
        self.name.textEdited.connect(lambda _t: setattr(self, "_name_touched", True))
        self._update_add()

    # -- validation -------------------------------------------------------------

    def _show(self, label: QLabel, text: str | None) -> None:
        label.setText(text or "")
        label.setVisible(bool(text))
        if text:
            self._fit()

    def _set_status(self, text: str) -> None:
        self.status.setText(text)
        self.status.setVisible(bool(text))

    def sizeHint(self) -> QSize:  # Qt's name
        """Qt's hint is computed at the narrowest width, where wrapped lines are
        tallest; the dialog is never that narrow, so ask at its real width."""
        hint = super().sizeHint()
        width = max(hint.width(), self.minimumWidth(), self.width() if self.isVisible() else 0)
        return QSize(width, self.heightForWidth(width) if self.hasHeightForWidth() else hint.height())

    def _fit(self) -> None:
        """Grow to show what just appeared (an error line, the check rows);
        Qt would otherwise squeeze it into the old height."""
        layout = self.layout()
        if layout is None:
            return
        layout.activate()
        hint = self.sizeHint()
        if self.height() < hint.height() or self.width() < hint.width():
            self.resize(max(self.width(), hint.width()), max(self.height(), hint.height()))

    def _update_add(self) -> None:
        """Enable Add only when it can work, and otherwise say why in one line."""
        name = self.name.text().strip()
        if self.phase == "idle" or not self.url.text().strip():
            reason = "Enter the server's URL."
        elif self.url_error.isVisible():
            reason = "Correct the server's URL."
        elif self.phase in ("pending", "discovering"):
            reason = "Checking…"
        elif self.phase == "failed":
            reason = "Discovery failed (see above)."
        elif not name:
            reason = "Give the connection a name."
        elif name in self.existing:
            reason = "Name already used."
        elif self.name_error.isVisible():
            reason = "Choose a valid name."
        else:
            reason = ""
        ready = self.phase == "done" and self.discovered is not None and not reason
        self.add_button.setEnabled(ready)
        self.add_button.setToolTip("Add this connection" if ready else reason)
        self.add_reason.setText(reason)
        self.add_reason.setVisible(bool(reason))
        self._fit()

    def _url_edited(self, text: str) -> None:
        self.discovered = None
        self._generation += 1  # a discovery still running is for another URL now
        self.discover_button.setEnabled(True)
        self._set_status("")
        self._show(self.url_error, None)
        self._show(self.discover_error, None)
        self.phase = "pending" if text.strip() else "idle"
        if not self._name_touched:
            self.name.setText(suggest_name(typed_server_url(text)))
            self._validate_name()
        if text.strip():
            self.debounce.start()  # restarts: discovery waits for a pause in typing
        else:
            self.debounce.stop()
        self._update_add()

    def _validate_url(self) -> str | None:
        try:
            url = canonical_server_url(typed_server_url(self.url.text()))
        except InvalidURL as exc:
            self._show(self.url_error, str(exc))
            return None
        self._show(self.url_error, None)
        return url

    def _validate_name(self, *_: Any) -> str | None:
        name = self.name.text().strip()
        try:
            check_name(name)
        except InvalidName as exc:
            self._show(self.name_error, str(exc) if name else "Give the connection a name.")
            return None
        if name in self.existing:
            self._show(self.name_error, f"A connection named {name!r} already exists.")
            return None
        self._show(self.name_error, None)
        return name

    def _name_edited(self, *_: Any) -> None:
        self._validate_name()
        self._update_add()

    def _options(self) -> dict[str, Any]:
        advanced = self.advanced.isChecked()
        return {
            "scopes": tuple(self.scopes.text().split()) if advanced else (),
            "client_id": (self.client_id.text().strip() or None) if advanced else None,
            "client_secret": (self.client_secret.text() or None) if advanced else None,
            "redirect_port": (self.redirect_port.value() or None) if advanced else None,
            "use_resource": not (advanced and self.no_resource.isChecked()),
        }

    # -- discovery ----------------------------------------------------------------

    def discover(self) -> None:
        self.debounce.stop()  # pressed Discover (or Enter): no second run after the pause
        if not self.url.text().strip():
            self.phase = "idle"
            self._update_add()
            return
        url = self._validate_url()
        if url is None:
            self.phase = "failed"
            self._update_add()
            return
        options = self._options()
        self._generation += 1
        generation = self._generation
        self.discovered = None
        self.phase = "discovering"
        self.discover_button.setEnabled(False)
        self._show(self.discover_error, None)
        self._set_status("Discovering…")
        self._update_add()

        async def run(service: Any) -> Any:
            return await service.discover(url, scopes=options["scopes"], client_id=options["client_id"])

        def done(discovered: Any) -> None:
            if generation == self._generation:
                self._discovered(url, options, discovered)

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self._discovery_failed(exc)

        self.bridge.run(run, done, failed)

    def _discovered(self, url: str, options: dict[str, Any], discovered: Any) -> None:
        self.discover_button.setEnabled(True)
        self._set_status("")
        self.phase = "done"
        self.discovered = {"url": url, "discovered": discovered}
        self.issuer.setText(discovered.issuer)
        self.offered.setText(" ".join(discovered.scopes_offered or ()) or "(not listed)")
        self.requested.setText(" ".join(discovered.scopes) or "(the server's default)")
        self.method.setText(_METHODS.get(discovered.registration_method, discovered.registration_method))
        self.checklist.set_items(security_check(discovered.auth_server, resource_sent=options["use_resource"]))
        self._update_add()
        self.add_button.setDefault(True)
        self._fit()

    def _discovery_failed(self, exc: BaseException) -> None:
        self.discover_button.setEnabled(True)
        self._set_status("")
        self.phase = "failed"
        message = _for_people(exc)
        self._show(self.discover_error, f"Discovery failed: {message}")
        self._update_add()

    # -- add ----------------------------------------------------------------------------

    def add(self) -> None:
        url = self._validate_url()
        name = self._validate_name()
        if url is None or name is None or self.discovered is None:
            return
        options = self._options()
        body = {
            "name": name,
            "server_url": url,
            "scopes": list(options["scopes"]),
            "client_id": options["client_id"],
            "client_secret": options["client_secret"],
            "redirect_port": options["redirect_port"],
            "use_resource": options["use_resource"],
        }
        self.add_button.setEnabled(False)
        self._set_status("Adding…")

        async def run(service: Any) -> Any:
            return await service.add(body)

        def done(_result: Any) -> None:
            self.added.emit(name, self.connect_now.isChecked())
            self.accept()

        def failed(exc: BaseException) -> None:
            self._set_status("")
            message = _for_people(exc)
            self._show(self.discover_error, f"Could not add: {message}")
            self._update_add()

        self.bridge.run(run, done, failed)
