"""`mcp-token-broker gui`: the desktop app, with the broker service inside."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.service.service import BrokerService

    from .bridge import Bridge, ServiceRunner
    from .main_window import MainWindow

__all__ = ["build", "main"]


def _already_running() -> int | None:
    """If a broker already serves the socket: ask its window to show (exit 0),
    or explain that a headless one is in the way. None: nothing runs."""
    from broker.client.api_client import BrokerClient, ServiceError

    client = BrokerClient(timeout=5)
    if not client.is_running():
        return None
    try:
        client.request("POST", "/v1/ui/show")
        return 0
    except ServiceError:
        from PySide6.QtWidgets import QMessageBox

        health = client.health()
        QMessageBox.critical(
            None,
            "MCP Token Broker",
            f"A headless broker service (mcp-token-broker serve, pid {health.get('pid')}) is already running.\n\n"
            "Stop it to use the desktop app; the app runs the same service inside it.",
        )
        return 6


def build(
    args: argparse.Namespace, *, make_service: Callable[[], BrokerService] | None = None
) -> tuple[ServiceRunner, Bridge, MainWindow]:
    """Create the runner, bridge and window (tests call this with their own service).

    Only Qt and the window's own modules load on the GUI thread before the
    first paint; the service, its dependencies and the config load on the
    worker thread, built by `broker.compose` as `serve` builds it."""
    from .bridge import Bridge, ServiceRunner
    from .main_window import MainWindow
    from .tray import Tray

    if make_service is None:

        def make_service() -> BrokerService:  # on the worker thread
            from broker.compose import build_service, resolve

            return build_service(resolve(policy=args.policy, default_policy="ask"), ui=True)

    from broker.storage.paths import Paths

    runner = ServiceRunner(make_service)
    bridge = Bridge(runner)
    # Where the rest of the config lives; the file is created on the first close.
    window = MainWindow(bridge, settings_path=Paths.default().config_dir / "window.ini")
    bridge.start()  # the window paints while the service starts on its thread
    if Tray.available():
        tray = Tray(window.model, window)
        tray.openRequested.connect(window.bring_to_front)
        tray.quitRequested.connect(window.quit)
        tray.show()
        window.tray = tray
    return runner, bridge, window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-token-broker gui", description="The MCP Token Broker desktop app.")
    parser.add_argument("--minimized", action="store_true", help="start in the tray (as at login)")
    parser.add_argument("--policy", choices=("ask", "allow", "deny"), help="override the client policy for this run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from broker.service.hardening import harden_process

    harden_process()  # here, not in `gui`: exec undoes PR_SET_DUMPABLE

    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and not os.environ.get("QT_QPA_PLATFORM")
    ):
        # Qt would abort with a message about platform plugins; say what to do instead.
        sys.stderr.write(
            "mcp-token-broker: no graphical display (DISPLAY and WAYLAND_DISPLAY are unset).\n"
            "On a headless machine run the service instead: mcp-token-broker serve\n"
        )
        return 2

    from PySide6.QtWidgets import QApplication, QMessageBox

    from broker.errors import BrokerError

    from .icons import app_icon
    from .plaintext import warn

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication([sys.argv[0]])
    app.setApplicationName("MCP Token Broker")
    app.setDesktopFileName("mcp-token-broker")
    app.setWindowIcon(app_icon())
    app.setQuitOnLastWindowClosed(False)

    try:
        from broker.client.socketdir import prepare_socket_dir
        from broker.client.socketpath import socket_location

        prepare_socket_dir(*socket_location())  # ours alone, or refuse (before the service puts its lock there)
        running = _already_running()
    except BrokerError as exc:
        warn(None, "MCP Token Broker could not start", str(exc), QMessageBox.Icon.Critical)
        return exc.exit_code
    if running is not None:
        return running
    runner, bridge, window = build(args)
    exit_code = 0

    def failed(exc: BaseException) -> None:
        nonlocal exit_code
        exit_code = exc.exit_code if isinstance(exc, BrokerError) else 1
        warn(window, "MCP Token Broker could not start", str(exc), QMessageBox.Icon.Critical)
        app.quit()

    bridge.failed.connect(failed)
    if not (args.minimized and getattr(window, "tray", None) is not None):
        window.show()
    app.aboutToQuit.connect(runner.stop)
    code = app.exec()
    return exit_code or code
