"""The Clients view: which application may have which token; revoke."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from broker.service.grants import scope_words

from .bridge import Bridge
from .plaintext import plain_tip

__all__ = ["ClientsDialog"]


class ClientsDialog(QDialog):
    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.grants: list[dict[str, Any]] = []
        self.setWindowTitle("Clients")
        self.resize(720, 360)
        intro = QLabel("Applications you allowed or refused. Others follow the client policy in Settings.")
        intro.setWordWrap(True)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Application", "Connection", "Decision", "For", "Since"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setAccessibleName("Grants")
        self.revoke = QPushButton("&Revoke")
        self.revoke.setToolTip("Forget this decision; the application will be asked (or follow the policy) again")
        self.revoke.setEnabled(False)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.revoke, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.table.itemSelectionChanged.connect(lambda: self.revoke.setEnabled(bool(self.table.selectedItems())))
        self.revoke.clicked.connect(self._revoke)
        self.reload()

    def reload(self) -> None:
        self.bridge.call(lambda s: s.list_grants(), self._show)

    def _show(self, grants: list[dict[str, Any]]) -> None:
        self.grants = grants
        self.table.setRowCount(len(grants))
        for row, g in enumerate(grants):
            cells = [
                g["client_name"],
                g["connection"],
                "Allow" if g["allow"] else "Deny",
                scope_words(g["scope"]),  # the approval dialog's words
                time.strftime("%Y-%m-%d %H:%M", time.localtime(g["created_at"])),
            ]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 0:
                    item.setToolTip(plain_tip(g["client_key"].replace("\0", " ")))  # a path any program can pick
                self.table.setItem(row, col, item)

    def _revoke(self) -> None:
        rows = {i.row() for i in self.table.selectedItems()}
        if not rows:
            return
        gid = self.grants[rows.pop()]["id"]
        self.bridge.run(lambda s: s.revoke_grant(gid), lambda _r: self.reload())
