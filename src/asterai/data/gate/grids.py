"""The tick and lot rules: prices on the symbol's tick, volumes on its lot step, over time.

Exchanges change filters (a finer tick after a price fall, a coarser one after a rise),
while exchangeInfo shows only today's, so six months of real history may sit on more
than one grid. The rule, exactly:

1. **Regimes.** Walk back from the last bar with today's unit ``u0`` (the discovery
   file's tick or step). The newest regime is the run of bars after the last bar that
   is off ``u0``. The older regime's unit ``u1`` is the decimal gcd of the
   ``UNIT_WINDOW`` bars just before that boundary; its start is found the same way
   against ``u1``; and so on back to the first bar. Each regime is reported with its
   first and last open time, unit and bar count.
2. **A regime must be a grid, not a few stray values.** In a genuine older regime on
   ``u1`` the bars land on the newer unit ``u0`` only by chance: a value on ``u1`` is
   on ``u0`` with probability ``1/m``, ``m = lcm(u0, u1) / u1``, so a bar of ``k``
   values is off ``u0`` with probability ``p = 1 - m**-k``. A regime whose share of
   off-grid bars (among bars with a non-zero value) is below ``DENSITY x p`` is what
   tampering looks like (isolated values off an otherwise consistent grid): its
   off-grid bars are named and the file is ``contaminated``. So is a regime whose unit
   is no exchange unit: not a decimal at all (a rescaled copy), a significand other
   than 1, 2, 2.5 or 5, or more than ``MAX_UNIT_RATIO`` from the next regime's unit.
   An oldest regime shorter than ``MIN_REGIME_BARS`` cannot be judged: a warning.
3. **Today's grid.** When the newest bars are not on today's unit at all (the newest
   regime is empty) but form a genuine regime on another unit, the history does not
   fit today's filters: the series is ``excluded`` (a filter inconsistency, not
   tampering); collect it again.

Everything else passes, with its regimes listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asterai.data.gate.model import CONTAMINATED, EXCLUDED, Finding, at_rows, passed, skipped
from asterai.intervals import iso_ms

UNIT_WINDOW = 168
DENSITY = 0.05
MIN_OFF_BARS = 3
MIN_REGIME_BARS = 24
MAX_UNIT_RATIO = 100.0
MAX_REGIMES = 12
MAX_DECIMALS = 12
_SIGNIFICANDS = (1.0, 2.0, 2.5, 5.0)


def on_grid(values: np.ndarray, unit: float) -> np.ndarray:
    """Per bar (row of ``values``), whether every value is a multiple of ``unit``.

    Values are floats parsed from the exchange's decimal strings, so a multiple of the
    unit is one up to float rounding (relative 1e-12 of the quotient, absolute 1e-6).
    """
    ratio = values / unit
    off = np.abs(ratio - np.round(ratio)) > 1e-6 + np.abs(ratio) * 1e-12
    return ~off.any(axis=1) if off.ndim == 2 else ~off


def decimal_unit(values: np.ndarray) -> float | None:
    """The coarsest decimal unit every non-zero finite value is a multiple of, or None.

    None when the values need more than ``MAX_DECIMALS`` decimals (no exchange grid:
    a rescaled copy) or when there is no non-zero value to judge by.
    """
    x = np.abs(values[np.isfinite(values) & (values != 0)])
    if len(x) == 0:
        return None
    x = np.unique(x)
    for d in range(MAX_DECIMALS + 1):
        scaled = x * 10.0**d
        if scaled.max() >= 1e13:  # beyond float precision: cannot tell a grid
            return None
        rounded = np.round(scaled)
        if np.all(np.abs(scaled - rounded) <= 1e-6 + scaled * 1e-14):
            g = int(np.gcd.reduce(rounded.astype(np.int64)))
            return g / 10.0**d if g else None
    return None


def plausible_unit(unit: float) -> bool:
    """1, 2, 2.5 or 5 times a power of ten: the units exchanges use."""
    exponent = np.floor(np.log10(unit))
    significand = unit / 10.0**exponent
    return any(abs(significand - s) < 1e-6 for s in _SIGNIFICANDS)


def chance_off(older: float, newer: float, k: int) -> float:
    """Probability that a bar of ``k`` values on ``older`` is off ``newer`` by chance."""
    scale = 10.0 ** (MAX_DECIMALS // 2)
    a, b = round(older * scale), round(newer * scale)
    if a <= 0 or b <= 0:
        return 1.0
    m = np.lcm(a, b) // a
    return 1.0 - float(m) ** -k


@dataclass(frozen=True, slots=True)
class Regime:
    start: int  # first row
    end: int  # one past the last row
    unit: float

    @property
    def bars(self) -> int:
        return self.end - self.start


def regimes(values: np.ndarray, unit_now: float) -> list[Regime] | int:
    """Contiguous grid regimes, newest first; an int (a row) where no decimal grid fits."""
    end, unit = len(values), unit_now
    found: list[Regime] = []
    while end > 0 and len(found) < MAX_REGIMES:
        off = np.flatnonzero(~on_grid(values[:end], unit))
        start = int(off[-1]) + 1 if len(off) else 0
        found.append(Regime(start, end, unit))
        if start == 0:
            break
        older = decimal_unit(values[max(0, start - UNIT_WINDOW) : start])
        if older is None:
            return start - 1
        end, unit = start, older
    if end > 0 and found[-1].start > 0:  # more changes than MAX_REGIMES: all one regime
        found.append(Regime(0, found[-1].start, decimal_unit(values[: found[-1].start]) or 0.0))
    return found


def check_grid(
    values: np.ndarray, times: np.ndarray, unit_now: float | None, rule: str, what: str, name: str
) -> Finding:
    """``values``: (bars, k) prices or volumes; ``what``: "tick" or "lot step"."""
    if not unit_now:
        return skipped(
            rule, f"{what} unknown (no discovery file or no filter); run `asterai discover`"
        )
    values = values.reshape(len(values), -1)
    k = values.shape[1]
    found = regimes(values, unit_now)
    if isinstance(found, int):
        return at_rows(
            rule,
            "fail",
            f"{name}: values on no exchange grid (more than {MAX_DECIMALS} decimals, as a "
            "rescaled copy has)",
            np.arange(len(values)) == found,
            times,
            CONTAMINATED,
        )
    listed = tuple(
        {
            "first": iso_ms(int(times[r.start])),
            "last": iso_ms(int(times[r.end - 1])),
            "unit": float(r.unit),
            "bars": r.bars,
        }
        for r in reversed(found)
        if r.bars
    )
    described = ", ".join(f"{g['unit']:g} from {g['first']} ({g['bars']} bars)" for g in listed)
    informative = (values != 0).any(axis=1)
    short: Finding | None = None
    for i, older in enumerate(found[1:], start=1):
        newer = found[i - 1]
        span = slice(older.start, older.end)
        off = ~on_grid(values[span], newer.unit) & informative[span]
        mask = np.zeros(len(values), dtype=bool)
        mask[span] = off
        ratio = max(older.unit, newer.unit) / max(min(older.unit, newer.unit), 1e-300)
        if older.unit <= 0 or not plausible_unit(older.unit) or ratio > MAX_UNIT_RATIO:
            return at_rows(
                rule,
                "fail",
                f"{name}: values off the {newer.unit:g} {what} on a {older.unit:g} grid, "
                f"which no exchange uses next to {newer.unit:g}",
                mask,
                times,
                CONTAMINATED,
            )
        judged = int(informative[span].sum())
        expected = chance_off(older.unit, newer.unit, k)
        if judged < MIN_REGIME_BARS:
            short = short or at_rows(
                rule,
                "warn",
                f"{name}: {older.bars} bars off the {newer.unit:g} {what} on a {older.unit:g} "
                "grid: too few to tell a filter change from an edit",
                mask,
                times,
            )
        elif off.sum() < max(MIN_OFF_BARS, DENSITY * expected * judged):
            floor = max(MIN_OFF_BARS, DENSITY * expected * judged)
            return at_rows(
                rule,
                "fail",
                f"{name}: {int(off.sum())} of {judged} bars off the {newer.unit:g} {what}, "
                f"where a real {older.unit:g} grid puts at least {floor:.0f} off: isolated "
                "off-grid values (tampering)",
                mask,
                times,
                CONTAMINATED,
                listed,
            )
    if found[0].bars == 0:
        latest = found[1]
        return Finding(
            rule,
            "fail",
            f"{name}: the newest {latest.bars} bars (from {listed[-1]['first']}, row "
            f"{latest.start}) are on a {latest.unit:g} grid, today's {what} is {unit_now:g}: "
            "the history does not fit today's filters; collect it again",
            (latest.start,),
            (listed[-1]["first"] or "",),
            EXCLUDED,
            listed,
        )
    if short is not None:
        return short
    if len(listed) > 1:
        return passed(rule, f"{len(listed)} {what} regimes: {described}", regimes=listed)
    return passed(rule, f"every value on the {unit_now:g} {what}", regimes=listed)
