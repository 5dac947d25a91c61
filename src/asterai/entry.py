"""The entry rule: which side a bar's probabilities call for.

Plain Python, so the signal service applies it without numba; the backtest's kernel
compiles this same function (``backtest.kernel.entry_side``), so the two cannot differ.
"""

from __future__ import annotations

import math


def entry_side(p_long: float, p_short: float, threshold: float) -> int:
    """+1 long, -1 short, 0 none: the stronger side, when it reaches ``threshold``;
    long on a tie (the kernel's rule 6)."""
    if math.isnan(p_long) or math.isnan(p_short) or max(p_long, p_short) < threshold:
        return 0
    return 1 if p_long >= p_short else -1
