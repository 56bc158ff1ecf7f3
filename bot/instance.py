"""One bot process per SQLite database: an exclusive lock on a file beside it.

Two processes on one database would both claim the outbox at start-up (re-sending each
other's in-flight messages) and fight over Telegram's getUpdates. SQLite's own locks
guard single transactions, not a process's lifetime, so the bot takes an advisory
`flock` on `<database>.lock` for as long as it runs. The kernel drops the lock when the
process ends in any way, kill -9 included, so a stale lock file never blocks a restart;
the pid written into it only serves the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from bot.errors import InstanceLocked

log = logging.getLogger(__name__)


def lock_path_for(database: Path) -> Path:
    """The lock file of a database file: its name plus `.lock`, in the same folder."""
    return database.with_name(database.name + ".lock")


class InstanceLock:
    """Held while a bot runs on `database`; `acquire` raises InstanceLocked if taken."""

    def __init__(self, database: Path) -> None:
        self.path = lock_path_for(database)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write our pid into the file, or raise InstanceLocked."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise InstanceLocked(str(self.path), holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (idempotent). The file stays: removing it would race a starter."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
