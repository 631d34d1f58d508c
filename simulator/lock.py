"""One writer per output directory: an advisory lock on ``<dir>/.lock``.

The lock is an ``flock`` on an open file, so the kernel releases it when its holder exits in
any way (even SIGKILL): a stale lock cannot outlive its process. The file holds the holder's
pid, which the refusal message names.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with DirectoryLock(d):
    ...     try:
    ...         DirectoryLock(d).acquire()
    ...     except LockedError as err:
    ...         print(f"pid {os.getpid()}" in str(err))
    True
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """Another live process holds the directory's lock; the message names its pid."""


class DirectoryLock:
    """Exclusive, non-blocking lock of ``directory`` (created if needed) for one process."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{self.directory} is being written by another lifelong process (pid {holder}); "
                              f"wait for it to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            # The file stays: removing it would let a third process lock a fresh inode while a
            # second still waits on this one.
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
