#!/usr/bin/env python3
"""Take the README/docs screenshots of the desktop app under Xvfb.

    .venv/bin/python scripts/screenshots.py [OUT_DIR]   (default docs/screenshots)

Starts its own Xvfb (unless DISPLAY is set), runs the real window with the
real broker service on a throwaway registry holding several connections in
different states, and saves PNGs of the main window, the add dialog (after
discovery, and with an error), the settings dialog, the approval dialog and
the tray menu, then the main window and the empty state
(every connection removed) at each of SIZES. Nothing here talks to a network: the demo
tokens carry no refresh token, and discovery results are shown as the add
dialog would show them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = ((1000, 600), (1280, 800), (1920, 1080))


def _die_with_parent() -> None:
    """Xvfb ends with this script even if Qt aborts the process (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_xvfb() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    for display in range(91, 120):
        if not Path(f"/tmp/.X11-unix/X{display}").exists():
            break
    proc = subprocess.Popen(
        ["Xvfb", f":{display}", "-screen", "0", "2000x1200x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )
    os.environ["DISPLAY"] = f":{display}"
    for _ in range(100):
        if Path(f"/tmp/.X11-unix/X{display}").exists():
            return proc
        time.sleep(0.05)
    raise SystemExit("Xvfb did not start")


def demo_discovered(url: str, offered: tuple[str, ...], requested: tuple[str, ...] | None = None) -> object:
    """What discovery would find for a well-behaved demo server at `url`."""
    from broker.model import Discovered
    from broker.oauth.discovery import AuthServerMetadata

    issuer = "https://auth." + url.split("/")[2].split(".", 1)[1]
    server = AuthServerMetadata(
        issuer=issuer,
        authorization_endpoint=f"{issuer}/authorize",
        token_endpoint=f"{issuer}/token",
        registration_endpoint=f"{issuer}/register",
        revocation_endpoint=f"{issuer}/revoke",
        scopes_supported=(*offered, "offline_access"),
        code_challenge_methods_supported=("S256",),
        token_endpoint_auth_methods_supported=("none",),
        grant_types_supported=("authorization_code", "refresh_token"),
        iss_parameter_supported=True,
        client_id_metadata_document_supported=False,
        source="oauth",
        url=f"{issuer}/.well-known/oauth-authorization-server",
    )
    return Discovered(
        issuer=issuer,
        resource=url,
        scopes=(*(requested or offered), "offline_access"),
        scopes_offered=offered,
        registration_method="dynamic",
        resource_metadata_url=None,
        auth_server=server,
    )


def demo_registry(home: Path) -> None:
    from broker.model import ConnectionSettings, ConnectionState
    from broker.oauth.tokens import TokenSet
    from broker.secret import Secret
    from broker.storage.keystore import FileKeyStore
    from broker.storage.paths import Paths
    from broker.storage.store import Store

    now = int(time.time())
    store = Store(Paths.default(), lambda: FileKeyStore(home / "vault.key"))
    demo = [
        ("github", "https://api.githubcopilot.com/mcp/", now + 47 * 60, ("repo", "read:org")),
        ("linear", "https://mcp.linear.app/mcp", now + 23 * 60, ("read", "write")),
        ("sentry", "https://mcp.sentry.dev/mcp", now + 95, ("org:read", "project:read")),
        ("notion", "https://mcp.notion.com/mcp", now - 600, ("read_content",)),
        ("jira", "https://mcp.atlassian.com/v1/sse", now + 3600, ("read:jira-work",)),
        ("internal-docs", "https://mcp.internal.example.com/mcp", None, ()),
    ]
    with store.transaction() as txn:
        for name, url, expires, scopes in demo:
            txn.settings[name] = ConnectionSettings(
                name=name, server_url=url, added_at=now, discovered=demo_discovered(url, scopes)
            )
            if expires is None:
                continue
            txn.states[name] = ConnectionState(
                tokens=TokenSet(
                    access_token=Secret("demo"),
                    token_type="Bearer",
                    expires_at=expires,
                    scope=scopes,
                    refresh_token=None,
                    obtained_at=now - 600,
                ),
                reauth_required=name == "jira",
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(REPO / "docs" / "screenshots"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="broker-screens-"))
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        path = home / var.lower()
        path.mkdir(mode=0o700)
        os.environ[var] = str(path)
    os.environ["MCP_TOKEN_BROKER_KEY_FILE"] = str(home / "vault.key")
    os.environ.pop("MCP_TOKEN_BROKER_SOCKET", None)
    xvfb = start_xvfb()
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    sys.path.insert(0, str(REPO))
    try:
        demo_registry(home)
        return shoot(out)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()
        shutil.rmtree(home, ignore_errors=True)


def shoot(out: Path) -> int:
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QApplication

    from broker.service.identity import ClientIdentity
    from ui.app import build
    from ui.icons import app_icon
    from ui.tray import Tray

    app = QApplication([sys.argv[0]])
    app.setApplicationName("MCP Token Broker")
    app.setWindowIcon(app_icon())

    def settle(seconds: float = 0.6) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    args = argparse.Namespace(minimized=False, policy="ask")
    runner, bridge, window = build(args)
    window.show()  # at its default size
    while not bridge.is_ready:
        settle(0.1)
    settle(1.0)
    window.model.refresh_started("linear")
    window.model.refresh_failed("notion", "token endpoint timed out")
    window.select("github")
    settle(1.0)
    window.grab().save(str(out / "main-window.png"))
    shots = ["main-window"]
    for width, height in SIZES:
        window.resize(width, height)
        settle()
        window.grab().save(str(out / f"main-window-{width}x{height}.png"))
        shots.append(f"main-window-{width}x{height}")
    window.resize(1280, 720)  # the default again, for the dialogs' parent

    # The add dialog, as it looks after discovery.
    window.add_action.trigger()
    dialog = window.dialogs[-1]
    dialog.url.setText("https://mcp.example.com/mcp")
    dialog.name.setText("example")
    discovered = demo_discovered("https://mcp.example.com/mcp", ("mcp:read", "mcp:write"), ("mcp:read",))
    dialog._discovered("https://mcp.example.com/mcp", dialog._options(), discovered)
    settle()
    dialog.grab().save(str(out / "add-dialog.png"))
    dialog.reject()

    # The approval dialog for a client asking under the `ask` policy.
    class DemoRequest:
        connection = "github"
        client = ClientIdentity(
            pid=48213,
            app_pid=48190,
            exe="/usr/bin/node",
            script="/home/dev/.local/share/claude/cli.js",
            name="claude",
            chain=("mcp-token-broker headers", "sh"),
        )

        id = "demo"

        def seconds_left(self) -> float:  # the dialog counts down to the service's deadline
            return 47.0

        def answer(self, decision: str) -> None:
            pass

    approval = window.ask_approval(DemoRequest())
    settle()
    approval.grab().save(str(out / "approval-dialog.png"))
    approval.decision = "shown"
    approval.close()
    shots += shoot_approval(app, window, DemoRequest(), out, settle)

    # The tray menu (drawn as a popup, since Xvfb has no system tray).
    tray = Tray(window.model, window)
    tray.menu.popup(QPoint(40, 40))
    settle()
    tray.menu.grab().save(str(out / "tray-menu.png"))
    tray.menu.close()
    shots += ["add-dialog", "approval-dialog", "tray-menu"]
    shots += shoot_dialogs(window, out, settle)

    # The empty state: every connection removed through the window, as a user would.
    for name in window.model.names():
        window.remove_connection(name, confirm=False)
    while window.model.rowCount():
        settle(0.1)
    window.statusBar().clearMessage()  # "Removed …" belongs to the demo, not to the empty state
    settle()
    for width, height in SIZES:
        window.resize(width, height)
        settle()
        window.grab().save(str(out / f"empty-{width}x{height}.png"))
        shots.append(f"empty-{width}x{height}")

    window.quitting = True
    runner.stop()
    for name in shots:
        print(out / f"{name}.png")
    return 0


def shoot_approval(app, window, request, out: Path, settle) -> list[str]:
    """The approval dialog, counting down, over the window at each of SIZES
    (a grab of the screen's top-left corner, where the window sits)."""
    names = []
    for width, height in SIZES:
        window.move(0, 0)
        window.resize(width, height)
        settle()
        approval = window.ask_approval(request)
        geometry = approval.frameGeometry()
        approval.move((width - geometry.width()) // 2, (height - geometry.height()) // 2)
        settle()
        shot = app.primaryScreen().grabWindow(0, 0, 0, width, height)
        shot.save(str(out / f"approval-{width}x{height}.png"))
        approval.decision = "shown"
        approval.close()
        names.append(f"approval-{width}x{height}")
    window.resize(1280, 720)
    return names


def shoot_dialogs(window, out: Path, settle) -> list[str]:
    """The add dialog with a discovery error, and the settings dialog."""
    from broker.errors import NetworkError

    window.add_action.trigger()
    dialog = window.dialogs[-1]
    dialog.url.setText("mcp.example.com/mcp")  # typed without a scheme: https
    dialog.name.setText("example")
    dialog._discovery_failed(NetworkError("cannot reach mcp.example.com: connection refused (MCP server)"))
    settle()
    dialog.grab().save(str(out / "add-dialog-error.png"))
    dialog.reject()
    settings = window.show_settings()
    settle()
    settings.grab().save(str(out / "settings-dialog.png"))
    settings.settle.stop()  # nothing was changed: write nothing
    settings.done(0)
    return ["add-dialog-error", "settings-dialog", *shoot_device(window, out, settle)]


def shoot_device(window, out: Path, settle) -> list[str]:
    """The Connect dialog in device mode, as the server's answer fills it."""
    from ui.connect_dialog import ConnectDialog

    dialog = ConnectDialog(window.bridge, "github", window, mode="device")
    dialog.stage.setText("Waiting for you to log in on the other device…")
    url = "https://auth.githubcopilot.com/device?user_code=WDJB-MJHT"
    dialog._show_device({"user_code": "WDJB-MJHT", "url": url, "expires_at": time.time() + 599})
    dialog.show()
    settle()
    dialog.grab().save(str(out / "connect-device.png"))
    dialog.timer.stop()
    dialog.finished_ok = False
    dialog.hide()
    dialog.deleteLater()
    return ["connect-device"]


if __name__ == "__main__":
    raise SystemExit(main())
