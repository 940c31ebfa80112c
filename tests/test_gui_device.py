"""The Connect dialog's device login (RFC 8628), with pytest-qt over the real
service and oidc-provider: the code large with a Copy button, the URL host
first, a countdown; the "phone" (tests/helpers/browser.py) finishes it."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtGui import QGuiApplication  # noqa: E402 - after QT_QPA_PLATFORM

from . import test_gui as gui_tests  # noqa: E402 - after QT_QPA_PLATFORM
from .servers.fixtures import BROWSER_SCRIPT  # noqa: E402 - after QT_QPA_PLATFORM

#: The fixture of tests/test_gui.py: the real window over a real service.
gui = gui_tests.gui

pytestmark = pytest.mark.timeout(120)


def phone(url: str, code: str, log) -> None:
    env = {**os.environ, "BROWSER_MODE": "device", "BROWSER_USER_CODE": code, "BROWSER_LOG": str(log)}
    done = subprocess.run([BROWSER_SCRIPT, url], env=env, timeout=60, check=False)
    assert done.returncode == 0, log.read_text()


def wait_for_code(qtbot, dialog) -> str:
    qtbot.waitUntil(lambda: bool(dialog.code.text()), timeout=20000)
    return dialog.code.text()


def test_device_mode_shows_the_code_large_copies_it_and_counts_down(qtbot, gui, stack, tmp_path):
    from ui.connect_dialog import ConnectDialog

    oidc, mcp = stack
    _, bridge, window = gui
    added = gui_tests.add_via_dialog(qtbot, window, "phone", mcp.url)
    added.connect_now.setChecked(False)
    added.add_button.click()
    qtbot.waitUntil(lambda: window.model.row("phone") is not None, timeout=20000)

    dialog = ConnectDialog(bridge, "phone", window, mode="device")
    dialog.show()
    dialog.start()
    code = wait_for_code(qtbot, dialog)
    assert dialog.device.isVisible()
    assert not dialog.links.isVisible()  # no empty browser-link row in device mode
    assert dialog.code.font().pointSizeF() >= 2 * dialog.stage.font().pointSizeF()
    assert dialog.device_url.text() == f"{oidc.issuer}/device"
    assert dialog.where.text().startswith("At 127.0.0.1:")
    assert re.fullmatch(r"The code expires in \d+:\d\d\.", dialog.countdown.text())
    dialog.copy_code.click()
    assert QGuiApplication.clipboard().text() == code

    phone(dialog.device_url.text(), code, tmp_path / "phone.log")
    qtbot.waitUntil(lambda: dialog.finished_ok is True, timeout=30000)
    qtbot.waitUntil(lambda: gui_tests.row_status(window, "phone") == "connected", timeout=10000)


def test_browser_dialog_offers_another_device_and_switches(qtbot, gui, stack, tmp_path):
    from ui.connect_dialog import ConnectDialog

    _, mcp = stack
    _, bridge, window = gui
    added = gui_tests.add_via_dialog(qtbot, window, "other", mcp.url)
    added.connect_now.setChecked(False)
    added.add_button.click()
    qtbot.waitUntil(lambda: window.model.row("other") is not None, timeout=20000)

    dialog = ConnectDialog(bridge, "other", window)
    dialog.show()
    # Ask only whether the server offers device login; no browser login runs.
    bridge.run(lambda s: s.show("other"), dialog._offer_device)
    qtbot.waitUntil(dialog.other_device.isVisible, timeout=10000)
    dialog.other_device.click()
    code = wait_for_code(qtbot, dialog)
    assert not dialog.other_device.isVisible() and not dialog.links.isVisible()
    phone(dialog.device_url.text(), code, tmp_path / "phone.log")
    qtbot.waitUntil(lambda: dialog.finished_ok is True, timeout=30000)
