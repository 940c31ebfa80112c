"""A one-line label that elides what does not fit and keeps the full text in its tool tip.

Word-wrapped labels grow with their text, so a long URL or connection name
pushed the Details pane wider on every selection. This label asks for a
modest width, draws as much as fits, and shows the full value on hover.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from .plaintext import plain_tip

__all__ = ["ElidedLabel"]


class ElidedLabel(QLabel):
    """Plain text (values come from servers), elided by `mode`; `text()` is the full value."""

    def __init__(
        self,
        text: str = "",
        *,
        mode: Qt.TextElideMode = Qt.TextElideMode.ElideRight,
        tip: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._mode = mode
        self._tip = tip
        self._full = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # Qt's name
        self._full = text
        self.setToolTip(plain_tip(f"{text}\n{self._tip}" if self._tip else text))
        self._elide()

    def text(self) -> str:  # Qt's name: the full value, as set
        return self._full

    def full_text(self) -> str:
        return self._full

    def shown_text(self) -> str:
        return super().text()

    def _elide(self) -> None:
        width = max(self.contentsRect().width(), 1)
        super().setText(self.fontMetrics().elidedText(self._full, self._mode, width))

    def resizeEvent(self, event: QResizeEvent) -> None:  # Qt's name
        super().resizeEvent(event)
        self._elide()

    def sizeHint(self) -> QSize:  # Qt's name: not the text's width, so a long value cannot widen the pane
        hint = super().sizeHint()
        return QSize(min(hint.width(), 160), hint.height())

    def minimumSizeHint(self) -> QSize:  # Qt's name
        return QSize(24, super().minimumSizeHint().height())
