"""Text from strangers shown as text, never as markup.

Process names and paths (any program can choose them) and what servers send
(issuers, scopes, error messages) reach labels, message boxes and tool tips.
Those guess rich text from the content (Qt::mightBeRichText), so a process
named `x<!--` could hide the rest of a sentence, or a server could draw a
link. Labels get an explicit format; where a label mixes our own bold with
untrusted text, the untrusted part is escaped.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import Qt as QtGui
from PySide6.QtWidgets import QLabel, QMessageBox, QWidget

__all__ = ["escape", "plain_label", "plain_tip", "warn"]


def plain_label(text: str = "", parent: QWidget | None = None) -> QLabel:
    label = QLabel(parent)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setText(text)
    return label


def escape(text: str) -> str:
    """For the untrusted parts of a label that is rich text on purpose."""
    # What html.escape(text, quote=False) does, without importing `html`:
    # its entity table costs ~2 ms before the window's first paint.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_tip(text: str) -> str:
    """A tool tip that shows `text` as it is (tool tips have no text format to set)."""
    return QtGui.convertFromPlainText(text, Qt.WhiteSpaceMode.WhiteSpaceNormal)


def warn(parent: QWidget | None, title: str, text: str, icon: QMessageBox.Icon = QMessageBox.Icon.Warning) -> None:
    """QMessageBox.warning (or `icon`), with the text shown as plain text (errors quote servers)."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.exec()
