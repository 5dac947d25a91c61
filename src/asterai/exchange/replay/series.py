"""A recording's series and what they say about each symbol: klines
(``KlineSeries``), funding (``FundingSeries``), the symbol facts served in
``exchangeInfo`` (``SymbolInfo``: the recorded entry, or the tick and step derived from
every recorded number), and the number formatting the exchange uses. ``recording.py``
loads them from a folder."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import reduce
from types import MappingProxyType
from typing import Any

import numpy as np

QUOTE_SUFFIXES = ("USDT", "USDC", "USD")

log = logging.getLogger("asterai.exchange.replay.recording")  # the loader's warnings

# --------------------------------------------------------------------------- numbers


def format_number(x: float) -> str:
    """Shortest decimal string that round-trips ``x`` exactly, never in exponent notation.

    ``0.0015065 -> "0.0015065"``, ``112120.0 -> "112120"``, ``1e-05 -> "0.00001"``.
    Same result as ``numpy.format_float_positional(x, trim='-')`` but faster on
    the common path (``repr`` is the shortest round-trip form).
    """
    r = repr(float(x))
    if "e" in r or "n" in r:  # exponent form, nan or inf
        return np.format_float_positional(x, trim="-")
    if r.endswith(".0"):
        return r[:-2]
    return r


def _decimal_str(d: Decimal) -> str:
    """A ``Decimal`` as a plain string without exponent or trailing zeros."""
    s = format(d.normalize(), "f")
    return s


#: Decimals of at most this many significant digits survive a float64 round trip
#: unchanged (DBL_DIG), so two of them never parse to the same float.
_EXACT_DIGITS = 15


def _decimal_gcd(values: Iterable[Decimal]) -> Decimal:
    """gcd of non-negative decimals (``0`` for none): the coarsest grid they all sit on."""
    distinct = set(values)
    if not distinct:
        return Decimal(0)
    places = max(max(0, -int(v.as_tuple().exponent)) for v in distinct)
    g = reduce(math.gcd, (int(v.scaleb(places)) for v in distinct))
    return Decimal(g).scaleb(-places)


def _float_gcd(u: np.ndarray) -> Decimal | None:
    """gcd of sorted, distinct, positive float64 values parsed from decimal strings.

    Fast path: finds the fewest decimal places ``p`` at which every value is
    exactly ``k / 10**p`` with integer ``k < 10**15``, then takes ``np.gcd`` of
    the ``k``. ``k / 10**p`` is a correctly rounded division of two exact
    floats, so equality with the value means the decimal ``k * 10**-p`` parses
    to it, and with at most 15 significant digits it is the only such decimal:
    the one :func:`format_number` gives back. ``None`` when a value needs more
    digits; the caller then takes the exact ``Decimal`` path.
    """
    limit = 10.0**_EXACT_DIGITS
    for places in range(_EXACT_DIGITS + 1):
        scale = 10.0**places
        k = np.rint(u * scale)
        if k[-1] >= limit:
            return None
        if np.array_equal(k / scale, u):
            return Decimal(int(np.gcd.reduce(k.astype(np.int64)))).scaleb(-places)
    return None


def _grid(strings: Iterable[str], arrays: Sequence[np.ndarray] = ()) -> str | None:
    """The coarsest grid every value sits on: gcd of decimal ``strings`` and float ``arrays``.

    Floats are taken as the decimal strings they were parsed from (their
    shortest round-trip form); NaN is ignored. ``None`` when fewer than two
    distinct non-zero values exist (a single price says nothing about the tick).
    """
    exact = {abs(Decimal(s)) for s in strings}
    exact.discard(Decimal(0))
    finite = [a[np.isfinite(a)] for a in arrays]
    u = np.unique(np.abs(np.concatenate(finite))) if finite else np.empty(0)
    u = u[u > 0]
    if u.size < 2:
        exact.update(Decimal(format_number(x)) for x in u.tolist())
        u = u[:0]
    if u.size == 0 and len(exact) < 2:
        return None
    if u.size:
        g = _float_gcd(u)
        if g is None:
            exact.update(Decimal(format_number(x)) for x in u.tolist())
        else:
            exact.add(g)
    g = _decimal_gcd(exact)
    return _decimal_str(g) if g else None


# --------------------------------------------------------------------------- series


@dataclass(frozen=True, eq=False)
class KlineSeries:
    """One symbol's bars at one interval, sorted by ``open_time`` (numpy arrays).

    Optional columns are ``None`` when the recording does not hold them at
    all; missing values inside a held column are NaN (``trades`` is float64
    with NaN for missing counts).
    """

    symbol: str
    interval: str
    open_time: np.ndarray  # int64 ms
    close_time: np.ndarray  # int64 ms
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quote_volume: np.ndarray
    trades: np.ndarray | None = None
    taker_buy_base: np.ndarray | None = None
    taker_buy_quote: np.ndarray | None = None
    _encoded: list = field(default_factory=list, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.open_time.shape[0])

    def row(self, i: int) -> list:
        """Bar ``i`` in the API's kline array format (unrecorded fields are ``None``)."""

        def num(col: np.ndarray | None) -> str | None:
            if col is None:
                return None
            v = float(col[i])
            return None if math.isnan(v) else format_number(v)

        trades = None
        if self.trades is not None and not math.isnan(float(self.trades[i])):
            trades = int(self.trades[i])
        return [
            int(self.open_time[i]),
            num(self.open),
            num(self.high),
            num(self.low),
            num(self.close),
            num(self.volume),
            int(self.close_time[i]),
            num(self.quote_volume),
            trades,
            num(self.taker_buy_base),
            num(self.taker_buy_quote),
            None,  # the "ignore" field is not recorded in either layout
        ]

    def encoded_rows(self) -> list[str]:
        """Every bar as a compact JSON array string (built once, on first use)."""
        enc = self._encoded
        if len(enc) == len(self):
            return enc
        with self._lock:
            if len(enc) != len(self):
                dumps = json.JSONEncoder(separators=(",", ":")).encode
                enc[:] = [dumps(self.row(i)) for i in range(len(self))]
        return enc

    def count_at_or_before(self, t_ms: int) -> int:
        """Number of bars with ``open_time <= t_ms``."""
        return int(np.searchsorted(self.open_time, t_ms, side="right"))


@dataclass(frozen=True, eq=False)
class FundingSeries:
    """One symbol's recorded funding events, sorted by ``funding_time``."""

    symbol: str
    funding_time: np.ndarray  # int64 ms
    funding_rate: np.ndarray  # float64
    mark_price: np.ndarray | None = None  # float64, NaN where not stored

    def __len__(self) -> int:
        return int(self.funding_time.shape[0])

    def row(self, i: int) -> dict:
        out: dict = {
            "symbol": self.symbol,
            "fundingTime": int(self.funding_time[i]),
            "fundingRate": format_number(float(self.funding_rate[i])),
        }
        if self.mark_price is not None and not math.isnan(float(self.mark_price[i])):
            out["markPrice"] = format_number(float(self.mark_price[i]))
        return out

    def interval_hours(self) -> int | float | None:
        """Median spacing between funding events in hours, ``None`` with fewer than 2 events."""
        if len(self) < 2:
            return None
        hours = float(np.median(np.diff(self.funding_time))) / 3_600_000
        return round(hours) if abs(hours - round(hours)) < 1e-9 else hours


@dataclass(frozen=True)
class SymbolInfo:
    """Symbol facts: the exchange's own where recorded, else derived (``None`` = not derivable).

    ``listed`` is the symbol's entry of the recorded ``exchangeInfo.json``,
    served verbatim; ``tick_size`` and ``step_size`` then are its
    ``PRICE_FILTER`` and ``LOT_SIZE`` values.
    """

    symbol: str
    base_asset: str | None
    quote_asset: str | None
    tick_size: str | None
    step_size: str | None
    listed: Mapping[str, Any] | None = field(default=None, hash=False)


def _split_assets(symbol: str) -> tuple[str | None, str | None]:
    for quote in QUOTE_SUFFIXES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return None, None


def _filter_value(entry: Mapping[str, Any], kind: str, key: str) -> str | None:
    for f in entry.get("filters") or []:
        if isinstance(f, dict) and f.get("filterType") == kind and f.get(key) is not None:
            return str(f[key])
    return None


def _off_grid(derived: str | None, declared: str | None) -> bool:
    """Whether some real value (their gcd is ``derived``) is off the ``declared`` grid."""
    if derived is None or declared is None or Decimal(declared) <= 0:
        return False
    return Decimal(derived) % Decimal(declared) != 0


def derive_symbols(
    klines: Mapping[tuple[str, str], KlineSeries],
    funding: Mapping[str, FundingSeries],
    orderbooks: Mapping[str, dict],
    trades: Mapping[str, list],
    listed: Mapping[str, dict],
) -> dict[str, SymbolInfo]:
    by_symbol: dict[str, list[KlineSeries]] = {}
    for (s, _iv), series in klines.items():
        by_symbol.setdefault(s, []).append(series)
    names = sorted(set(by_symbol) | set(funding) | set(orderbooks) | set(trades))
    out: dict[str, SymbolInfo] = {}
    for symbol in names:
        price_strs: list[str] = []
        qty_strs: list[str] = []
        book = orderbooks.get(symbol) or {}
        for side in ("bids", "asks"):
            for level in book.get(side) or []:
                price_strs.append(str(level[0]))
                qty_strs.append(str(level[1]))
        for t in trades.get(symbol) or []:
            if "price" in t:
                price_strs.append(str(t["price"]))
            if "qty" in t:
                qty_strs.append(str(t["qty"]))
        # Kline floats were parsed from the exchange's decimal strings, so they are
        # evidence for the grids as much as the book and the trades are: a step taken
        # from book and trade sizes alone can be coarser than a real bar volume.
        series = by_symbol.get(symbol, [])
        prices = [a for k in series for a in (k.open, k.high, k.low, k.close)]
        qtys = [a for k in series for a in (k.volume, k.taker_buy_base) if a is not None]
        tick = _grid(price_strs, prices)
        step = _grid(qty_strs, qtys)
        base, quote = _split_assets(symbol)
        entry = listed.get(symbol)
        if entry is None:
            out[symbol] = SymbolInfo(symbol, base, quote, tick, step)
            continue
        declared_tick = _filter_value(entry, "PRICE_FILTER", "tickSize")
        declared_step = _filter_value(entry, "LOT_SIZE", "stepSize")
        for what, derived, declared in (
            ("tickSize", tick, declared_tick),
            ("stepSize", step, declared_step),
        ):
            if _off_grid(derived, declared):
                log.warning(
                    "%s: the recorded exchangeInfo declares %s %s, but recorded values sit "
                    "only on %s; serving the exchange's value",
                    symbol,
                    what,
                    declared,
                    derived,
                )
        out[symbol] = SymbolInfo(
            symbol,
            entry.get("baseAsset", base),
            entry.get("quoteAsset", quote),
            declared_tick,
            declared_step,
            listed=MappingProxyType(entry),
        )
    return out
