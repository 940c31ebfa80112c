"""Details' Test button (issue 11, item 7): MCP initialize and tools/list with the
current token, off the GUI thread, against the real servers.

The button says "Testing…" at once (the window keeps working), then the
server's name, tool count, protocol and round-trip time, or the exact failure.
"""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from broker.client.api_client import BrokerClient  # noqa: E402 - after QT_QPA_PLATFORM

from .servers.fixtures import start_mcp_server  # noqa: E402 - after QT_QPA_PLATFORM
from .test_gui import add_via_dialog, gui, row_status  # noqa: E402, F401 - the window over a real service
from .test_probe import SERVER_NAME, _listed_tools  # noqa: E402 - after QT_QPA_PLATFORM

pytestmark = pytest.mark.timeout(120)


def _added(qtbot, window, name: str, url: str, *, login: bool = True) -> None:
    dialog = add_via_dialog(qtbot, window, name, url)
    dialog.connect_now.setChecked(login)
    dialog.add_button.click()
    want = "connected" if login else "not_connected"
    qtbot.waitUntil(lambda: row_status(window, name) == want, timeout=30000)
    window.select(name)
    qtbot.waitUntil(lambda: window.details.view is not None and window.details.name == name, timeout=5000)


def _run_test(qtbot, window) -> str:
    details = window.details
    assert details.test_button.isEnabled()
    details.test_button.click()
    # Set before the probe can answer: the answer comes back through the event loop.
    assert details.test_result.text() == f"Testing {details.name}…"
    assert not details.test_button.isEnabled()
    qtbot.waitUntil(details.test_button.isEnabled, timeout=40000)
    text: str = details.test_result.text()
    return text


def test_test_button_shows_server_tools_protocol_and_round_trip(qtbot, request, stack):
    _, mcp = stack
    _, _, window = request.getfixturevalue("gui")
    _added(qtbot, window, "demo", mcp.url)
    listed = _listed_tools(mcp.url, BrokerClient().token("demo")["access_token"])

    text = _run_test(qtbot, window)
    assert re.fullmatch(rf"OK: \d+ ms · {len(listed)} tools · protocol \d{{4}}-\d\d-\d\d · {SERVER_NAME}.*", text), text

    # The token went to the app's own Test, audited as such, and never onto the screen.
    window.details.refresh()
    qtbot.waitUntil(
        lambda: any(
            "MCP Token Broker (Test)" in window.details.audit.item(i).text()
            for i in range(window.details.audit.count())
        ),
        timeout=5000,
    )
    token = BrokerClient().token("demo")["access_token"]
    assert token not in text and token not in window.details.test_result.toolTip()

    # The result stays with its connection.
    window.details.clear()
    assert window.details.test_result.isHidden()
    window.select("demo")
    window.details.refresh()
    qtbot.waitUntil(lambda: window.details.test_result.text() == text, timeout=5000)


def test_test_button_names_a_stopped_server(qtbot, request, stack):
    oidc, _ = stack
    _, _, window = request.getfixturevalue("gui")
    server = start_mcp_server(oidc.issuer)
    try:
        oidc.add_resource(server.url)
        _added(qtbot, window, "gone", server.url)
    finally:
        server.stop()  # its port is closed now
    text = _run_test(qtbot, window)
    assert text.startswith("Failed: ") and f"cannot reach 127.0.0.1:{server.port} (connection refused)" in text


def test_test_button_says_the_connection_needs_login(qtbot, request, stack):
    _, mcp = stack
    _, _, window = request.getfixturevalue("gui")
    _added(qtbot, window, "fresh", mcp.url, login=False)
    text = _run_test(qtbot, window)
    assert text.startswith("Failed: ") and "fresh is not connected" in text, text


def test_test_button_and_its_result_fit_at_every_size(qtbot, request):
    from .test_gui_layout import SIZES, in_window, settle, with_demo_views

    _, _, window = request.getfixturevalue("gui")
    with_demo_views(qtbot, window)
    window.select("internal-docs")
    details = window.details
    long_failure = "Failed: cannot reach " + "very-long-host-name." * 8 + "example:443 (connection refused)"
    details._tested("internal-docs", long_failure)  # a result as the probe would leave it
    assert details.test_result.text() == long_failure
    for width, height in SIZES:
        settle(qtbot, window, width, height)
        where = (width, height)
        status = window.statusBar().geometry()
        for widget in (details.test_button, details.copy_button, details.test_result):
            rect = in_window(window, widget)
            assert window.rect().contains(rect), (where, rect)
            assert not rect.intersects(status), (where, rect, status)
            assert widget.visibleRegion().boundingRect() == widget.rect(), where
        for button in (details.test_button, details.copy_button):
            assert button.sizeHint().width() <= button.width(), (where, button.text())
        assert "example:443" in details.test_result.toolTip()  # the full text, however narrow the pane


@pytest.mark.parametrize("gui", ["ask"], indirect=True)
def test_the_apps_own_test_is_not_asked_about_under_the_ask_policy(qtbot, gui, stack):  # noqa: F811 - the imported fixture
    # The person pressed Test in the broker's own window: asking them to approve
    # the broker would be noise, and under `deny` the button could never work.
    _, mcp = stack
    _, bridge, window = gui
    asked = []
    bridge.clientAsked.connect(lambda request: asked.append(request))
    _added(qtbot, window, "demo", mcp.url)

    text = _run_test(qtbot, window)

    assert text.startswith("OK: "), text
    assert asked == []


class _NeedsScope:
    """A loopback server answering every POST 403 insufficient_scope, scope mcp:admin."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(403)
                self.send_header("www-authenticate", 'Bearer error="insufficient_scope", scope="mcp:admin"')
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mcp"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_the_apps_own_test_names_the_missing_scope_and_records_the_step_up(qtbot, request, stack):
    """A 403 insufficient_scope to the app's Test (`ServiceTokens`, the service in
    this process): the scope in words, and a step-up recorded for the next login."""
    from broker.client.probe import APP_CLIENT_NAME, ServiceTokens, probe
    from broker.errors import ProbeFailed
    from broker.service.identity import ClientIdentity

    _, mcp = stack
    runner, _, window = request.getfixturevalue("gui")
    _added(qtbot, window, "adm", mcp.url)
    me = ClientIdentity(
        pid=os.getpid(), app_pid=os.getpid(), exe=None, script=None, name=APP_CLIENT_NAME, in_process=True
    )
    tokens = ServiceTokens(runner.service, me, runner.loop)
    server = _NeedsScope()
    try:
        with pytest.raises(ProbeFailed) as failed:
            runner.submit(probe("adm", server.url, tokens=tokens, timeout=30)).result(60)
    finally:
        server.close()
    assert failed.value.kind == "insufficient_scope" and "needs scope mcp:admin" in str(failed.value), failed.value
    assert BrokerClient().connection("adm")["step_up"]["missing"] == ["mcp:admin"]
