"""The socket directory checks (broker.client.socketdir) on real directories.

Another owner is made with chown to uid 65534, so those cases need root (the CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from broker.client.socketdir import MAX_SOCKET_PATH, check_socket_dir, prepare_socket_dir
from broker.errors import SocketPathTooLong, StorageError, UnsafeSocketDir

OTHER = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user's needs root")


@pytest.fixture
def base(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


def sock(base: Path) -> str:
    return str(base / "mcp-token-broker" / "broker.sock")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_private_directories_pass(base):
    (base / "mcp-token-broker").mkdir(mode=0o700)
    check_socket_dir(sock(base), str(base))


def test_a_missing_directory_means_no_service_to_clients(base):
    with pytest.raises(FileNotFoundError):
        check_socket_dir(sock(base), str(base))
    assert not (base / "mcp-token-broker").exists()  # clients never create anything


def test_the_service_creates_what_is_missing_private(tmp_path):
    base = tmp_path / "cache" / "mcp-token-broker"
    prepare_socket_dir(str(base / "run" / "broker.sock"), str(base))
    for path in (tmp_path / "cache", base, base / "run"):
        assert mode(path) == 0o700
    check_socket_dir(str(base / "run" / "broker.sock"), str(base))


def test_symlink_below_the_base_is_refused(base, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (base / "mcp-token-broker").symlink_to(elsewhere)
    for check in (check_socket_dir, prepare_socket_dir):
        with pytest.raises(UnsafeSocketDir, match="is a symbolic link"):
            check(sock(base), str(base))


def test_a_file_instead_of_a_directory_is_refused(base):
    (base / "mcp-token-broker").write_text("")
    with pytest.raises(UnsafeSocketDir, match="is not a directory"):
        check_socket_dir(sock(base), str(base))


@needs_root
def test_wrong_owner_is_refused_at_every_level(base):
    (base / "mcp-token-broker").mkdir(mode=0o700)
    os.chown(base / "mcp-token-broker", OTHER, OTHER)
    for check in (check_socket_dir, prepare_socket_dir):
        with pytest.raises(UnsafeSocketDir, match=f"belongs to uid {OTHER}, not to you"):
            check(sock(base), str(base))
    os.chown(base / "mcp-token-broker", os.geteuid(), os.getegid())
    os.chown(base, OTHER, OTHER)  # the base itself
    with pytest.raises(UnsafeSocketDir, match=f"{base} belongs to uid {OTHER}"):
        check_socket_dir(sock(base), str(base))


@pytest.mark.parametrize("loose", [0o720, 0o702, 0o777])
def test_group_or_other_writable_is_refused_by_clients_and_tightened_by_the_service(base, loose):
    (base / "mcp-token-broker").mkdir()
    os.chmod(base / "mcp-token-broker", loose)
    with pytest.raises(UnsafeSocketDir, match="writable by group or others"):
        check_socket_dir(sock(base), str(base))
    prepare_socket_dir(sock(base), str(base))  # ours: the service makes it private again
    assert mode(base / "mcp-token-broker") == 0o700
    check_socket_dir(sock(base), str(base))


@pytest.fixture
def public():
    """A directory outside pytest's tmp_path (a 0700 one would hide what is tested)."""
    path = Path(tempfile.mkdtemp(prefix="socketdir-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sticky_world_writable_ancestor_like_tmp_is_fine(public):
    os.chmod(public, 0o1777)
    (public / "mine").mkdir(mode=0o700)
    check_socket_dir(str(public / "mine" / "broker.sock"))


def test_world_writable_ancestor_without_sticky_bit_is_refused(public):
    os.chmod(public, 0o777)
    (public / "mine").mkdir(mode=0o700)
    with pytest.raises(UnsafeSocketDir, match=f"{public} is writable by everyone"):
        check_socket_dir(str(public / "mine" / "broker.sock"))


@needs_root
def test_ancestor_of_another_user_is_refused(public):
    theirs = public / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "mine").mkdir(mode=0o700)
    os.chown(theirs, OTHER, OTHER)
    for check in (check_socket_dir, prepare_socket_dir):
        with pytest.raises(UnsafeSocketDir, match=f"{theirs} belongs to uid {OTHER}"):
            check(str(theirs / "mine" / "broker.sock"))


@needs_root
def test_group_writable_ancestor_only_for_our_own_private_group(public):
    import grp
    import pwd

    me = pwd.getpwuid(os.geteuid())
    ours = grp.getgrgid(os.getegid())
    assert ours.gr_name == me.pw_name and set(ours.gr_mem) <= {me.pw_name}, "needs a user-private group"
    (public / "mine").mkdir(mode=0o700)
    os.chmod(public, 0o770)
    check_socket_dir(str(public / "mine" / "broker.sock"))  # umask 002 with a user-private group
    os.chown(public, os.geteuid(), OTHER)  # a group others are in
    with pytest.raises(UnsafeSocketDir, match=f"writable by group {OTHER}"):
        check_socket_dir(str(public / "mine" / "broker.sock"))


@needs_root
def test_symlinked_ancestor_is_followed_and_its_target_checked(public):
    mine = public / "real"
    mine.mkdir(mode=0o755)
    (mine / "sock").mkdir(mode=0o700)
    (public / "link").symlink_to(mine)  # e.g. ~/.cache -> /scratch/me/cache
    check_socket_dir(str(public / "link" / "sock" / "broker.sock"))
    os.chown(mine, OTHER, OTHER)  # the target is another user's
    with pytest.raises(UnsafeSocketDir, match=f"{mine} belongs to uid {OTHER}"):
        check_socket_dir(str(public / "link" / "sock" / "broker.sock"))
    os.chown(mine, os.geteuid(), os.getegid())
    os.lchown(public / "link", OTHER, OTHER)  # the link itself is another user's
    with pytest.raises(UnsafeSocketDir, match="symbolic link that belongs to uid"):
        check_socket_dir(str(public / "link" / "sock" / "broker.sock"))


@needs_root
def test_another_users_directory_between_base_and_socket_is_refused(base):
    middle = base / "middle"
    middle.mkdir(mode=0o755)
    (middle / "sock").mkdir(mode=0o700)
    os.chown(middle, OTHER, OTHER)
    path = str(middle / "sock" / "broker.sock")
    with pytest.raises(UnsafeSocketDir, match=f"{middle} belongs to uid {OTHER}, not to you"):
        check_socket_dir(path, str(base))


def test_a_base_that_is_not_above_the_socket_is_ignored(base, tmp_path):
    (base / "mcp-token-broker").mkdir(mode=0o700)
    check_socket_dir(sock(base), str(tmp_path / "unrelated"))


@pytest.mark.parametrize("path", ["relative/broker.sock", "/tmp/../tmp/x/broker.sock", "/tmp/./x/broker.sock"])
def test_only_plain_absolute_paths(path):
    with pytest.raises(UnsafeSocketDir, match="must be absolute"):
        check_socket_dir(path)


def test_a_path_too_long_for_a_unix_socket_fails_clearly(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = str(deep / "broker.sock")
    assert len(path.encode()) > MAX_SOCKET_PATH
    for check in (check_socket_dir, prepare_socket_dir):
        with pytest.raises(SocketPathTooLong, match=f"Unix sockets allow {MAX_SOCKET_PATH}"):
            check(path)
    assert not deep.exists()


def test_refusals_are_storage_errors_of_one_line(base):
    (base / "mcp-token-broker").symlink_to(base)
    with pytest.raises(StorageError) as info:
        check_socket_dir(sock(base), str(base))
    assert info.value.exit_code == 3 and "\n" not in str(info.value)
