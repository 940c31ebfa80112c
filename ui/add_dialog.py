"""Add connection: paste a URL, see what discovery finds, then add it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Qt, Signal
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
from broker.oauth.urls import canonical_server_url

from .bridge import Bridge
from .checklist_view import ChecklistView

__all__ = ["AddDialog"]

_METHODS = {
    "preregistered": "Pre-registered client id (yours)",
    "metadata_document": "Client ID metadata document",
    "dynamic": "Dynamic client registration (RFC 7591), done for you",
}


def _suggest_name(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    parts = [p for p in host.split(".") if p not in ("www", "mcp", "api", "com", "org", "net", "io", "app", "dev")]
    base = parts[0] if parts else host.split(".")[0] if host else ""
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in base)[:64]
    return cleaned.strip("-._")


def _error_label() -> QLabel:
    label = QLabel()
    label.setTextFormat(Qt.TextFormat.PlainText)  # errors quote what the server sent
    label.setWordWrap(True)
    label.setStyleSheet("color: #cf222e;")
    label.setVisible(False)
    label.setAccessibleName("Error")
    return label


class AddDialog(QDialog):
    #: Emitted with the connection name after it was added; `connect_now` tells whether to log in.
    added = Signal(str, bool)

    def __init__(self, bridge: Bridge, existing: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.existing = set(existing)
        self.discovered: dict[str, Any] | None = None
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

        self.connect_now = QCheckBox("&Log in right after adding")
        self.connect_now.setChecked(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.add_button = self.buttons.addButton("&Add", QDialogButtonBox.ButtonRole.AcceptRole)
        self.add_button.setEnabled(False)
        self.add_button.setToolTip("Discover the server first")

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.advanced)
        layout.addWidget(self.status)
        layout.addWidget(self.discover_error)
        layout.addWidget(self.results)
        layout.addWidget(self.connect_now)
        layout.addWidget(self.buttons)

        self.discover_button.clicked.connect(self.discover)
        self.url.returnPressed.connect(self.discover)
        self.url.textEdited.connect(self._url_edited)
        self.name.textEdited.connect(self._validate_name)
        self.buttons.rejected.connect(self.reject)
        self.add_button.clicked.connect(self.add)
        self._name_touched = False
        self.name.textEdited.connect(lambda _t: setattr(self, "_name_touched", True))

    # -- validation -------------------------------------------------------------

    def _show(self, label: QLabel, text: str | None) -> None:
        label.setText(text or "")
        label.setVisible(bool(text))

    def _url_edited(self, text: str) -> None:
        self.discovered = None
        self.add_button.setEnabled(False)
        self._show(self.url_error, None)
        if not self._name_touched:
            self.name.setText(_suggest_name(text.strip()))
            self._validate_name()

    def _validate_url(self) -> str | None:
        try:
            url = canonical_server_url(self.url.text())
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
        url = self._validate_url()
        if url is None:
            return
        options = self._options()
        self.discover_button.setEnabled(False)
        self._show(self.discover_error, None)
        self.status.setText("Discovering…")

        async def run(service: Any) -> Any:
            return await service.discover(url, scopes=options["scopes"], client_id=options["client_id"])

        self.bridge.run(run, lambda d: self._discovered(url, options, d), self._discovery_failed)

    def _discovered(self, url: str, options: dict[str, Any], discovered: Any) -> None:
        self.discover_button.setEnabled(True)
        self.status.setText("")
        self.discovered = {"url": url, "discovered": discovered}
        self.issuer.setText(discovered.issuer)
        self.offered.setText(" ".join(discovered.scopes_offered or ()) or "(not listed)")
        self.requested.setText(" ".join(discovered.scopes) or "(the server's default)")
        self.method.setText(_METHODS.get(discovered.registration_method, discovered.registration_method))
        self.checklist.set_items(security_check(discovered.auth_server, resource_sent=options["use_resource"]))
        self.add_button.setEnabled(True)
        self.add_button.setToolTip("Add this connection")
        self.add_button.setDefault(True)

    def _discovery_failed(self, exc: BaseException) -> None:
        self.discover_button.setEnabled(True)
        self.status.setText("")
        message = str(exc) if isinstance(exc, BrokerError) else f"Unexpected error: {type(exc).__name__}"
        self._show(self.discover_error, f"Discovery failed: {message}")

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
        self.status.setText("Adding…")

        async def run(service: Any) -> Any:
            return await service.add(body)

        def done(_result: Any) -> None:
            self.added.emit(name, self.connect_now.isChecked())
            self.accept()

        def failed(exc: BaseException) -> None:
            self.add_button.setEnabled(True)
            self.status.setText("")
            self._show(self.discover_error, f"Could not add: {exc}")

        self.bridge.run(run, done, failed)
