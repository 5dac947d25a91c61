"""numba's cache follows the modules a cached kernel depends on, not only its own file.

Without ``asterai.jitcache.invalidate_on_change``, a fresh process would load the
kernel's cached machine code, with the old rules of the module it calls, after that
module changed (numba checks only the caller's own source file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HELPER = "from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x + {n}\n"
CALLER = textwrap.dedent(
    """
    from numba import njit
    import helper
    from helper import f
    from asterai.jitcache import invalidate_on_change

    @njit(cache=True)
    def g(x):
        return f(x)

    {guard}
    print(g(1.0))
    """
)


def run(folder: Path) -> float:
    out = subprocess.run(
        [sys.executable, "caller.py"], cwd=folder, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def test_a_change_in_a_called_module_reaches_the_cached_kernel(tmp_path: Path) -> None:
    for name, guard, stale in (("guarded", "invalidate_on_change(g, helper)", False),
                               ("bare", "", True)):  # fmt: skip
        folder = tmp_path / name
        folder.mkdir()
        (folder / "caller.py").write_text(CALLER.format(guard=guard))
        (folder / "helper.py").write_text(HELPER.format(n=1))
        assert run(folder) == 2.0  # compiled and cached
        (folder / "helper.py").write_text(HELPER.format(n=100))
        # numba alone keeps the stale code; the guard flushes it
        assert run(folder) == (2.0 if stale else 101.0)


def test_the_kernel_and_the_labels_are_guarded() -> None:
    import hashlib

    from asterai import barriers, entry
    from asterai.backtest import enums, kernel
    from asterai.features import labels

    for dispatcher, modules in (
        (kernel.simulate_nb, (barriers, enums, entry)),
        (labels.triple_barrier_nb, (barriers,)),
    ):
        stamp = Path(dispatcher._cache.cache_path) / (
            f"{Path(dispatcher.py_func.__code__.co_filename).stem}."
            f"{dispatcher.py_func.__qualname__}.deps"
        )
        digest = hashlib.sha256()
        for module in modules:
            digest.update(Path(module.__file__).read_bytes())
        # stamped with the source of exactly the modules its compiled code depends on
        assert stamp.read_text() == digest.hexdigest(), dispatcher
