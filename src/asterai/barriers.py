"""Where a trade's stop and target sit, and when the market reaches them: one definition
for the labels (``features/labels.py``) and the backtest's kernel (``backtest/kernel.py``),
so a label and a trade on the same signal follow the same rules. (The one difference:
the label places its barriers from the bar's open, the kernel from its own fill, the open
plus slippage and a tick against the trader; a trade's barriers therefore sit slightly
further against it than its label's, the cautious side.)

- **Placement.** From the entry, the stop ``sl_atr`` ATRs away against the trade and the
  target ``tp_atr`` ATRs away with it, both on the symbol's tick, each rounded away from
  the entry (a stop is never tighter, a target never nearer, than asked).
- **The stop** is touched when the bar's low (a long) or high (a short) reaches it.
- **The target** is a resting limit order. A bar that only *touches* it proves nothing
  about our place in the queue, so it fills only when the bar trades at least one tick
  *through* it: ``high >= target + tick`` for a long's sell, ``low <= target - tick``
  for a short's buy (strictly beyond it when the tick is unknown). Prices lie on the
  tick grid, so "a tick beyond" is tested as "more than half a tick beyond", which float
  rounding cannot flip.
- **The time limit**: a position held ``horizon`` bars exits at that bar's close
  (``time_up``; the backtest fills it at the close, a live order sent then at the next
  open).
- **Market fills** (entries, stops, gaps, time limits, exits on a signal, the circuit
  breaker, liquidation, the end of the data) pay the full slippage against the trader
  and then the tick against him too. The slipped price is never clipped to the bar's
  range: our own order would have printed there.
"""

from __future__ import annotations

import math

from numba import njit


@njit(cache=True)
def _on_grid(steps: float, tick: float) -> float:
    """``steps`` ticks as the price the exchange would print: ``steps x tick`` rounded to
    the tick's decimals (plus two), so that 1015 x 0.001 is 1.015 and not 1.0150000000000001,
    and a low printed exactly at a stop compares equal to it."""
    # as integers over a power of ten, whose one division rounds correctly to the double
    # nearest the decimal price
    digits = int(math.ceil(-math.log10(tick) - 1e-9)) + 2 if tick < 1.0 else 2
    scale = 10.0**digits
    return (steps * math.floor(tick * scale + 0.5)) / scale


@njit(cache=True)
def tick_up(price: float, tick: float) -> float:
    """``price`` rounded up onto the tick grid (unchanged when the tick is unknown)."""
    if tick <= 0.0:
        return price
    return _on_grid(math.ceil(price / tick - 1e-9), tick)


@njit(cache=True)
def tick_down(price: float, tick: float) -> float:
    """``price`` rounded down onto the tick grid (unchanged when the tick is unknown)."""
    if tick <= 0.0:
        return price
    return _on_grid(math.floor(price / tick + 1e-9), tick)


@njit(cache=True)
def market_fill(price: float, buying: bool, slippage: float, tick: float) -> float:
    """A market order's fill at ``price``: the full slippage against the trader, then the
    tick against him too."""
    if buying:
        return tick_up(price * (1.0 + slippage), tick)
    return tick_down(price * (1.0 - slippage), tick)


@njit(cache=True)
def place(
    entry: float, side: float, atr: float, tp_atr: float, sl_atr: float, tick: float
) -> tuple[float, float]:
    """(stop, target) of a trade entered at ``entry`` (``side`` +1 long, -1 short)."""
    if side > 0:
        return tick_down(entry - sl_atr * atr, tick), tick_up(entry + tp_atr * atr, tick)
    return tick_up(entry + sl_atr * atr, tick), tick_down(entry - tp_atr * atr, tick)


@njit(cache=True)
def stop_touched(side: float, low: float, high: float, stop: float) -> bool:
    """The bar reached the stop (its low for a long, its high for a short)."""
    return low <= stop if side > 0 else high >= stop


@njit(cache=True)
def target_filled(side: float, low: float, high: float, target: float, tick: float) -> bool:
    """The bar traded at least one tick through the resting target (a bare touch is not
    a fill: our order may have stood behind the queue)."""
    beyond = 0.5 * tick
    if side > 0:
        return high > target + beyond if tick > 0.0 else high > target
    return low < target - beyond if tick > 0.0 else low < target


@njit(cache=True)
def time_up(t: int, entry_t: int, horizon: int) -> bool:
    """A position entered at bar ``entry_t`` has been held ``horizon`` bars at the close
    of bar ``t`` (the labels' time limit): it exits now."""
    return t - entry_t + 1 >= horizon
