"""One live trader per journal: an exclusive lock on ``data/live/LOCK``, held while it
runs. Two traders on one account would each believe the other's orders foreign, and
would send each decision twice under different client ids.

The operating system's own file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows)
rather than a PID file: it is released when the process dies, ``kill -9`` included, so
a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


class Locked(RuntimeError):
    """Another process holds the lock."""


class ProcessLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            if os.name == "nt":  # pragma: no cover - Windows
                import msvcrt

                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise Locked(
                f"{self.path}: another asterai live runs on this journal"
                + (f" ({holder})" if holder else "")
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing releases the lock
            self._fh = None

    def __enter__(self) -> ProcessLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
