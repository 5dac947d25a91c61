"""numba's on-disk cache, kept honest across files.

``@njit(cache=True)`` decides whether a cached machine-code version is stale from the
function's *own* source file only. A kernel that calls jitted functions from another
module (the backtest kernel and the labels call ``asterai.barriers``; the kernel also
freezes ``backtest.enums``' constants into its code) would keep running the old rules
after that other module changed. ``invalidate_on_change`` stamps each such function's
cache with a hash of the modules it depends on, and flushes the cache when the hash
differs, before the first call compiles or loads anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType
from typing import Any


def invalidate_on_change(dispatcher: Any, *modules: ModuleType) -> None:
    """Flush ``dispatcher``'s numba cache when any of ``modules``' source changed."""
    cache = getattr(dispatcher, "_cache", None)
    folder = getattr(cache, "cache_path", None)
    if cache is None or folder is None:  # caching off (e.g. NUMBA_DISABLE_JIT)
        return
    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    name = dispatcher.py_func.__qualname__
    stamp = Path(folder) / f"{Path(dispatcher.py_func.__code__.co_filename).stem}.{name}.deps"
    wanted = digest.hexdigest()
    try:
        if stamp.exists() and stamp.read_text() == wanted:
            return
        cache.flush()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted)
    except OSError:  # a read-only install: numba caches elsewhere or not at all
        cache.flush()
