"""Crash-safe file replacement and an inter-process lock.

`atomic_write` is the classic sequence: write a temp file in the same
directory, fsync it, `os.replace` it over the target, fsync the directory.
A kill -9 at any instant leaves the old file or the new one, never a mix.

Both block (an fsync, a lock held by another process for up to 15 s), so an
event loop calls them through `off_loop`, never directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ..errors import VaultLocked
from .paths import ensure_private_dir

__all__ = ["atomic_write", "file_lock", "off_loop", "remove_stale_temp_files"]

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a worker thread, so that a lock wait or a disk write never
    holds up the event loop. Once started it runs to its end: a cancellation
    waits for it before going on, so what the caller's state says about the
    files stays true (a write the caller no longer awaits still lands first)."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        if not work.cancelled():
            work.exception()  # seen: the cancellation is what the caller gets
        raise


def atomic_write(path: Path, data: bytes, *, private_dir: bool = True) -> None:
    """Replace `path` with `data` (0600). `private_dir=False` leaves the
    directory as it is: a file of another program's (an MCP client's config in
    the home or a project directory) must not tighten that directory."""
    if private_dir:
        ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(path: Path) -> None:
    """Remove temp files that a killed writer left next to `path`. Call under the lock."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 15.0) -> Iterator[None]:
    """Hold an exclusive `flock` on `path`, waiting up to `timeout` seconds."""
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise VaultLocked(
                        f"another mcp-token-broker process has held {path} for {timeout:g} s; try again"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
