"""Is the socket's directory ours alone? Both ends ask, every time.

Whoever can rename or replace a directory on the socket's path can put their
own listener where our clients look, and receive client secrets and login
codes, or hand out forged tokens. So the service checks the path before it
binds, and every client before it connects (the `token` fast path too: this
module is standard library only, and the check is a few `lstat` calls).

- From the runtime base down to the socket's directory (`$XDG_RUNTIME_DIR`
  and `$XDG_RUNTIME_DIR/mcp-token-broker`, say): each must be a real directory
  (`lstat`: not a symbolic link), owned by us, not writable by group or others.
- Above the base (`/run/user`, `/home/alice`, `/tmp`): each must belong to
  root or to us, and must not be writable by others, unless it is sticky like
  /tmp (then nobody else may rename or remove what is ours in it) or writable
  only by our own user-private group (umask 002 on Debian-style systems).
  Symbolic links there are followed if they belong to root or to us, and their
  targets are held to the same rule.

Anything else is refused with one line (`UnsafeSocketDir`). The service makes
what is missing (0700) and tightens directories of ours below the base to
0700; clients only look, and a missing directory means no service
(`FileNotFoundError`). The last word is the listener's UID, which clients
check after connecting (`broker.client.peeruid`): a check of paths is a snapshot.
"""

from __future__ import annotations

import os
import stat
import sys

__all__ = ["MAX_SOCKET_PATH", "check_socket_dir", "prepare_socket_dir"]

#: Longest socket path in bytes: sun_path (108 on Linux, 104 elsewhere) less its NUL.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103
_MAX_LINKS = 32


def check_socket_dir(socket_path: str, base: str | None = None) -> None:
    """Clients: raise `UnsafeSocketDir` or `SocketPathTooLong`, or
    FileNotFoundError if a directory is missing. `base` defaults to the socket's
    directory."""
    _walk(socket_path, base, create=False)


def prepare_socket_dir(socket_path: str, base: str | None = None) -> None:
    """The service: create what is missing (0700), tighten ours to 0700, then check as clients do."""
    _walk(socket_path, base, create=True)


class _Unsafe(Exception):
    pass


def _walk(socket_path: str, base: str | None, *, create: bool) -> None:
    size = len(os.fsencode(socket_path))
    if size > MAX_SOCKET_PATH:
        from ..errors import SocketPathTooLong

        raise SocketPathTooLong(
            f"the socket path {socket_path} is {size} bytes, and Unix sockets allow {MAX_SOCKET_PATH}; "
            "set MCP_TOKEN_BROKER_SOCKET (or XDG_RUNTIME_DIR) to a shorter path"
        )
    try:
        if not socket_path.startswith("/") or any(p in (".", "..") for p in socket_path.split("/")):
            raise _Unsafe("the path must be absolute, without . or .. in it")
        directory = os.path.dirname(os.path.normpath(socket_path))
        base = os.path.normpath(base) if base else directory
        if directory != base and not directory.startswith(base.rstrip("/") + "/"):
            base = directory
        uid = os.geteuid()
        _ancestors(os.path.dirname(base), uid, create, 0)
        path = base
        _ours(path, uid, create)
        for name in directory[len(base) :].split("/"):
            if name:
                path = os.path.join(path, name)
                _ours(path, uid, create)
    except _Unsafe as exc:
        from ..errors import UnsafeSocketDir

        raise UnsafeSocketDir(f"refusing to use the socket {socket_path}: {exc}") from None


def _lstat(path: str, create: bool) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        raise _Unsafe(f"cannot inspect {path} ({exc.strerror})") from None
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # made by someone else meanwhile: judged below like anything else
    except OSError as exc:
        raise _Unsafe(f"cannot create {path} ({exc.strerror})") from None
    return os.lstat(path)


def _ours(path: str, uid: int, create: bool) -> None:
    """At or below the base: a real directory of ours, not writable by others."""
    st = _lstat(path, create)
    if stat.S_ISLNK(st.st_mode):
        raise _Unsafe(f"{path} is a symbolic link")
    if not stat.S_ISDIR(st.st_mode):
        raise _Unsafe(f"{path} is not a directory")
    if st.st_uid != uid:
        raise _Unsafe(f"{path} belongs to uid {st.st_uid}, not to you")
    mode = stat.S_IMODE(st.st_mode)
    if create and mode & 0o077:
        os.chmod(path, 0o700)  # ours, and its parent is safe: it cannot be swapped meanwhile
    elif mode & 0o022:
        raise _Unsafe(f"{path} is writable by group or others (mode {mode:o})")


def _ancestors(path: str, uid: int, create: bool, links: int) -> str:
    """Above the base: walk `path` from /, following symbolic links as the kernel
    would; every directory met must be trusted. Returns the resolved path."""
    real = "/"
    _trusted("/", os.lstat("/"), uid)
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            real = os.path.dirname(real)
            continue
        current = os.path.join(real, name)
        st = _lstat(current, create)
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid not in (0, uid):
                raise _Unsafe(f"{current} is a symbolic link that belongs to uid {st.st_uid}")
            if links >= _MAX_LINKS:
                raise _Unsafe(f"too many symbolic links at {current}")
            real = _ancestors(os.path.join(real, os.readlink(current)), uid, create, links + 1)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise _Unsafe(f"{current} is not a directory")
        _trusted(current, st, uid)
        real = current
    return real


def _trusted(path: str, st: os.stat_result, uid: int) -> None:
    if st.st_uid not in (0, uid):
        raise _Unsafe(f"{path} belongs to uid {st.st_uid}, who could replace what is in it")
    if st.st_mode & stat.S_ISVTX:
        return  # sticky, like /tmp: others cannot rename or remove what is ours
    if st.st_mode & 0o002:
        raise _Unsafe(f"{path} is writable by everyone")
    if st.st_mode & 0o020 and not _private_group(st, uid):
        raise _Unsafe(f"{path} is writable by group {st.st_gid}")


def _private_group(st: os.stat_result, uid: int) -> bool:
    """Our own user-private group (same name as us, no other members): its write bit is ours."""
    if st.st_uid != uid or st.st_gid != os.getegid():
        return False
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        group = grp.getgrgid(st.st_gid)
    except (ImportError, KeyError):
        return False
    return group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
