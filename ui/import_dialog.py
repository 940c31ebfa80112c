"""Import: the remote MCP servers other clients use, as checkboxes.

The list comes from broker.importing.scan (Claude Desktop, Claude Code,
Cursor, VS Code, Codex). Nothing is checked at first. Import adds each
checked server through the service (discovery against the real server);
with "Also rewrite the client's config" each checked entry, and only that
entry, is pointed at the broker (a backup is kept beside the file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from broker.errors import BrokerError
from broker.importing.found import FoundServer
from broker.importing.naming import unique_name
from broker.importing.rewrite import by_file, rewrite_file
from broker.importing.scan import CLIENT_NAMES, scan
from broker.oauth.urls import canonical_server_url

from .bridge import Bridge

__all__ = ["ImportDialog"]

log = logging.getLogger(__name__)


def _plain_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)  # paths and URLs come from files we did not write
    label.setWordWrap(True)
    return label


class ImportDialog(QDialog):
    #: The connections imported (added or already here), once Import finished.
    imported = Signal(list)

    def __init__(
        self, bridge: Bridge, parent: QWidget | None = None, *, home: Path | None = None, project: Path | None = None
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.setWindowTitle("Import MCP servers")
        found = scan(home, project=project)
        self.servers: list[FoundServer] = found.servers
        layout = QVBoxLayout(self)
        if self.servers:
            intro = "Remote MCP servers your other clients use. Check the ones to add here:"
        else:
            intro = "No remote MCP servers found in Claude Desktop, Claude Code, Cursor, VS Code or Codex."
        layout.addWidget(_plain_label(intro))
        self.list = QListWidget()
        self.list.setAccessibleName("Servers found")
        for server in self.servers:
            item = QListWidgetItem(
                f"{server.name}  {server.url}  ({CLIENT_NAMES[server.client]}: {server.entry}, via {server.via})"
            )
            item.setToolTip(str(server.path))
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
            self.list.addItem(item)
        self.list.itemChanged.connect(self._update)
        layout.addWidget(self.list)
        self.rewrite_box = QCheckBox("Also rewrite the client's config to go through the broker")
        self.rewrite_box.setToolTip(
            "Only the checked entries change; the original file is kept as a timestamped backup"
        )
        layout.addWidget(self.rewrite_box)
        self.problems = _plain_label("\n".join(found.problems))
        self.problems.setVisible(bool(found.problems))
        layout.addWidget(self.problems)
        self.outcome = _plain_label()
        self.outcome.setVisible(False)
        layout.addWidget(self.outcome)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.import_button = QPushButton("&Import")
        self.import_button.setEnabled(False)
        buttons.addButton(self.import_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.import_button.clicked.connect(self.start_import)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(640, 360)

    def checked(self) -> list[FoundServer]:
        return [s for i, s in enumerate(self.servers) if self.list.item(i).checkState() == Qt.CheckState.Checked]

    def _update(self, *args: Any) -> None:
        self.import_button.setEnabled(bool(self.checked()))

    def start_import(self) -> None:
        picked = self.checked()
        if not picked:
            return
        self.import_button.setEnabled(False)
        self.list.setEnabled(False)
        self._say("Adding…")

        async def run(service: Any) -> list[tuple[FoundServer, str]]:
            by_url = {canonical_server_url(v["server_url"]): v["name"] for v in service.views()}
            names = set(by_url.values())
            done = []
            for server in picked:
                url = canonical_server_url(server.url)
                name = by_url.get(url)
                if name is None:
                    name = unique_name(server.name, names)  # as `import` names it
                    await service.add({"name": name, "server_url": server.url})
                    by_url[url] = name
                    names.add(name)
                done.append((server, name))
            return done

        self.bridge.run(run, self._added, self._failed)

    def _added(self, done: list[tuple[FoundServer, str]]) -> None:
        lines = [f"Added {name} ({server.url})" for server, name in done]
        if self.rewrite_box.isChecked():
            for group in by_file(done):  # a file's entries in one read, one backup, one write
                try:
                    backup = rewrite_file(group)
                except BrokerError as exc:
                    lines.append(f"Not rewritten: {exc}")
                else:
                    lines += [f"Rewrote {server.entry} in {server.path} (backup {backup.name})" for server, _ in group]
        self._say("\n".join(dict.fromkeys(lines)))
        self.imported.emit([name for _, name in done])

    def _failed(self, exc: BaseException) -> None:
        if not isinstance(exc, BrokerError):
            log.error("import failed", exc_info=exc)
        self._say(str(exc) if isinstance(exc, BrokerError) else "The import failed; see the log.")
        self.list.setEnabled(True)
        self._update()

    def _say(self, text: str) -> None:
        self.outcome.setText(text)
        self.outcome.setVisible(True)
