"""The tick and lot rules: prices on the symbol's tick, volumes on its lot step, over time.

Exchanges change filters (a finer tick after a price fall, a coarser one after a rise),
while exchangeInfo shows only today's, so six months of real history may sit on more
than one grid. The rule, exactly:

1. **Regimes.** Walk back from the last bar with today's unit ``u0`` (the discovery
   file's tick or step; without one, the decimal gcd of the newest ``UNIT_WINDOW``
   bars). The newest regime is the run of bars after the last bar off ``u0``. The older
   regime's unit ``u1`` is the decimal gcd of the ``UNIT_WINDOW`` bars just before that
   boundary; its start is found the same way against ``u1``; and so on back to the
   first bar. Each regime is reported with its first and last open time, unit and bars.
2. **A regime must be a grid, not a few stray values.** In a genuine older regime on
   ``u1`` the bars land on the newer unit ``u0`` only by chance: a value on ``u1`` is
   on ``u0`` with probability ``1/m``, ``m = lcm(u0, u1) / u1``, so a bar of ``k``
   values is off ``u0`` with probability ``p = 1 - m**-k``. Real prices cluster on
   round values (as few as 16% of 1000PEPEUSDT's hourly bars leave a ten times coarser
   tick, where ``p`` says 100%), so a regime needs at least ``MIN_OFF_BARS`` bars and a
   share of at least ``DENSITY x p`` of its bars (with a non-zero value) off ``u0``.
   Fewer is what isolated edits look like: ``contaminated``, naming the rows. So is a
   regime on no exchange unit: not a decimal at all (a rescaled copy), a significand
   other than 1, 2, 2.5 or 5, or more than ``MAX_UNIT_RATIO`` from its neighbour. A
   regime of fewer than ``MIN_REGIME_BARS`` bars cannot be told from an edit: the series
   is ``excluded``.
3. **Every timeframe shows it.** A filter change applies to the exchange's 1h, 4h and 1d
   bars alike; an older regime of one file whose span holds at least
   ``MIN_CORROBORATING_BARS`` bars of another timeframe that all stay on the newer unit
   is an edit of that one file: ``contaminated`` (``corroborate``).
4. **Today's grid.** When the newest bars are off today's unit (the newest regime is
   empty) but form a genuine regime on another unit, the history does not fit today's
   filters: ``excluded``, collect it again. When not one price is on today's tick, the
   series is a shifted copy: ``contaminated``. (Volumes: excluded either way, since a
   market order's step may be finer than the lot step discovery reports.)

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
MIN_CORROBORATING_BARS = 3
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


#: Candidate multiples of the decimal gcd when today's unit must be read from the data.
_COARSER = (100.0, 50.0, 25.0, 20.0, 10.0, 5.0, 4.0, 2.5, 2.0, 1.0)
#: Share of the newest window's bars allowed off an inferred unit (then judged as edits).
INFER_MAX_OFF_SHARE = 0.03


def infer_unit(values: np.ndarray) -> float | None:
    """Today's unit read from the newest bars, robust to a few edited values.

    The coarsest exchange unit (a multiple of the window's decimal gcd) that at most
    ``INFER_MAX_OFF_SHARE`` of the window's bars (at least 2) are off: a few edited
    values cannot make the unit finer and so hide themselves. Real prices use their tick's last digit
    in far more bars than that (16% for 1000PEPEUSDT, the most clustered of the
    recording), so a real unit is never read too coarse.
    """
    values = values.reshape(len(values), -1)
    g = decimal_unit(values)
    if g is None or len(values) < 2 * UNIT_WINDOW // 3:
        return g
    for m in _COARSER:
        unit = g * m
        allowed = max(2, int(INFER_MAX_OFF_SHARE * len(values)))
        if plausible_unit(unit) and (~on_grid(values, unit)).sum() <= allowed:
            return unit
    return g


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
    values: np.ndarray,
    times: np.ndarray,
    unit_now: float | None,
    rule: str,
    what: str,
    name: str,
    *,
    all_off: str = CONTAMINATED,
    inferred: bool = False,
) -> Finding:
    """``values``: (bars, k) prices or volumes; ``what``: "tick" or "lot step".

    ``unit_now`` is today's filter (from discovery); without it, ``infer_unit`` reads it
    from the newest ``UNIT_WINDOW`` bars (``inferred`` says the caller did so already). ``all_off``: the outcome when not one bar is
    on today's unit (prices: contaminated, a shifted copy; volumes: excluded, since a
    market-order step may be finer than the lot step discovery reports).
    """
    if len(values) == 0:
        return skipped(rule, "no bars")
    values = values.reshape(len(values), -1)
    if not unit_now:
        inferred = True
        unit_now = infer_unit(values[-UNIT_WINDOW:])
        if unit_now is None:
            if np.all(values[np.isfinite(values)] == 0):
                return skipped(rule, f"no non-zero value to read a {what} from")
            return at_rows(
                rule,
                "fail",
                f"{name}: the newest values are on no exchange grid (more than {MAX_DECIMALS} "
                "decimals, as a rescaled copy has)",
                np.arange(len(values)) == len(values) - 1,
                times,
                CONTAMINATED,
            )
    source = (
        f"the newest {min(UNIT_WINDOW, len(values))} bars' {what} (no discovery filter)"
        if inferred
        else f"today's {what}"
    )
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
            "first_ms": int(times[r.start]),
            "last_ms": int(times[r.end - 1]),
            "unit": float(r.unit),
            "newer_unit": float(found[i - 1].unit) if i else None,
            "bars": r.bars,
        }
        for i, r in reversed(list(enumerate(found)))
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
        if older.unit <= 0 or not plausible_unit(older.unit) or ratio > MAX_UNIT_RATIO * (1 + 1e-9):
            return at_rows(
                rule,
                "fail",
                f"{name}: values off the {newer.unit:g} {what} on a {older.unit:g} grid, "
                f"which no exchange uses next to {newer.unit:g}",
                mask,
                times,
                CONTAMINATED,
                listed,
            )
        judged = int(informative[span].sum())
        expected = chance_off(older.unit, newer.unit, k)
        if judged < MIN_REGIME_BARS:
            # too few bars to tell a filter change from an edit by themselves: another
            # timeframe must confirm it (``corroborate``), or the series is excluded
            short = short or at_rows(
                rule,
                "warn",
                f"{name}: {int(off.sum())} of {judged} bars off the {newer.unit:g} {what} on a "
                f"{older.unit:g} grid: too few bars to tell a filter change from an edit "
                "without another timeframe",
                mask,
                times,
                None,
                listed,
            )
            continue
        floor = max(MIN_OFF_BARS, DENSITY * expected * judged)
        if off.sum() < floor:
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
        whole = latest.start == 0 and len(found) == 2
        return Finding(
            rule,
            "fail",
            f"{name}: the newest {latest.bars} bars (from {listed[-1]['first']}, row "
            f"{latest.start}) are on a {latest.unit:g} grid, {source} is {unit_now:g}"
            + (
                ": not one bar is on it, as in a shifted copy"
                if whole and all_off == CONTAMINATED
                else ": the history does not fit today's filters; collect it again"
            ),
            (latest.start,),
            (listed[-1]["first"] or "",),
            all_off if whole else EXCLUDED,
            listed,
        )
    if short is not None:
        return short
    if len(listed) > 1:
        return passed(rule, f"{len(listed)} {what} regimes: {described}", regimes=listed)
    return passed(rule, f"every value on {source}, {unit_now:g}", regimes=listed)


def corroborate(
    rule: str,
    what: str,
    name: str,
    regimes_: tuple[dict, ...],
    step_ms: int,
    others: dict[str, tuple[np.ndarray, np.ndarray, int]],
) -> Finding | None:
    """A filter change shows in every timeframe; an edit of one file does not.

    ``others``: interval -> (open times, values, bar length in ms). For each
    older regime of this file, every other timeframe with ``MIN_CORROBORATING_BARS``
    bars lying wholly inside its span (its last bar's close included) must show bars
    off the newer unit there too, else the file is contaminated; a regime shorter than
    ``MIN_REGIME_BARS`` needs at least one such confirmation, else it is excluded.
    (The other direction, other timeframes' bars on the newest regime's unit, is not
    asked: a regime's first bar is only known to within the bars that happen to sit
    on the coarser grid by chance, days for a daily file.)
    """
    for regime in regimes_:
        end = regime["last_ms"] + step_ms - 1
        confirmed = False
        for interval, (times, values, other_step) in others.items():
            inside = (times >= regime["first_ms"]) & (times + other_step - 1 <= end)
            if not inside.any():
                continue
            part = values.reshape(len(values), -1)[inside]
            if regime.get("newer_unit") is None or inside.sum() < MIN_CORROBORATING_BARS:
                continue
            if on_grid(part, regime["newer_unit"]).all():
                return Finding(
                    rule,
                    "fail",
                    f"{name}: its {regime['unit']:g} {what} regime from {regime['first']} to "
                    f"{regime['last']} does not show in the {interval} bars, which stay on "
                    f"{regime['newer_unit']:g}: edited values, not a filter change",
                    (),
                    (regime["first"] or "",),
                    CONTAMINATED,
                    regimes_,
                )
            confirmed = True
        if (
            regime.get("newer_unit") is not None
            and regime["bars"] < MIN_REGIME_BARS
            and not confirmed
        ):
            return Finding(
                rule,
                "fail",
                f"{name}: a {regime['bars']}-bar {regime['unit']:g} {what} regime from "
                f"{regime['first']} that no other timeframe confirms: too few bars to tell a "
                "filter change from an edit",
                (),
                (regime["first"] or "",),
                EXCLUDED,
                regimes_,
            )
    return None


def predates_change(finding: Finding, other_findings: list[Finding]) -> bool:
    """A file with no bar on today's unit whose last bar predates the change another
    timeframe shows (a daily file the day after a tick change): not a shifted copy."""
    if finding.status != "fail" or not finding.regimes:
        return False
    newest = finding.regimes[-1]
    today = newest.get("newer_unit")
    if today is None:
        return False
    for other in other_findings:
        if other.status == "fail" or not other.regimes:
            continue
        last = other.regimes[-1]
        if (
            abs(last["unit"] - today) <= 1e-12 * max(1.0, today)
            and last["first_ms"] > newest["last_ms"]
        ):
            if len(other.regimes) > 1:  # the other file shows the change itself
                return True
    return False
