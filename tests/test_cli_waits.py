"""The CLI never waits longer than it said, nor in silence (issue 10, items 14 and 11).
Real `serve` processes, the real oidc-provider stack, the real console script."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import start_service

pytestmark = pytest.mark.timeout(120)

#: Far below the service's 20 s long-poll and far above a 2 s timeout: the
#: bound of a wait, not a measurement.
BOUND = 12


@pytest.mark.parametrize("through", ["service", "direct"])
def test_connect_timeout_is_kept_not_the_long_poll(cli, stack, through):
    _, mcp = stack
    assert cli("add", "slow", mcp.url).returncode == 0
    service = start_service(cli) if through == "service" else None
    try:
        proc = cli.popen("connect", "slow", "--no-browser", "--timeout", "2", env={"BROWSER": "/bin/false"})
        try:
            out, err = proc.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise AssertionError(f"connect --timeout 2 still ran after {BOUND} s") from None
        assert proc.returncode == 4, err
        assert "no answer from the browser within 2 s" in err
        assert cli("list", "--json").json()["connections"][0]["status"] == "not_connected"
    finally:
        if service is not None:
            assert service.stop() == 0, service.log
