"""Atomic file writes: a temp file in the same folder, fsync, then ``os.replace``.

A reader (or a run killed with ``kill -9``) sees either the old file or the new
one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".asterai-tmp"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # as an ordinary open() would create it, not mkstemp's 0600
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temp files that a killed run left behind in ``folder``."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for tmp in folder.glob(f".*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def replace_folder(target: str | Path, build: Callable[[Path], None]) -> None:
    """Build a folder's files in a temp folder beside it, then swap it in as a set.

    The old folder is renamed aside, the new one renamed into place, then the old one
    removed: a crash leaves the old set or the new one, never a mix. In the instant
    between the two renames the folder is absent and the old set sits at
    ``old_folder(target)``; ``recover_folder`` puts it back.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        build(tmp)
        for path in sorted(tmp.rglob("*")):  # subfolders too, deepest last
            if path.is_dir():
                _fsync_dir(path)
                continue
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        old = old_folder(target)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def old_folder(target: Path) -> Path:
    return target.with_name(f".{target.name}.old{TMP_SUFFIX}")


def recover_folder(target: str | Path) -> None:
    """After a crash between the two renames of ``replace_folder``: the old set returns."""
    target = Path(target)
    old = old_folder(target)
    if old.exists() and not target.exists():
        os.replace(old, target)
