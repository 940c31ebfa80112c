"""The security check as a list of icon + label rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from .plaintext import escape, plain_label, plain_tip

if TYPE_CHECKING:
    from broker.oauth.checklist import CheckItem

__all__ = ["ChecklistView"]

_MARK = {"pass": ("✔", "#1a7f37"), "warn": ("!", "#9a6700"), "fail": ("✘", "#cf222e"), "unknown": ("?", "#57606a")}
_WORD = {"pass": "passes", "warn": "warning", "fail": "fails", "unknown": "not known yet"}


class ChecklistView(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        self.setAccessibleName("Security check")
        self.labels: list[QLabel] = []
        placeholder = plain_label("—")
        self._layout.addWidget(placeholder)
        self.labels.append(placeholder)

    def set_items(self, items: list[CheckItem]) -> None:
        for label in self.labels:
            self._layout.removeWidget(label)
            label.hide()  # at once: deleteLater waits for the event loop, and it would overlap the new rows
            label.deleteLater()
        self.labels = []
        for item in items:
            mark, color = _MARK[item.verdict]
            label = QLabel(f'<span style="color:{color}; font-weight:bold">{mark}</span>&nbsp; {escape(item.label)}')
            label.setTextFormat(Qt.TextFormat.RichText)  # our mark; the label's text escaped
            label.setToolTip(plain_tip(item.detail))  # details quote what the server sent
            label.setAccessibleName(f"{item.label}: {_WORD[item.verdict]}. {item.detail}")
            self._layout.addWidget(label)
            label.show()  # now, not on Qt's queued show: the dialog sizes itself to the rows at once
            self.labels.append(label)
