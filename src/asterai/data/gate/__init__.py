"""The data quality gate: nothing reaches training unless it is verified, real Aster data.

``validate(settings)`` checks every collected series (symbol x interval, and funding) in
``data/historical/real_aster_only/`` against named rules, gives each a quality score and
each symbol one of three outcomes, writes ``data/training_readiness_validation.json``
and, when nothing is contaminated, the point-in-time universe ``data/universe.parquet``.
``verified_series(settings, ...)`` is how later stages load data: it runs the same gate
and hands out only trainable series, so training on refused or unverified data is
impossible, not just discouraged. The gate never modifies or deletes a file.

Outcomes (``model``): **trainable** passes every rule; **excluded** is real data unfit
to train or trade on, left out with its reasons; **contaminated** is evidence that a
file is not what the exchange sent, and stops every later stage until the file is
removed or collected again. The verdict is READY when no file is contaminated, the
required symbols (``quality.required_symbols``, BTCUSDT and ETHUSDT by default, plus
any named with ``--symbols``) are trainable, and at least
``quality.min_trainable_symbols`` symbols are.

The rules, one module per family, each a pure function over arrays; the outcome of a
failure in brackets:

- ``provenance``: the collector's record exists, says ``source: aster``, and matches
  the file (rows, first and last time, symbol, interval, request hashes) [contaminated].
- ``series``: schema (columns, dtypes, sorted unique open times on the grid, exact close
  times, nothing in the future of or still open at the collection time) [contaminated];
  completeness (reaches the last bar closed at collection time; at most
  ``quality.max_missing_share`` bars missing; at least ``discovery.min_history_bars`` base
  bars) [excluded].
- ``values``: sanity (impossible values: non-finite, prices <= 0, ``low <= close <=
  high`` broken, negative volumes, taker-buy outside 0..volume [contaminated];
  quote volume off volume x price, opens outside the range on more than 1% of bars
  [excluded]); outliers (more than 2%, at least 3, returns beyond robust z 10)
  [excluded]; tradeability (a dead market: no volume, one price) [excluded].
- ``grids``: prices on the tick and volumes on the lot step, allowing contiguous filter
  regimes over time (see its docstring for the exact rule); isolated off-grid values
  and non-exchange grids [contaminated]; a newest regime off today's grid [excluded].
- ``cross``: timeframes (4h and 1d bars agree with the 1h bars on close and volume
  exactly, high and low within 10%) and duplicates (a market whose returns repeat
  another's) [contaminated]; a lower timeframe starting after the higher ones [excluded].
- ``funding``: times sorted, on the hour, none after collection [contaminated]; rates
  within the cap [excluded].
- per symbol: ``user`` (you excluded it) [excluded]. Discovery's verdict (trading today?
  enough bars today?) is reported as a warning, never applied to the past: a market that
  stopped trading keeps its history, and the universe marks it untradeable from then on.

Thresholds were measured on the real recording first: the exchange's own 4h and 1d bars
agree with their 1h bars on close and volume exactly but not on open, high and low
(4.4% of 4h opens differ, highs and lows by up to 6.8%); one real BTCUSDT 4h bar opens
below its own low; at most 0.7% of real 1h returns are beyond robust z 10 (APEUSDT in
the 2025-10-10 crash); real prices cluster on round values, so as few as 16% of a
symbol's bars (1000PEPEUSDT) leave a ten times coarser tick.
"""

from asterai.data.gate.model import (
    CONTAMINATED,
    EXCLUDED,
    OUTCOMES,
    RULES,
    TRAINABLE,
    Finding,
    SeriesVerdict,
)
from asterai.data.gate.report import GateReport, render
from asterai.data.gate.run import GateRefused, GateUsageError, validate, verified_series

__all__ = [
    "CONTAMINATED",
    "EXCLUDED",
    "OUTCOMES",
    "RULES",
    "TRAINABLE",
    "Finding",
    "GateRefused",
    "GateReport",
    "GateUsageError",
    "SeriesVerdict",
    "render",
    "validate",
    "verified_series",
]
