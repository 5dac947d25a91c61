"""The entry rule: which side a bar's probabilities call for.

Plain Python, so the signal service applies it without numba; the backtest's kernel
compiles this same function (``backtest.kernel.entry_side``), so the two cannot differ.
"""

from __future__ import annotations

import math

#: ``strategy.sides``: which sides the strategy may trade.
SIDES = ("both", "long", "short")


def allowed_sides(sides: str) -> tuple[bool, bool]:
    """(long allowed, short allowed) for a ``strategy.sides`` value."""
    if sides not in SIDES:
        raise ValueError(f"unknown sides {sides!r}; one of {SIDES}")
    return sides in ("both", "long"), sides in ("both", "short")


def entry_side(
    p_long: float,
    p_short: float,
    threshold: float,
    allow_long: bool = True,
    allow_short: bool = True,
) -> int:
    """+1 long, -1 short, 0 none: the stronger side, when it reaches ``threshold``;
    long on a tie (the kernel's rule 6). A side ``strategy.sides`` does not allow is no
    trade: the other side is not taken in its place (the model said it is the weaker)."""
    if math.isnan(p_long) or math.isnan(p_short) or max(p_long, p_short) < threshold:
        return 0
    side = 1 if p_long >= p_short else -1
    if (side == 1 and not allow_long) or (side == -1 and not allow_short):
        return 0
    return side
