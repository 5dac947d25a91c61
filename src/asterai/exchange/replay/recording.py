"""Load a folder of recorded real Aster market data into memory, ready to serve.

Two layouts are recognised, automatically:

``shared``
    The read-only recording in ``../shared/aster-real``:
    ``klines/{SYMBOL}_{interval}.parquet`` (pandas parquet, naive-UTC
    ``timestamp`` index = bar open time; columns ``open, high, low, close,
    volume, quote_volume, taker_buy_volume``), optional
    ``orderbook/{SYMBOL}.json`` (one raw ``GET /fapi/v1/depth`` response) and
    optional ``trades/{SYMBOL}.json`` (one raw ``GET /fapi/v1/trades`` response).

``project``
    What AsterAI's collector writes (``data/historical/real_aster_only/``):
    ``{SYMBOL}_{interval}.parquet`` with ``open_time, open, high, low, close,
    volume, quote_volume, trades, taker_buy_base, taker_buy_quote, close_time``
    and ``{SYMBOL}_funding.parquet`` with ``funding_time, funding_rate,
    mark_price``; each file carries a JSON provenance record under the schema
    metadata key ``asterai.provenance``. A data root whose
    ``data/historical/real_aster_only/`` holds such files is accepted too.

Either layout may also carry the exchange's own ``GET /fapi/v1/exchangeInfo``
response as ``exchangeInfo.json`` at the root of the folder given to
:func:`load_recording` (for the project layout that is the data root or the
series folder, whichever is passed). The symbol entries it lists are served
verbatim, filters included (``PRICE_FILTER``, ``LOT_SIZE``,
``MARKET_LOT_SIZE``, ``MIN_NOTIONAL``, ...); symbols it does not list, and
every symbol when the file is absent, get filters derived from the recorded
numbers: the tick is the gcd of every recorded price (book, trades, kline
open/high/low/close of every interval) and the lot step the gcd of every
recorded base quantity (book sizes, trade sizes, kline volume and taker-buy
base volume of every interval), so the advertised grid is never coarser than
a real value. A recorded filter that real values do not sit on is still
served (it is what the exchange says) and is logged as a warning.

Every series is kept as numpy arrays sorted by time, so a page is a
``searchsorted`` slice. Nothing is invented: fields the recording does not
hold are ``None``/NaN and are served as JSON ``null``; symbol facts that
cannot be derived from the recorded numbers are left out.

The recording has a frozen clock, ``now_ms`` (see :func:`load_recording`):
the replay server answers as the exchange would have at that moment.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asterai.exchange.replay.series import (
    FundingSeries,
    KlineSeries,
    SymbolInfo,
    derive_symbols,
    format_number,
)
from asterai.intervals import EXCHANGE_INTERVALS, INTERVAL_MS
from asterai.provenance import decode_provenance

__all__ = [
    "FundingSeries",
    "KlineSeries",
    "Recording",
    "RecordingError",
    "SymbolInfo",
    "format_number",
    "load_recording",
]

log = logging.getLogger(__name__)

PROJECT_SUBDIR = Path("data") / "historical" / "real_aster_only"
#: The exchange's own exchangeInfo response, at the root of a recording folder.
EXCHANGE_INFO_FILE = "exchangeInfo.json"

_FILE_RE = re.compile(r"^(?P<symbol>[A-Z0-9]+)_(?P<kind>[0-9]+[a-zA-Z]|funding)\.parquet$")


class RecordingError(ValueError):
    """The folder is not a recording this module can read (the message says why)."""


@dataclass(frozen=True, eq=False)
class Recording:
    """A recorded folder in memory, with its frozen clock ``now_ms``."""

    folder: Path
    layout: str  # "shared" or "project"
    now_ms: int
    klines: Mapping[tuple[str, str], KlineSeries]
    funding: Mapping[str, FundingSeries]
    orderbooks: Mapping[str, dict]
    trades: Mapping[str, list]
    symbols: Mapping[str, SymbolInfo]

    def series(self, symbol: str, interval: str) -> KlineSeries | None:
        return self.klines.get((symbol, interval))

    def intervals(self, symbol: str) -> list[str]:
        """Recorded intervals of ``symbol``, finest first."""
        found = [iv for (s, iv) in self.klines if s == symbol]
        return sorted(found, key=lambda iv: INTERVAL_MS.get(iv, 1 << 62))


# --------------------------------------------------------------------------- loading


def load_recording(folder: Path | str, now_ms: int | None = None) -> Recording:
    """Read ``folder`` (either layout, see the module docstring) into a :class:`Recording`.

    The clock: an explicit ``now_ms`` wins. Otherwise, for the shared layout,
    the earliest order-book ``E`` among the books taken at or after the newest
    recorded kline open time (the moment the recording was taken); for the
    project layout, the newest ``collected_at`` in the provenance records, or
    the newest ``close_time + 1`` when no file carries one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RecordingError(f"recording folder {folder} does not exist or is not a folder")
    listed = _load_exchange_info(folder / EXCHANGE_INFO_FILE)
    if (folder / "klines").is_dir():
        return _load_shared(folder, now_ms, listed)
    if _project_files(folder):
        return _load_project(folder, now_ms, listed)
    nested = folder / PROJECT_SUBDIR
    if nested.is_dir() and _project_files(nested):
        return _load_project(nested, now_ms, listed)
    raise RecordingError(
        f"{folder} holds no recording: expected klines/{{SYMBOL}}_{{interval}}.parquet "
        f"(shared layout) or {{SYMBOL}}_{{interval}}.parquet files, here or under {PROJECT_SUBDIR}"
    )


def _load_exchange_info(path: Path) -> dict[str, dict]:
    """The symbol entries of a recorded exchangeInfo response, by symbol (empty if absent)."""
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        try:
            data = json.load(fh)
        except ValueError as err:
            raise RecordingError(f"{path}: not valid JSON ({err})") from err
    entries = data.get("symbols") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise RecordingError(
            f"{path}: expected the exchange's GET /fapi/v1/exchangeInfo response, "
            "an object with a 'symbols' list"
        )
    out: dict[str, dict] = {}
    for entry in entries:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("symbol"), str)
            and isinstance(entry.get("filters"), list)
        ):
            raise RecordingError(f"{path}: a symbol entry without 'symbol' or 'filters': {entry!r}")
        out[entry["symbol"]] = entry
    return out


def _project_files(folder: Path) -> list[tuple[str, str, Path]]:
    out = []
    for p in sorted(folder.glob("*.parquet")):
        m = _FILE_RE.match(p.name)
        if not m:
            continue
        kind = m.group("kind")
        if kind != "funding" and kind not in EXCHANGE_INTERVALS:
            continue
        out.append((m.group("symbol"), kind, p))
    return out


def _to_ms(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp (any unit) or integer-ms arrow column as int64 milliseconds."""
    t = arr.type
    if pa.types.is_timestamp(t):
        arr = arr.cast(pa.timestamp("ms", tz=t.tz)).cast(pa.int64())
    elif pa.types.is_integer(t):
        arr = arr.cast(pa.int64())
    else:
        raise RecordingError(f"time column has type {t}; expected a timestamp or integer ms")
    if arr.null_count:
        raise RecordingError("time column has missing values")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _to_float(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An arrow numeric column as float64, NaN where null."""
    arr = arr.cast(pa.float64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)


def _sorted_unique(open_time: np.ndarray, where: Path) -> np.ndarray:
    if open_time.size > 1 and not bool(np.all(np.diff(open_time) > 0)):
        raise RecordingError(f"{where}: times are not strictly increasing (unsorted or duplicated)")
    return open_time


def _load_shared(folder: Path, now_ms: int | None, listed: Mapping[str, dict]) -> Recording:
    klines: dict[tuple[str, str], KlineSeries] = {}
    for p in sorted((folder / "klines").glob("*.parquet")):
        m = _FILE_RE.match(p.name)
        if not m or m.group("kind") not in INTERVAL_MS:
            continue
        symbol, interval = m.group("symbol"), m.group("kind")
        table = pq.read_table(p)
        names = table.column_names
        tcol = (
            "timestamp" if "timestamp" in names else ("open_time" if "open_time" in names else None)
        )
        if tcol is None:
            raise RecordingError(f"{p}: no 'timestamp' column (bar open time)")
        open_time = _sorted_unique(_to_ms(table.column(tcol)), p)
        step = INTERVAL_MS[interval]

        def col(name: str, *, required: bool = True, _t=table, _p=p) -> np.ndarray | None:
            if name not in _t.column_names:
                if required:
                    raise RecordingError(f"{_p}: column {name!r} is missing")
                return None
            return _to_float(_t.column(name))

        klines[(symbol, interval)] = KlineSeries(
            symbol=symbol,
            interval=interval,
            open_time=open_time,
            close_time=open_time + (step - 1),
            open=col("open"),
            high=col("high"),
            low=col("low"),
            close=col("close"),
            volume=col("volume"),
            quote_volume=col("quote_volume"),
            trades=None,
            taker_buy_base=col("taker_buy_volume", required=False),
            taker_buy_quote=None,
        )
    if not klines:
        raise RecordingError(f"{folder / 'klines'} holds no {{SYMBOL}}_{{interval}}.parquet file")

    orderbooks = _load_json_dir(folder / "orderbook", dict)
    trades = _load_json_dir(folder / "trades", list)

    if now_ms is None:
        newest_open = max(int(s.open_time[-1]) for s in klines.values() if len(s))
        stamps = sorted(int(b["E"]) for b in orderbooks.values() if "E" in b)
        after = [e for e in stamps if e >= newest_open]
        if after:
            now_ms = after[0]
        else:
            # No book taken after the last bar opened: the last bar's close is the
            # latest moment the klines themselves vouch for.
            now_ms = max(int(s.close_time[-1]) for s in klines.values() if len(s)) + 1

    symbols = derive_symbols(klines, {}, orderbooks, trades, listed)
    return Recording(
        folder=folder,
        layout="shared",
        now_ms=int(now_ms),
        klines=MappingProxyType(klines),
        funding=MappingProxyType({}),
        orderbooks=MappingProxyType(orderbooks),
        trades=MappingProxyType(trades),
        symbols=MappingProxyType(symbols),
    )


def _load_json_dir(folder: Path, kind: type) -> dict:
    out: dict = {}
    if not folder.is_dir():
        return out
    for p in sorted(folder.glob("*.json")):
        with p.open("rb") as fh:
            data = json.load(fh)
        if not isinstance(data, kind):
            raise RecordingError(f"{p}: expected a JSON {kind.__name__}")
        out[p.stem] = data
    return out


def _provenance_collected_at(schema: pa.Schema) -> int | None:
    try:
        prov = decode_provenance(schema.metadata)
    except ValueError:
        return None
    values = []
    if isinstance(prov, dict):
        if isinstance(prov.get("collected_at"), int):
            values.append(prov["collected_at"])
        # merged files keep a list of the contributing collections
        for key in ("collections", "merged", "history"):
            items = prov.get(key)
            if isinstance(items, list):
                values += [
                    c["collected_at"]
                    for c in items
                    if isinstance(c, dict) and isinstance(c.get("collected_at"), int)
                ]
    return max(values) if values else None


def _load_project(folder: Path, now_ms: int | None, listed: Mapping[str, dict]) -> Recording:
    klines: dict[tuple[str, str], KlineSeries] = {}
    funding: dict[str, FundingSeries] = {}
    collected: list[int] = []
    for symbol, kind, p in _project_files(folder):
        table = pq.read_table(p)
        got = _provenance_collected_at(table.schema)
        if got is not None:
            collected.append(got)
        names = set(table.column_names)

        def col(name: str, *, required: bool = True, _t=table, _p=p, _n=names):
            if name not in _n:
                if required:
                    raise RecordingError(f"{_p}: column {name!r} is missing")
                return None
            return _to_float(_t.column(name))

        if kind == "funding":
            for need in ("funding_time", "funding_rate"):
                if need not in names:
                    raise RecordingError(f"{p}: column {need!r} is missing")
            ft = _sorted_unique(_to_ms(table.column("funding_time")), p)
            funding[symbol] = FundingSeries(
                symbol=symbol,
                funding_time=ft,
                funding_rate=col("funding_rate"),
                mark_price=col("mark_price", required=False),
            )
            continue
        if kind not in INTERVAL_MS:
            continue  # calendar intervals (3d, 1w, 1M) are not served
        if "open_time" not in names:
            raise RecordingError(f"{p}: column 'open_time' is missing")
        open_time = _sorted_unique(_to_ms(table.column("open_time")), p)
        if "close_time" in names:
            close_time = _to_ms(table.column("close_time"))
        else:
            close_time = open_time + (INTERVAL_MS[kind] - 1)
        klines[(symbol, kind)] = KlineSeries(
            symbol=symbol,
            interval=kind,
            open_time=open_time,
            close_time=close_time,
            open=col("open"),
            high=col("high"),
            low=col("low"),
            close=col("close"),
            volume=col("volume"),
            quote_volume=col("quote_volume"),
            trades=col("trades", required=False),
            taker_buy_base=col("taker_buy_base", required=False),
            taker_buy_quote=col("taker_buy_quote", required=False),
        )
    if not klines and not funding:
        raise RecordingError(f"{folder} holds no readable kline or funding parquet file")

    if now_ms is None:
        if collected:
            now_ms = max(collected)
        else:
            ends = [int(s.close_time[-1]) + 1 for s in klines.values() if len(s)]
            ends += [int(f.funding_time[-1]) for f in funding.values() if len(f)]
            if not ends:
                raise RecordingError(f"{folder}: every series is empty; no clock can be derived")
            now_ms = max(ends)

    symbols = derive_symbols(klines, funding, {}, {}, listed)
    return Recording(
        folder=folder,
        layout="project",
        now_ms=int(now_ms),
        klines=MappingProxyType(klines),
        funding=MappingProxyType(funding),
        orderbooks=MappingProxyType({}),
        trades=MappingProxyType({}),
        symbols=MappingProxyType(symbols),
    )


# --------------------------------------------------------------------------- symbol facts
