"""The socket path computed without platformdirs agrees with platformdirs,
except in its last fallback: not a shared temp dir, but the user's own cache."""

import os
import stat
import tempfile
import warnings

import platformdirs
import pytest

from broker.client.socketpath import SOCKET_ENV, base_for, default_socket_path, socket_location
from broker.storage.paths import Paths


def platformdirs_path() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return os.path.join(platformdirs.user_runtime_dir("mcp-token-broker", appauthor=False), "broker.sock")


def private(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def run_user_is_private() -> bool:
    return private(f"/run/user/{os.getuid()}")


def expected() -> str:
    """platformdirs, unless it would fall back to $TMPDIR/runtime-UID."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and (private(xdg) or not os.path.lexists(xdg)) or run_user_is_private():
        return platformdirs_path()
    return os.path.join(os.environ["HOME"], ".cache", "mcp-token-broker", "run", "broker.sock")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))


def test_with_a_private_xdg_runtime_dir(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert default_socket_path() == expected() == str(run / "mcp-token-broker" / "broker.sock")
    assert socket_location() == (default_socket_path(), str(run))
    assert Paths.default().runtime_dir == run / "mcp-token-broker"


@pytest.mark.parametrize("setup", ["unset", "empty", "not-private", "missing"])
def test_fallbacks_agree(tmp_path, monkeypatch, setup):
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    if setup == "unset":
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    elif setup == "empty":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    elif setup == "not-private":
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        loose.chmod(0o755)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(loose))
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "nope"))
    assert default_socket_path() == expected()
    assert not default_socket_path().startswith(str(tmp_path / f"runtime-{os.getuid()}"))  # never $TMPDIR


def test_fallback_is_the_users_own_cache_never_a_shared_temp_dir(tmp_path, monkeypatch):
    if run_user_is_private():
        pytest.skip("/run/user/UID is private here: the fallback is not reached")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    base = str(tmp_path / "home" / ".cache" / "mcp-token-broker")
    assert socket_location() == (os.path.join(base, "run", "broker.sock"), base)
    # platformdirs would use a shared temp dir here
    assert platformdirs_path() == os.path.join(
        tempfile.gettempdir(), f"runtime-{os.getuid()}", "mcp-token-broker", "broker.sock"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert socket_location()[1] == str(tmp_path / "cache" / "mcp-token-broker")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as platformdirs does
    assert socket_location()[1] == base


def test_override(monkeypatch):
    monkeypatch.setenv(SOCKET_ENV, "/tmp/elsewhere.sock")
    assert default_socket_path() == "/tmp/elsewhere.sock"
    assert socket_location() == ("/tmp/elsewhere.sock", "/tmp")


def test_base_for_a_given_path(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.delenv(SOCKET_ENV, raising=False)
    assert base_for(default_socket_path()) == str(run)
    assert base_for(str(tmp_path / "other" / "broker.sock")) == str(tmp_path / "other")
