"""The quality gate against a corpus of corrupted copies of a real collection.

One genuine collection is made over the replay server from the real recording. Each
variant copies it, corrupts ONE file (or writes one new file) inside the test, and runs
the gate: the target symbol must be refused by the expected rule, the refusing finding
must name the file (and, for row-level rules, the row that was corrupted), bystanders
must stay trainable, and no file may be modified or deleted by the gate. The corrupted
frames are built here, in a test of the guard, from the real bars (DESIGN.md rule 1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import FAST_EXCHANGE, real_data_dir

from asterai.cli import main
from asterai.config import Settings, load_settings
from asterai.data.gate import (
    CONTAMINATED,
    EXCLUDED,
    TRAINABLE,
    GateRefused,
    GateReport,
    SeriesVerdict,
    validate,
    verified_series,
)
from asterai.data.store import (
    FUNDING_SCHEMA,
    KLINE_SCHEMA,
    PROVENANCE_KEY,
    read_provenance,
    read_series,
)
from asterai.paths import DataPaths

HOUR_MS = 3_600_000
DEAD = ("1INCHUSDT", "AIUSDT", "ALGOUSDT")
# Never corrupted, never a source of a copy: they must stay trainable in every variant.
BYSTANDERS = ("AAVEUSDT", "1000SHIBUSDT")
TICK = {"BTCUSDT": 0.1, "ETHUSDT": 0.01, "SOLUSDT": 0.0001, "ADAUSDT": 0.0001}


def recorded_symbols(real_data: Path) -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in (real_data / "klines").glob("*_1h.parquet")})


# -- the genuine collection and its copies ------------------------------------------------


@pytest.fixture(scope="module")
def genuine(collected_root, real_data) -> Path:
    """Discovery plus every recorded symbol collected over loopback (shared: never
    validated in place, only copied)."""
    assert len(recorded_symbols(real_data)) == 19
    assert sorted(p.name for p in DataPaths.at(collected_root).historical.glob("*_1h.parquet")) == [
        f"{s}_1h.parquet" for s in recorded_symbols(real_data)
    ]
    return collected_root


def copy_of(genuine: Path, dest: Path) -> Settings:
    shutil.copytree(genuine / "data", dest / "data")
    return load_settings(dest, exchange=FAST_EXCHANGE)


def hist(settings: Settings) -> Path:
    return DataPaths.at(settings.data_root).historical


def fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file under the root, except the two the gate is meant to write."""
    written = {DataPaths.at(root).validation, DataPaths.at(root).universe}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and p.resolve() not in written
    }


def gate(settings: Settings) -> GateReport:
    """Run the gate and prove it left every file exactly as it found it."""
    before = fingerprint(settings.data_root)
    report = validate(settings, environment=False)
    assert fingerprint(settings.data_root) == before, "the gate modified or deleted a file"
    return report


# -- reading and writing corrupted files ----------------------------------------------------


def load(folder: Path, name: str) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    path = folder / name
    kind = "funding" if name.endswith("_funding.parquet") else "klines"
    return read_series(path, kind).frame, read_provenance(path)


def write(
    folder: Path,
    name: str,
    frame: pd.DataFrame,
    provenance: dict[str, Any] | None,
    schema: pa.Schema | None = KLINE_SCHEMA,
) -> None:
    """Write ``frame`` with ``provenance`` as given, bypassing write_series's validation.

    ``schema=None`` keeps the frame's own column types (for the wrong-dtype variants).
    """
    if schema is not None:
        # a NaN in a required float column stays a NaN (pandas would make it a null)
        columns = [
            pa.array(
                frame[f.name].to_numpy() if pa.types.is_floating(f.type) else frame[f.name],
                type=f.type,
                from_pandas=f.nullable,
            )
            for f in schema
        ]
        table = pa.Table.from_arrays(columns, schema=schema)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    if provenance is not None:
        meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode()
    pq.write_table(table.replace_schema_metadata(meta), folder / name)


def ms(values: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(values).as_unit("ms").asi8


def forged(prov: dict[str, Any], frame: pd.DataFrame, **changes: Any) -> dict[str, Any]:
    """The provenance record rewritten to match ``frame`` (rows, first and last time)."""
    times = ms(frame["open_time"])
    out = {
        **prov,
        "rows": len(frame),
        "first_open_time": int(times[0]),
        "last_open_time": int(times[-1]),
    }
    out.update(changes)
    return out


def shift(frame: pd.DataFrame, delta: pd.Timedelta) -> pd.DataFrame:
    out = frame.copy()
    out["open_time"] = out["open_time"] + delta
    out["close_time"] = out["close_time"] + delta
    return out


def bar_row(frame: pd.DataFrame, when: str) -> int:
    """The row of the bar opening at ``when`` (UTC)."""
    rows = np.flatnonzero(frame["open_time"] == pd.Timestamp(when, tz="UTC"))
    assert len(rows) == 1, when
    return int(rows[0])


def funding_frame(times_ms: np.ndarray, rates: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "funding_time": pd.to_datetime(times_ms, unit="ms", utc=True).as_unit("ms"),
            "funding_rate": rates.astype(float),
            "mark_price": np.nan,
        }
    )


def funding_provenance(prov: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    """A valid-looking fundingRate record for ``frame`` (requests == len(sha256))."""
    times = ms(frame["funding_time"])
    return {
        **prov,
        "endpoint": "/fapi/v1/fundingRate",
        "interval": None,
        "first_funding_time": int(times[0]),
        "last_funding_time": int(times[-1]),
        "rows": len(frame),
        "requests": 1,
        "sha256": [hashlib.sha256(times.tobytes()).hexdigest()],
    }


def funding_schedule(folder: Path, symbol: str) -> tuple[np.ndarray, dict[str, Any]]:
    """8-hourly funding times over the symbol's 1h window, and its funding file's record."""
    bars, _ = load(folder, f"{symbol}_1h.parquet")
    times = ms(bars["open_time"])
    first = times[0] + (-times[0]) % (8 * HOUR_MS)
    _, prov = load(folder, f"{symbol}_funding.parquet")
    assert prov is not None
    return np.arange(first, times[-1], 8 * HOUR_MS, dtype=np.int64), prov


# -- the corpus ------------------------------------------------------------------------------
# Each corruption takes the historical folder and returns the row it corrupted in the
# expected file (None for a file-level refusal: a missing record, a wrong dtype, ...).


def provenance_removed(h: Path) -> None:
    frame, _ = load(h, "BTCUSDT_1h.parquet")
    write(h, "BTCUSDT_1h.parquet", frame, None)


def provenance_synthetic(h: Path) -> None:
    frame, prov = load(h, "BTCUSDT_1h.parquet")
    write(h, "BTCUSDT_1h.parquet", frame, {**prov, "source": "synthetic"})


def provenance_rows_mismatch(h: Path) -> None:
    frame, prov = load(h, "SOLUSDT_1h.parquet")
    write(h, "SOLUSDT_1h.parquet", frame, {**prov, "rows": prov["rows"] + 1})


def provenance_of_another_symbol(h: Path) -> None:
    frame, _ = load(h, "ETHUSDT_1h.parquet")
    _, btc_prov = load(h, "BTCUSDT_1h.parquet")
    write(h, "ETHUSDT_1h.parquet", frame, forged(btc_prov, frame))


def provenance_hashes_dropped(h: Path) -> None:
    frame, prov = load(h, "SOLUSDT_4h.parquet")
    write(h, "SOLUSDT_4h.parquet", frame, {**prov, "sha256": []})


def shifted_30_minutes_forged(h: Path) -> int:
    frame, prov = load(h, "BTCUSDT_1h.parquet")
    bad = shift(frame, pd.Timedelta(minutes=-30))
    write(h, "BTCUSDT_1h.parquet", bad, forged(prov, bad))
    return 0


def shifted_one_bar_forged(h: Path) -> int:
    # every close lands one hour early: the 4h closes no longer equal the last 1h close
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    bad = shift(frame, pd.Timedelta(hours=-1))
    write(h, "ETHUSDT_1h.parquet", bad, forged(prov, bad))
    return 0  # the first 4h bar (2025-09-14 08:00) is complete in the shifted 1h file


def duplicated_bar(h: Path) -> int:
    frame, prov = load(h, "SOLUSDT_1h.parquet")
    bad = pd.concat([frame.iloc[:101], frame.iloc[100:101], frame.iloc[101:]], ignore_index=True)
    write(h, "SOLUSDT_1h.parquet", bad, forged(prov, bad))
    return 101


def swapped_bars(h: Path) -> int:
    frame, prov = load(h, "SOLUSDT_1h.parquet")
    order = np.arange(len(frame))
    order[[200, 201]] = [201, 200]
    write(h, "SOLUSDT_1h.parquet", frame.iloc[order].reset_index(drop=True), prov)
    return 201


def removed_day_provenance_kept(h: Path) -> None:
    frame, prov = load(h, "ADAUSDT_1h.parquet")
    start = bar_row(frame, "2025-10-01 00:00")
    write(h, "ADAUSDT_1h.parquet", frame.drop(index=range(start, start + 24)), prov)


def removed_week_forged(h: Path) -> int:
    frame, prov = load(h, "UNIUSDT_1h.parquet")
    start = bar_row(frame, "2025-10-01 00:00")
    bad = frame.drop(index=range(start, start + 7 * 24)).reset_index(drop=True)
    write(h, "UNIUSDT_1h.parquet", bad, forged(prov, bad))
    return start  # the first bar after the gap


def swapped_high_low(h: Path) -> int:
    frame, prov = load(h, "BTCUSDT_1h.parquet")
    row = bar_row(frame, "2025-10-10 21:00")  # the crash bar: low 101,500
    assert frame.at[row, "low"] < frame.at[row, "close"] < frame.at[row, "high"]
    frame.loc[row, ["high", "low"]] = frame.loc[row, ["low", "high"]].to_numpy()
    write(h, "BTCUSDT_1h.parquet", frame, prov)
    return row


def off_grid_price(h: Path) -> int:
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    frame.loc[50, "high"] += TICK["ETHUSDT"] / 2
    write(h, "ETHUSDT_1h.parquet", frame, prov)
    return 50


def rescaled_copy_of_btc(h: Path) -> None:
    btc, _ = load(h, "BTCUSDT_1h.parquet")
    _, eth_prov = load(h, "ETHUSDT_1h.parquet")
    scale = 0.0365
    bad = btc.copy()
    for col in ("open", "high", "low", "close"):
        bad[col] = btc[col] * scale
    bad["volume"] = btc["volume"] / scale
    bad["taker_buy_base"] = btc["taker_buy_base"] / scale
    write(h, "ETHUSDT_1h.parquet", bad, forged(eth_prov, bad))


def shifted_copy_of_btc(h: Path) -> None:
    # SOLUSDT's own timestamps, BTCUSDT's bars from five hours later (a lagged copy)
    btc, _ = load(h, "BTCUSDT_1h.parquet")
    sol, sol_prov = load(h, "SOLUSDT_1h.parquet")
    bad = btc.iloc[5:].reset_index(drop=True)
    bad["open_time"] = sol["open_time"].iloc[: len(bad)].to_numpy()
    bad["close_time"] = sol["close_time"].iloc[: len(bad)].to_numpy()
    write(h, "SOLUSDT_1h.parquet", bad, forged(sol_prov, bad))


def four_hours_resampled_from_another_symbol(h: Path) -> int:
    ada, _ = load(h, "ADAUSDT_1h.parquet")
    _, prov = load(h, "SOLUSDT_4h.parquet")
    ada = ada.set_index("open_time")
    agg = ada.resample("4h").agg(
        {
            "open": "first",
            "high": "max",
            "low": "min",
            "close": "last",
            "volume": "sum",
            "quote_volume": "sum",
            "taker_buy_base": "sum",
        }
    )
    counts = ada["close"].resample("4h").size()
    agg = agg[counts == 4].reset_index()
    agg["trades"] = pd.array([None] * len(agg), dtype="Int64")
    agg["taker_buy_quote"] = np.nan
    agg["close_time"] = agg["open_time"] + pd.Timedelta(hours=4) - pd.Timedelta(milliseconds=1)
    write(h, "SOLUSDT_4h.parquet", agg, forged(prov, agg))
    sol1, _ = load(h, "SOLUSDT_1h.parquet")
    first_complete = ms(sol1["open_time"])[0]
    first_complete += (-first_complete) % (4 * HOUR_MS)
    return int(np.searchsorted(ms(agg["open_time"]), first_complete))


def nan_close(h: Path) -> int:
    frame, prov = load(h, "2ZUSDT_1h.parquet")
    frame.loc[100, "close"] = np.nan
    write(h, "2ZUSDT_1h.parquet", frame, prov)
    return 100


def negative_volume(h: Path) -> int:
    frame, prov = load(h, "4USDT_1h.parquet")
    row = int(np.flatnonzero(frame["volume"] > 0)[20])
    frame.loc[row, "volume"] = -frame.at[row, "volume"]
    write(h, "4USDT_1h.parquet", frame, prov)
    return row


def zero_volume_bar_moved(h: Path) -> int:
    # a closed-market hour of the stock perpetual (no volume, the previous close repeated,
    # as every zero-volume bar of the recording is) given a new close a dollar higher,
    # as a data vendor's fill-in would: no trade, yet a new price
    frame, prov = load(h, "AAPLUSDT_1h.parquet")
    hours = pd.to_datetime(frame["open_time"], utc=True).dt.hour.to_numpy()
    quiet = np.flatnonzero((frame["volume"].to_numpy() == 0) & (hours % 4 != 3))
    row = int(quiet[quiet > 0][30])
    moved = round(float(frame.at[row - 1, "close"]) + 1.0, 2)
    frame.loc[row, ["close", "high"]] = [moved, max(moved, float(frame.at[row, "high"]))]
    write(h, "AAPLUSDT_1h.parquet", frame, prov)
    return row


def future_bar(h: Path) -> int:
    frame, prov = load(h, "BTCUSDT_1h.parquet")
    extra = frame.iloc[[-1]].copy()
    extra = shift(extra, pd.Timedelta(days=2))
    bad = pd.concat([frame, extra], ignore_index=True)
    write(h, "BTCUSDT_1h.parquet", bad, forged(prov, bad))
    return len(frame)


def still_open_bar_appended(h: Path) -> int:
    # the recording's own last bar, which was still open when it was recorded
    frame, prov = load(h, "BTCUSDT_4h.parquet")
    raw = pd.read_parquet(real_data_dir() / "klines" / "BTCUSDT_4h.parquet").iloc[-1]
    opened = pd.Timestamp(raw.name, tz="UTC").as_unit("ms")
    extra = pd.DataFrame(
        {
            "open_time": [opened],
            "open": raw["open"],
            "high": raw["high"],
            "low": raw["low"],
            "close": raw["close"],
            "volume": raw["volume"],
            "quote_volume": raw["quote_volume"],
            "trades": pd.array([None], dtype="Int64"),
            "taker_buy_base": raw["taker_buy_volume"],
            "taker_buy_quote": np.nan,
            "close_time": [opened + pd.Timedelta(hours=4) - pd.Timedelta(milliseconds=1)],
        }
    )
    extra["open_time"] = extra["open_time"].dt.as_unit("ms")
    extra["close_time"] = extra["close_time"].dt.as_unit("ms")
    bad = pd.concat([frame, extra], ignore_index=True)
    assert ms(bad["open_time"])[-1] - ms(bad["open_time"])[-2] == 4 * HOUR_MS
    write(h, "BTCUSDT_4h.parquet", bad, forged(prov, bad))
    return len(frame)


def four_hour_close_changed(h: Path) -> int:
    frame, prov = load(h, "BTCUSDT_4h.parquet")
    row = 40  # a close moved to the bar's low: still sane, still on the tick grid
    assert frame.at[row, "low"] != frame.at[row, "close"]
    frame.loc[row, "close"] = frame.at[row, "low"]
    write(h, "BTCUSDT_4h.parquet", frame, prov)
    return row


def daily_volume_changed(h: Path) -> int:
    frame, prov = load(h, "ETHUSDT_1d.parquet")
    frame.loc[10, "volume"] += 1.0  # still on the lot step, still consistent with price
    frame.loc[10, "quote_volume"] += frame.at[10, "close"]
    write(h, "ETHUSDT_1d.parquet", frame, prov)
    return 10


def quote_volume_x10(h: Path) -> int:
    frame, prov = load(h, "SOLUSDT_1h.parquet")
    row = int(np.flatnonzero(frame["volume"] > 0)[123])
    frame.loc[row, "quote_volume"] *= 10
    write(h, "SOLUSDT_1h.parquet", frame, prov)
    return row


def taker_buy_above_volume(h: Path) -> int:
    frame, prov = load(h, "ADAUSDT_1h.parquet")
    frame.loc[300, "taker_buy_base"] = frame.at[300, "volume"] * 2 + 1
    write(h, "ADAUSDT_1h.parquet", frame, prov)
    return 300


def volume_off_lot_step(h: Path) -> int:
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    frame.loc[77, "volume"] += 0.0004  # the lot step is 0.001
    write(h, "ETHUSDT_1h.parquet", frame, prov)
    return 77


def dead_replacement(h: Path) -> None:
    frame, prov = load(h, "UNIUSDT_1h.parquet")
    price = frame["close"].iloc[-1]
    for col in ("open", "high", "low", "close"):
        frame[col] = price
    for col in ("volume", "quote_volume", "taker_buy_base"):
        frame[col] = 0.0
    write(h, "UNIUSDT_1h.parquet", frame, prov)


def return_spikes(h: Path) -> int:
    frame, prov = load(h, "SOLUSDT_1h.parquet")
    rows = np.arange(10, len(frame) - 1, 20)  # 5% of bars
    spiked = np.round(frame.loc[rows, "close"].to_numpy() * 1.6 / TICK["SOLUSDT"])
    frame.loc[rows, "close"] = spiked * TICK["SOLUSDT"]
    frame.loc[rows, "high"] = np.maximum(frame.loc[rows, "high"], frame.loc[rows, "close"])
    frame.loc[rows, "quote_volume"] = frame.loc[rows, "volume"] * frame.loc[rows, "close"]
    write(h, "SOLUSDT_1h.parquet", frame, prov)
    return int(rows[0])


def open_time_int64(h: Path) -> None:
    frame, prov = load(h, "BTCUSDT_1h.parquet")
    frame["open_time"] = ms(frame["open_time"])
    write(h, "BTCUSDT_1h.parquet", frame, prov, schema=None)


def naive_timestamps(h: Path) -> None:
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    frame["open_time"] = frame["open_time"].dt.tz_localize(None)
    frame["close_time"] = frame["close_time"].dt.tz_localize(None)
    write(h, "ETHUSDT_1h.parquet", frame, prov, schema=None)


def missing_column(h: Path) -> None:
    frame, prov = load(h, "SOLUSDT_1h.parquet")
    schema = pa.schema([f for f in KLINE_SCHEMA if f.name != "quote_volume"])
    write(h, "SOLUSDT_1h.parquet", frame.drop(columns="quote_volume"), prov, schema=schema)


def wrong_close_time(h: Path) -> int:
    frame, prov = load(h, "ADAUSDT_4h.parquet")
    frame.loc[7, "close_time"] = frame.at[7, "open_time"] + pd.Timedelta(hours=1)
    write(h, "ADAUSDT_4h.parquet", frame, prov)
    return 7


def truncated_parquet(h: Path) -> None:
    path = h / "2ZUSDT_1h.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def funding_rate_beyond_cap(h: Path) -> int:
    times, prov = funding_schedule(h, "BTCUSDT")
    rates = np.full(len(times), 0.0001)
    rates[30] = 0.05  # above the default 3% cap
    frame = funding_frame(times, rates)
    write(h, "BTCUSDT_funding.parquet", frame, funding_provenance(prov, frame), FUNDING_SCHEMA)
    return 30


def funding_off_the_hour(h: Path) -> int:
    times, prov = funding_schedule(h, "ETHUSDT")
    times[12] += 17 * 60_000
    frame = funding_frame(times, np.full(len(times), 0.0001))
    write(h, "ETHUSDT_funding.parquet", frame, funding_provenance(prov, frame), FUNDING_SCHEMA)
    return 12


def funding_without_provenance(h: Path) -> None:
    times, _ = funding_schedule(h, "SOLUSDT")
    frame = funding_frame(times, np.full(len(times), 0.0001))
    write(h, "SOLUSDT_funding.parquet", frame, None, FUNDING_SCHEMA)


def funding_in_the_future(h: Path) -> int:
    times, prov = funding_schedule(h, "BTCUSDT")
    now = prov["collected_at"]
    later = np.arange(times[-1] + 8 * HOUR_MS, now + 3 * 24 * HOUR_MS, 8 * HOUR_MS)
    times = np.r_[times, later]
    frame = funding_frame(times, np.full(len(times), 0.0001))
    write(h, "BTCUSDT_funding.parquet", frame, funding_provenance(prov, frame), FUNDING_SCHEMA)
    return int(np.flatnonzero(times > now)[0])


# -- corruptions that only a cross-check can see (the last bar, the timeframes) -------------


def last_day_removed_forged(h: Path) -> int:
    # the 1h file stops a day before the collection time; 4h and 1d go on to the end
    frame, prov = load(h, "BTCUSDT_1h.parquet")
    bad = frame.iloc[:-24].reset_index(drop=True)
    write(h, "BTCUSDT_1h.parquet", bad, forged(prov, bad))
    return len(bad) - 1


def every_timeframe_shifted_one_day_forged(h: Path) -> int:
    # 1h, 4h and 1d shifted together: consistent with each other, a day behind the clock
    for interval in ("1h", "4h", "1d"):
        frame, prov = load(h, f"SOLUSDT_{interval}.parquet")
        bad = shift(frame, pd.Timedelta(days=-1))
        write(h, f"SOLUSDT_{interval}.parquet", bad, forged(prov, bad))
    return len(load(h, "SOLUSDT_1h.parquet")[0]) - 1


def four_hour_high_raised_half(h: Path) -> int:
    frame, prov = load(h, "BTCUSDT_4h.parquet")
    frame.loc[40, "high"] = np.round(frame.at[40, "high"] * 1.5 / TICK["BTCUSDT"]) * TICK["BTCUSDT"]
    write(h, "BTCUSDT_4h.parquet", frame, prov)
    return 40


def one_hour_wick_tripled(h: Path) -> int:
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    frame.loc[100, "high"] = np.round(frame.at[100, "high"] * 3 / TICK["ETHUSDT"]) * TICK["ETHUSDT"]
    write(h, "ETHUSDT_1h.parquet", frame, prov)
    return 100


def set_filter(h: Path, symbol: str, key: str, value: float) -> None:
    """Today's filters as discovery read them from exchangeInfo (the data stays real)."""
    path = h.parent.parent / "aster_assets_discovery.json"
    doc = json.loads(path.read_text())
    entry = next(s for s in doc["symbols"] if s["symbol"] == symbol)
    entry["filters"][key] = value
    path.write_text(json.dumps(doc))


def regridded_coarser_from_a_date(h: Path) -> None:
    # Exchanges coarsen a tick after a price rise: from 2025-09-24 ETHUSDT trades on 0.1,
    # before it on its real 0.01, and today's exchangeInfo shows only 0.1. Every
    # timeframe is re-gridded the same way, as the exchange's own bars would be.
    since = pd.Timestamp("2025-09-24", tz="UTC")
    for interval in ("1h", "4h", "1d"):
        frame, prov = load(h, f"ETHUSDT_{interval}.parquet")
        later = frame["open_time"] >= since
        for col in ("open", "high", "low", "close"):
            frame.loc[later, col] = [float(f"{x:.1f}") for x in frame.loc[later, col]]
        write(h, f"ETHUSDT_{interval}.parquet", frame, prov)
    set_filter(h, "ETHUSDT", "tick_size", 0.1)


def regrid_from(h: Path, symbol: str, since: str, decimals: int) -> None:
    """Every timeframe of ``symbol`` on a coarser tick from ``since``, as the exchange's own
    bars would be: bars after the change rounded, a bar spanning it keeps its earlier
    extremes and gets the new close."""
    when = pd.Timestamp(since, tz="UTC")
    hourly, _ = load(h, f"{symbol}_1h.parquet")
    before = hourly[hourly["open_time"] < when]
    for interval, step in (("1h", "1h"), ("4h", "4h"), ("1d", "1D")):
        frame, prov = load(h, f"{symbol}_{interval}.parquet")
        for i in frame.index:
            start = frame.at[i, "open_time"]
            if start >= when:
                for col in ("open", "high", "low", "close"):
                    frame.at[i, col] = round(frame.at[i, col], decimals)
            elif start + pd.Timedelta(step) > when:  # spans the change
                frame.at[i, "close"] = round(frame.at[i, "close"], decimals)
                part = before[before["open_time"] >= start]
                for col in ("high", "low"):
                    if not (part[col] == frame.at[i, col]).any():
                        frame.at[i, col] = round(frame.at[i, col], decimals)
        prices = frame[["open", "high", "low", "close"]]
        frame["high"], frame["low"] = prices.max(axis=1), prices.min(axis=1)
        write(h, f"{symbol}_{interval}.parquet", frame, prov)


def scattered_off_grid_values(h: Path) -> int:
    # three lows nudged off the 0.01 tick, far apart: no filter change looks like this
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    rows = [
        r
        for r in (100, 300, 500)
        if frame.at[r, "low"] < min(frame.at[r, "open"], frame.at[r, "close"]) - 0.01
    ]
    assert len(rows) == 3
    frame.loc[rows, "low"] += 0.003
    write(h, "ETHUSDT_1h.parquet", frame, prov)
    return rows[0]


def lot_step_coarser_than_all_history(h: Path) -> int:
    # discovery says 0.01 while every real ETHUSDT volume sits on 0.001: the history does
    # not fit today's filter (not tampering: the values are real), so ETHUSDT is excluded
    set_filter(h, "ETHUSDT", "step_size", 0.01)
    return None


def edited_highs(h: Path, rows: list[int]) -> int:
    # highs raised half a tick in the 1h file only: the 4h and 1d bars do not move
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    frame.loc[rows, "high"] += TICK["ETHUSDT"] / 2
    write(h, "ETHUSDT_1h.parquet", frame, prov)
    return rows[-1]


def one_edit_near_the_start(h: Path) -> None:
    edited_highs(h, [5])


def three_edits_near_the_start(h: Path) -> None:
    edited_highs(h, [10, 30, 50])


def forty_edits_every_tenth_bar(h: Path) -> None:
    edited_highs(h, list(range(10, 401, 10)))


def edits_in_the_newest_week_without_discovery(h: Path) -> int:
    # three lows moved off the tick inside the bars today's tick is read from
    (h.parent.parent / "aster_assets_discovery.json").unlink()
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    rows = [len(frame) - 50, len(frame) - 60, len(frame) - 70]
    rows = [
        r
        for r in rows
        if frame.at[r, "low"] < min(frame.at[r, "open"], frame.at[r, "close"]) - 0.01
    ]
    assert len(rows) >= 2
    frame.loc[rows, "low"] -= 0.003
    write(h, "ETHUSDT_1h.parquet", frame, prov)
    return rows[-1]


def off_grid_price_without_discovery(h: Path) -> int:
    (h.parent.parent / "aster_assets_discovery.json").unlink()
    return off_grid_price(h)


def shifted_copy_in_every_timeframe(h: Path) -> int:
    # every ETHUSDT price moved by half a tick, consistently across 1h, 4h and 1d
    for interval in ("1h", "4h", "1d"):
        frame, prov = load(h, f"ETHUSDT_{interval}.parquet")
        for col in ("open", "high", "low", "close"):
            frame[col] = [float(f"{x + 0.005:.3f}") for x in frame[col]]
        write(h, f"ETHUSDT_{interval}.parquet", frame, prov)
    return 0


def hourly_file_starting_late(h: Path) -> int:
    # the 1h file holds only its last 200 bars (forged to match), 4h and 1d the month
    frame, prov = load(h, "ETHUSDT_1h.parquet")
    bad = frame.iloc[-200:].reset_index(drop=True)
    write(h, "ETHUSDT_1h.parquet", bad, forged(prov, bad))
    return 0


def empty_hourly_file(h: Path) -> None:
    # no bars at all, with a record that says so: nothing to learn from, nothing to crash on
    frame, prov = load(h, "2ZUSDT_1h.parquet")
    empty = frame.iloc[:0]
    write(
        h,
        "2ZUSDT_1h.parquet",
        empty,
        {**prov, "rows": 0, "first_open_time": None, "last_open_time": None},
    )


@dataclass(frozen=True)
class Variant:
    name: str
    symbol: str
    file: str  # the file whose verdict must carry the rule
    corrupt: Callable[[Path], int | None]  # corrupts the folder, returns the bad row
    rule: str | tuple[str, ...]  # a tuple: any of these rules is an acceptable refusal
    outcome: str = CONTAMINATED  # the symbol's outcome
    weakness: str | None = None  # the gate does not refuse it yet: xfail(strict) with this


# fmt: off
CORPUS = [
    # name, symbol refused, file whose verdict carries the rule, corruption, rule
    Variant("provenance removed", "BTCUSDT", "BTCUSDT_1h", provenance_removed, "provenance"),
    Variant("provenance source synthetic", "BTCUSDT", "BTCUSDT_1h", provenance_synthetic, "provenance"),
    Variant("provenance rows do not match", "SOLUSDT", "SOLUSDT_1h", provenance_rows_mismatch, "provenance"),
    Variant("provenance of another symbol", "ETHUSDT", "ETHUSDT_1h", provenance_of_another_symbol, "provenance"),
    Variant("provenance hashes dropped", "SOLUSDT", "SOLUSDT_4h", provenance_hashes_dropped, "provenance"),
    Variant("shifted 30 min, forged provenance", "BTCUSDT", "BTCUSDT_1h", shifted_30_minutes_forged, "schema"),
    Variant("shifted one bar, forged provenance", "ETHUSDT", "ETHUSDT_4h", shifted_one_bar_forged, "timeframes"),
    Variant("duplicated bar", "SOLUSDT", "SOLUSDT_1h", duplicated_bar, "schema"),
    Variant("two bars swapped", "SOLUSDT", "SOLUSDT_1h", swapped_bars, "schema"),
    Variant("removed day, provenance kept", "ADAUSDT", "ADAUSDT_1h", removed_day_provenance_kept, "provenance"),
    Variant("removed week, forged provenance", "UNIUSDT", "UNIUSDT_1h", removed_week_forged, "completeness"),
    Variant("swapped high/low", "BTCUSDT", "BTCUSDT_1h", swapped_high_low, "sanity"),
    Variant("off-grid price", "ETHUSDT", "ETHUSDT_1h", off_grid_price, "tick_grid"),
    Variant("rescaled copy of BTCUSDT as ETHUSDT", "ETHUSDT", "ETHUSDT_1h", rescaled_copy_of_btc, "duplicate"),
    Variant("lagged copy of BTCUSDT as SOLUSDT", "SOLUSDT", "SOLUSDT_1h", shifted_copy_of_btc, "duplicate"),
    Variant("4h resampled from ADAUSDT", "SOLUSDT", "SOLUSDT_4h", four_hours_resampled_from_another_symbol, "timeframes"),
    Variant("NaN close", "2ZUSDT", "2ZUSDT_1h", nan_close, "sanity"),
    Variant("negative volume", "4USDT", "4USDT_1h", negative_volume, "sanity"),
    Variant("zero-volume bar that moves the price", "AAPLUSDT", "AAPLUSDT_1h",
            zero_volume_bar_moved, "sanity"),  # fmt: skip
    Variant("future bar appended", "BTCUSDT", "BTCUSDT_1h", future_bar, "schema"),
    Variant("still-open bar appended", "BTCUSDT", "BTCUSDT_4h", still_open_bar_appended, "schema"),
    Variant("one 4h close changed", "BTCUSDT", "BTCUSDT_4h", four_hour_close_changed, "timeframes"),
    Variant("one 1d volume changed", "ETHUSDT", "ETHUSDT_1d", daily_volume_changed, "timeframes"),
    Variant("quote volume x10", "SOLUSDT", "SOLUSDT_1h", quote_volume_x10, "sanity"),
    Variant("taker-buy above volume", "ADAUSDT", "ADAUSDT_1h", taker_buy_above_volume, "sanity"),
    Variant("volume off the lot step", "ETHUSDT", "ETHUSDT_1h", volume_off_lot_step, "lot_step"),
    Variant("live market made dead", "UNIUSDT", "UNIUSDT_1h", dead_replacement, "tradeability"),
    Variant("return spikes on 5% of bars", "SOLUSDT", "SOLUSDT_1h", return_spikes, "outliers"),
    Variant("open_time stored as int64", "BTCUSDT", "BTCUSDT_1h", open_time_int64, "schema"),
    Variant("naive timestamps", "ETHUSDT", "ETHUSDT_1h", naive_timestamps, "schema"),
    Variant("missing column", "SOLUSDT", "SOLUSDT_1h", missing_column, "schema"),
    Variant("close_time off by 3 h", "ADAUSDT", "ADAUSDT_4h", wrong_close_time, "schema"),
    Variant("truncated parquet", "2ZUSDT", "2ZUSDT_1h", truncated_parquet, "schema"),
    Variant("funding rate beyond the cap", "BTCUSDT", "BTCUSDT_funding", funding_rate_beyond_cap, "funding", EXCLUDED),
    Variant("funding time off the hour", "ETHUSDT", "ETHUSDT_funding", funding_off_the_hour, "funding"),
    Variant("funding without provenance", "SOLUSDT", "SOLUSDT_funding", funding_without_provenance, "provenance"),
    Variant("funding event in the future", "BTCUSDT", "BTCUSDT_funding", funding_in_the_future, "funding"),
    Variant("last 1h day removed, forged provenance", "BTCUSDT", "BTCUSDT_1h", last_day_removed_forged, ("schema", "completeness")),
    Variant("all timeframes shifted one day back, forged provenance", "SOLUSDT", "SOLUSDT_1h", every_timeframe_shifted_one_day_forged, ("schema", "completeness"), EXCLUDED),
    Variant("4h high 50% above its 1h bars", "BTCUSDT", "BTCUSDT_4h", four_hour_high_raised_half, "timeframes"),
    Variant("1h wick three times the price", "ETHUSDT", "ETHUSDT_1h", one_hour_wick_tripled, "timeframes"),
    Variant("a few scattered off-grid lows", "ETHUSDT", "ETHUSDT_1h", scattered_off_grid_values, "tick_grid"),
    Variant("one off-grid high at row 5", "ETHUSDT", "ETHUSDT_1h", one_edit_near_the_start, "tick_grid", EXCLUDED),
    Variant("three off-grid highs in the first 51 bars", "ETHUSDT", "ETHUSDT_1h", three_edits_near_the_start, "tick_grid"),
    Variant("forty off-grid highs, every tenth bar", "ETHUSDT", "ETHUSDT_1h", forty_edits_every_tenth_bar, "tick_grid"),
    Variant("off-grid price, no discovery file", "ETHUSDT", "ETHUSDT_1h", off_grid_price_without_discovery, "tick_grid"),
    Variant("off-grid lows in the newest week, no discovery file", "ETHUSDT", "ETHUSDT_1h", edits_in_the_newest_week_without_discovery, "tick_grid"),
    Variant("every price shifted half a tick in every timeframe", "ETHUSDT", "ETHUSDT_1h", shifted_copy_in_every_timeframe, "tick_grid"),
    Variant("empty 1h file", "2ZUSDT", "2ZUSDT_1h", empty_hourly_file, "completeness", EXCLUDED),
    Variant("1h file starting 20 days after its 4h and 1d files", "ETHUSDT", "ETHUSDT_4h", hourly_file_starting_late, "timeframes", EXCLUDED),
    Variant("today's lot step coarser than the whole history", "ETHUSDT", "ETHUSDT_1h", lot_step_coarser_than_all_history, "lot_step", EXCLUDED),
    Variant("re-gridded to a coarser tick from a date (a real filter change)", "ETHUSDT", "ETHUSDT_1h", regridded_coarser_from_a_date, "tick_grid", TRAINABLE),
]
# fmt: on


def verdict_of(report: GateReport, file: str) -> SeriesVerdict:
    found = [v for v in report.series if Path(v.file).name == f"{file}.parquet"]
    assert len(found) == 1, (file, [v.file for v in report.series])
    return found[0]


def assert_refused(
    report: GateReport,
    symbol: str,
    file: str,
    rule: str | tuple[str, ...],
    row: int | None,
    outcome: str = CONTAMINATED,
):
    name = f"{file}.parquet"
    rules = (rule,) if isinstance(rule, str) else rule
    info = report.symbols[symbol]
    assert info["outcome"] == outcome, (outcome, info)
    assert info["trainable"] is False, info
    verdict = verdict_of(report, file)
    findings = [(f.rule, f.status, f.outcome, f.message) for f in verdict.findings]
    hit = [r for r in verdict.failed_rules if r in rules]
    assert hit, f"{name} not refused by {rules}: {findings}"
    assert hit[0] in info["failed_rules"]
    finding = next(f for f in verdict.findings if f.rule == hit[0] and f.status == "fail")
    assert name in finding.message, finding.message
    if row is not None:
        assert finding.rows, finding.message
        assert row in finding.rows, (row, finding.rows, finding.message)
        assert "row" in finding.message, finding.message
    for bystander in BYSTANDERS:
        assert report.symbols[bystander]["outcome"] == TRAINABLE, report.symbols[bystander]
    if outcome == CONTAMINATED:
        assert not report.ok
        assert symbol in report.contaminated
        assert any(symbol in reason and "contaminated" in reason for reason in report.reasons())
    else:
        assert symbol in report.excluded
        assert not any(f.outcome == CONTAMINATED for f in verdict.findings), findings
    return finding


def _param(v: Variant):
    marks = [pytest.mark.xfail(strict=True, reason=v.weakness)] if v.weakness else []
    return pytest.param(v, id=v.name, marks=marks)


@pytest.mark.parametrize("variant", [_param(v) for v in CORPUS])
def test_each_corrupted_variant_lands_in_its_outcome_by_its_rule(
    variant: Variant, genuine: Path, tmp_path: Path
) -> None:
    settings = copy_of(genuine, tmp_path)
    folder = hist(settings)
    row = variant.corrupt(folder)
    target = folder / f"{variant.file}.parquet"
    corrupted = target.read_bytes()
    report = gate(settings)
    assert target.read_bytes() == corrupted  # refused, still there, untouched
    written = json.loads(DataPaths.at(settings.data_root).validation.read_text())
    if variant.outcome == TRAINABLE:
        # a real filter change: accepted, with each regime and its dates reported
        assert report.symbols[variant.symbol]["outcome"] == TRAINABLE, report.symbols[
            variant.symbol
        ]
        finding = next(
            f for f in verdict_of(report, variant.file).findings if f.rule == variant.rule
        )
        assert finding.status == "pass", finding
        assert [r["unit"] for r in finding.regimes] == [0.01, 0.1], finding.regimes
        assert finding.regimes[1]["first"].startswith("2025-09-2"), finding.regimes
        assert variant.symbol in written["trainable_symbols"]
        assert report.ok
        return
    assert_refused(report, variant.symbol, variant.file, variant.rule, row, variant.outcome)
    # the report on disk says the same
    assert variant.symbol in written[f"{variant.outcome}_symbols"]
    if variant.outcome == CONTAMINATED:
        assert written["verdict"] == "not ready"
        assert not DataPaths.at(settings.data_root).universe.exists()


def test_a_bar_without_volume_that_moves_the_price_is_named(genuine: Path, tmp_path: Path) -> None:
    settings = copy_of(genuine, tmp_path)
    row = zero_volume_bar_moved(hist(settings))
    finding = next(f for f in verdict_of(gate(settings), "AAPLUSDT_1h").findings
                   if f.rule == "sanity")  # fmt: skip
    assert finding.status == "fail" and finding.outcome == CONTAMINATED
    assert "a bar without volume that moves the price" in finding.message
    assert row in finding.rows


def test_the_corpus_is_large_enough() -> None:
    assert len([v for v in CORPUS if not v.weakness]) >= 22
    assert len({v.name for v in CORPUS}) == len(CORPUS)
    outcomes = {v.outcome for v in CORPUS}
    assert outcomes == {TRAINABLE, EXCLUDED, CONTAMINATED}


# -- the genuine collection ------------------------------------------------------------------


def test_the_genuine_collection_is_ready_with_the_dead_markets_excluded(
    genuine: Path, tmp_path: Path
) -> None:
    settings = copy_of(genuine, tmp_path)
    report = gate(settings)
    assert report.ok, report.reasons()
    assert len(report.symbols) == 19
    assert report.contaminated == []

    def file_rules(symbol: str) -> list[str]:
        return sorted({r for v in report.series if v.symbol == symbol for r in v.failed_rules})

    for symbol in set(report.symbols) - {*DEAD, "1000CHEEMSUSDT"}:
        # every file of a live symbol passes every rule
        assert file_rules(symbol) == [], (symbol, report.symbols[symbol]["refusals"])
    # among them thousands of real bars without volume (the stock perpetual's closed
    # hours, the dead markets), each repeating the previous close: none is refused
    quiet = sum(int((pd.read_parquet(p)["volume"] == 0).sum())
                for iv in ("1h", "4h", "1d") for p in hist(settings).glob(f"*_{iv}.parquet"))  # fmt: skip
    assert quiet > 3000
    assert not any("sanity" in v.failed_rules for v in report.series)
    # 1000CHEEMSUSDT, listed two days before the recording, is too short to learn from
    cheems = report.symbols["1000CHEEMSUSDT"]
    assert cheems["outcome"] == EXCLUDED and cheems["failed_rules"] == ["completeness"]
    assert "only 38 bars of history" in cheems["refusals"][0]["message"]
    for symbol in DEAD:
        info = report.symbols[symbol]
        assert info["outcome"] == EXCLUDED
        assert info["failed_rules"] == ["tradeability"], info["refusals"]
        # discovery's verdict (dead today) is reported, not applied to the past
        assert any("not trainable today" in w for w in info["warnings"]), info["warnings"]
        assert any(
            r["rule"] == "tradeability"
            and r["outcome"] == EXCLUDED
            and "dead market" in r["message"]
            for r in info["refusals"]
        ), info["refusals"]
    assert sorted(report.excluded) == sorted([*DEAD, "1000CHEEMSUSDT"])
    assert len(report.trainable) == 15 and {"BTCUSDT", "ETHUSDT"} <= set(report.trainable)
    assert all(v.quality_score > 0 for v in report.series if v.symbol not in report.excluded)
    # the universe is written beside the report, for every symbol that is not contaminated
    universe = pd.read_parquet(DataPaths.at(settings.data_root).universe)
    assert set(universe["symbol"]) == set(report.symbols)
    dead = universe[universe["symbol"].isin(DEAD)]
    assert not dead["tradeable"].any()
    assert dead["reason"].str.startswith("excluded by the gate: tradeability").all()


# -- the command line --------------------------------------------------------------------------


def test_cli_validate_shows_three_groups_and_exits_by_the_verdict(
    genuine: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    good = tmp_path / "good"
    copy_of(genuine, good)
    result = runner.invoke(main, ["validate", "--data-root", str(good), "--no-environment"])
    assert result.exit_code == 0, result.output
    assert "15 trainable, 4 excluded, 0 contaminated; verdict: READY" in result.output
    assert "dead market" in result.output

    bad = tmp_path / "bad"
    settings = copy_of(genuine, bad)
    swapped_high_low(hist(settings))
    before = fingerprint(bad)
    result = runner.invoke(main, ["validate", "--data-root", str(bad), "--no-environment"])
    assert result.exit_code == 1, result.output
    # the last lines say why, naming the file and the rule
    assert "contaminated: BTCUSDT_1h.parquet (sanity)" in result.stderr, result.output
    assert "contaminated" in result.output and "NOT READY" in result.output
    assert fingerprint(bad) == before


def test_user_exclusions_are_reported_as_theirs(genuine: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    copy_of(genuine, tmp_path)
    (tmp_path / "asterai.toml").write_text('exclude_symbols = ["UNIUSDT"]\n')
    result = runner.invoke(
        main,
        ["validate", "--data-root", str(tmp_path), "--no-environment", "--exclude", "aaveusdt"],
    )
    assert result.exit_code == 0, result.output
    written = json.loads(DataPaths.at(tmp_path).validation.read_text())
    assert written["user_excluded_symbols"] == ["AAVEUSDT", "UNIUSDT"]  # the flag adds to the file
    for symbol in ("AAVEUSDT", "UNIUSDT"):
        info = written["symbols"][symbol]
        assert info["outcome"] == EXCLUDED and info["excluded_by_user"] is True
        assert info["failed_rules"] == ["user"]
    assert "excluded by you" in result.output
    universe = pd.read_parquet(DataPaths.at(tmp_path).universe)
    assert not universe.loc[universe["symbol"] == "AAVEUSDT", "tradeable"].any()


def test_bad_exclusions_and_excluded_named_symbols_are_errors(
    genuine: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    copy_of(genuine, tmp_path)
    before = fingerprint(tmp_path)
    root = ["--data-root", str(tmp_path), "--no-environment"]
    result = runner.invoke(main, ["validate", *root, "--exclude", "BTCUSD"])
    assert result.exit_code == 2, result.output
    assert "--exclude: unknown symbol(s) BTCUSD (did you mean BTCUSDT?)" in result.stderr
    result = runner.invoke(main, ["validate", *root, "--exclude", "BTC-USDT"])
    assert result.exit_code == 2 and "not a symbol name" in result.stderr, result.output
    # a symbol the user names must be trainable: an excluded one is an error, not a drop
    result = runner.invoke(main, ["validate", *root, "--symbols", "SOLUSDT,1INCHUSDT"])
    assert result.exit_code == 1, result.output
    assert "1INCHUSDT is required but excluded (tradeability)" in result.stderr
    # BTCUSDT and ETHUSDT are required by the cross-asset features
    result = runner.invoke(main, ["validate", *root, "--exclude", "ETHUSDT"])
    assert result.exit_code == 1, result.output
    assert "ETHUSDT is required but you excluded it" in result.stderr
    assert fingerprint(tmp_path) == before


def test_settings_errors_are_not_blamed_on_exclude(genuine: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    copy_of(genuine, tmp_path)
    root = ["--data-root", str(tmp_path), "--no-environment"]
    result = runner.invoke(main, ["validate", *root, "--base-url", "ftp://x"])
    assert result.exit_code == 2 and "--exclude" not in result.stderr, result.stderr
    assert "base URL must start with http" in result.stderr
    # a bad name in asterai.toml is reported, not silently dropped, when --exclude adds to it
    (tmp_path / "asterai.toml").write_text('exclude_symbols = ["BTC-USD", "UNIUSDT"]\n')
    result = runner.invoke(main, ["validate", *root, "--exclude", "SOLUSDT"])
    assert result.exit_code == 2, result.output
    assert "'BTC-USD' is not a symbol name" in result.stderr
    assert "asterai.toml" in result.stderr


def test_a_contaminated_run_removes_the_universe_it_can_no_longer_vouch_for(
    genuine: Path, tmp_path: Path
) -> None:
    settings = copy_of(genuine, tmp_path)
    assert gate(settings).ok
    universe = DataPaths.at(settings.data_root).universe
    assert universe.exists()
    provenance_synthetic(hist(settings))
    report = gate(settings)
    assert report.contaminated == ["BTCUSDT"]
    assert not universe.exists()
    written = json.loads(DataPaths.at(settings.data_root).validation.read_text())
    assert written["universe"] == {"path": str(universe), "removed": "contaminated data"}


def test_pipeline_goes_on_without_excluded_symbols_and_stops_on_a_forged_file(
    genuine: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    good = tmp_path / "good"
    copy_of(genuine, good)
    args = ["--start-from", "data_validation", "--stop-at", "feature_engineering"]
    result = runner.invoke(main, ["pipeline", "--data-root", str(good), *args])
    assert result.exit_code == 0, result.output
    assert "[data_validation] ok" in result.output
    assert "excluded: 1INCHUSDT (tradeability)" in result.output  # said loudly
    assert "[feature_engineering] ok" in result.output
    features = pd.read_parquet(DataPaths.at(good).features("1h"), columns=["symbol"])
    assert set(features["symbol"]) == set(
        validate(load_settings(good), environment=False, write=False).trainable
    )
    assert not set(DEAD) & set(features["symbol"])

    bad = tmp_path / "bad"
    settings = copy_of(genuine, bad)
    provenance_synthetic(hist(settings))
    result = runner.invoke(main, ["pipeline", "--data-root", str(bad), *args])
    assert result.exit_code == 1, result.output
    assert "[data_validation] FAILED" in result.output
    assert "contaminated: BTCUSDT_1h.parquet (provenance)" in result.stderr
    assert "[feature_engineering]" not in result.output  # named in the plan, never run
    assert not DataPaths.at(bad).features("1h").exists()


# -- the only door to training data ------------------------------------------------------------


def test_verified_series_serves_trainable_symbols_and_refuses_contamination(
    genuine: Path, tmp_path: Path
) -> None:
    settings = copy_of(genuine, tmp_path)
    with pytest.raises(GateRefused, match=r"1INCHUSDT is required but excluded \(tradeability"):
        verified_series(settings, intervals=["1h"], symbols=["BTCUSDT", "1INCHUSDT"])

    before = fingerprint(settings.data_root)
    frames = verified_series(settings, intervals=["1h"], symbols=["BTCUSDT", "SOLUSDT"])
    assert fingerprint(settings.data_root) == before
    assert sorted(frames) == [("BTCUSDT", "1h"), ("SOLUSDT", "1h")]
    btc = frames[("BTCUSDT", "1h")]
    assert len(btc) == 742
    crash = btc.loc[btc["open_time"] == pd.Timestamp("2025-10-10 21:00", tz="UTC")]
    assert crash["low"].item() == 101_500.0  # the real crash bar, served as collected
    everything = verified_series(settings, intervals=["1h"])
    assert {s for s, _ in everything} == set(
        validate(settings, environment=False, write=False).trainable
    )

    # one forged file anywhere: nothing is served, not even the untouched symbols
    off_grid_price(hist(settings))
    with pytest.raises(GateRefused, match=r"contaminated: ETHUSDT_1h.parquet \(tick_grid\)"):
        verified_series(settings, intervals=["1h"], symbols=["BTCUSDT"])


# -- files tampered so badly that a naive gate would crash -----------------------------------


def test_implausible_provenance_values_are_refused_not_crashed_on(
    genuine: Path, tmp_path: Path
) -> None:
    settings = copy_of(genuine, tmp_path)
    folder = hist(settings)
    frame, prov = load(folder, "BTCUSDT_1h.parquet")
    write(folder, "BTCUSDT_1h.parquet", frame, {**prov, "first_open_time": "yesterday"})
    frame, prov = load(folder, "ETHUSDT_1h.parquet")
    write(folder, "ETHUSDT_1h.parquet", frame, {**prov, "last_open_time": 10**20})
    report = gate(settings)
    for symbol, name in (("BTCUSDT", "BTCUSDT_1h"), ("ETHUSDT", "ETHUSDT_1h")):
        finding = assert_refused(report, symbol, name, "provenance", None)
        assert "not a plausible integer" in finding.message


def test_timestamps_stored_as_text_are_refused(genuine: Path, tmp_path: Path) -> None:
    settings = copy_of(genuine, tmp_path)
    folder = hist(settings)
    frame, prov = load(folder, "SOLUSDT_1h.parquet")
    frame["open_time"] = frame["open_time"].astype(str)
    write(folder, "SOLUSDT_1h.parquet", frame, prov, schema=None)
    report = gate(settings)
    assert_refused(report, "SOLUSDT", "SOLUSDT_1h", "schema", None)


def test_a_malformed_discovery_file_does_not_break_the_gate(genuine: Path, tmp_path: Path) -> None:
    settings = copy_of(genuine, tmp_path)
    discovery = DataPaths.at(settings.data_root).discovery
    discovery.write_text("[]")
    report = gate(settings)
    # without discovery facts the data rules still decide: the dead markets and the
    # 38-bar listing are excluded, and the tick and lot rules read today's grid from the
    # newest bars
    assert report.ok, report.reasons()
    assert report.excluded == sorted([*DEAD, "1000CHEEMSUSDT"])
    tick = next(f for f in verdict_of(report, "BTCUSDT_1h").findings if f.rule == "tick_grid")
    assert tick.status == "pass" and "no discovery filter" in tick.message and "0.1" in tick.message
    assert report.symbols["BTCUSDT"]["trainable"]


@pytest.mark.parametrize(
    ("symbol", "since", "decimals", "tick"),
    [
        ("ETHUSDT", "2025-10-14 20:00", 1, 0.1),  # hours before the collection: 1d predates it
        ("BTCUSDT", "2025-09-16 00:00", 0, 1.0),  # a day into the recording
        ("SOLUSDT", "2025-10-01 00:00", 3, 0.001),
    ],
)
@pytest.mark.parametrize("discovery", [True, False])
def test_real_tick_changes_in_every_timeframe_stay_trainable(
    genuine: Path,
    tmp_path: Path,
    symbol: str,
    since: str,
    decimals: int,
    tick: float,
    discovery: bool,
) -> None:
    settings = copy_of(genuine, tmp_path)
    folder = hist(settings)
    regrid_from(folder, symbol, since, decimals)
    if discovery:
        set_filter(folder, symbol, "tick_size", tick)
    else:
        DataPaths.at(settings.data_root).discovery.unlink()
    report = gate(settings)
    assert report.symbols[symbol]["outcome"] == TRAINABLE, report.symbols[symbol]["refusals"]
    assert report.ok, report.reasons()


def test_a_delisted_market_is_trainable_until_it_ended(genuine: Path, tmp_path: Path) -> None:
    # the exchange stopped APEUSDT on 2025-10-05 (status SETTLING): its files end there
    settings = copy_of(genuine, tmp_path)
    folder = hist(settings)
    end = pd.Timestamp("2025-10-05", tz="UTC")
    for interval in ("1h", "4h", "1d"):
        frame, prov = load(folder, f"APEUSDT_{interval}.parquet")
        kept = frame[frame["open_time"] < end].reset_index(drop=True)
        write(folder, f"APEUSDT_{interval}.parquet", kept, forged(prov, kept))
    path = DataPaths.at(settings.data_root).discovery
    doc = json.loads(path.read_text())
    entry = next(s for s in doc["symbols"] if s["symbol"] == "APEUSDT")
    entry.update(status="SETTLING", trainable=False, reason="status is SETTLING, not TRADING")
    path.write_text(json.dumps(doc))
    report = gate(settings)
    assert report.symbols["APEUSDT"]["outcome"] == TRAINABLE, report.symbols["APEUSDT"]
    universe = pd.read_parquet(DataPaths.at(settings.data_root).universe)
    ape = universe[universe["symbol"] == "APEUSDT"]
    assert ape["open_time"].max() < end and ape["tradeable"].any()  # tradeable until it ended


def test_a_change_of_funding_interval_is_not_a_defect(genuine: Path, tmp_path: Path) -> None:
    settings = copy_of(genuine, tmp_path)
    folder = hist(settings)
    times, prov = funding_schedule(folder, "BTCUSDT")
    # Aster moves symbols between 8 h and 4 h funding: 8-hourly, then 4-hourly
    later = np.arange(
        times[-1] + 4 * HOUR_MS, times[-1] + 40 * HOUR_MS, 4 * HOUR_MS, dtype=np.int64
    )
    schedule = np.concatenate([times[:-5], later])
    schedule = schedule[schedule <= prov["collected_at"]]
    frame = funding_frame(schedule, np.full(len(schedule), 0.0001))
    write(
        folder,
        "BTCUSDT_funding.parquet",
        frame,
        funding_provenance(prov, frame),
        schema=FUNDING_SCHEMA,
    )
    report = gate(settings)
    verdict = verdict_of(report, "BTCUSDT_funding")
    assert not verdict.refused, verdict.findings


def test_features_refuse_to_run_on_a_contaminated_folder(genuine: Path, tmp_path: Path) -> None:
    from asterai.features.build import run_features

    settings = copy_of(genuine, tmp_path)
    swapped_high_low(hist(settings))
    with pytest.raises(GateRefused, match=r"contaminated: BTCUSDT_1h.parquet \(sanity\)"):
        run_features(settings, plots=False)
    assert not DataPaths.at(settings.data_root).features("1h").exists()
