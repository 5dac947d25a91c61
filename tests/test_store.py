"""The parquet store: schema, provenance, validation and atomic writes, on real bars."""

from __future__ import annotations

import pandas as pd
import pytest

from asterai.atomic import remove_stale_temp_files
from asterai.data.store import (
    KLINE_COLUMNS,
    CorruptFile,
    StoreError,
    read_provenance,
    read_series,
    write_series,
)


@pytest.fixture
def btc(real_data) -> pd.DataFrame:
    """Real BTCUSDT 1h bars in the store's schema (unrecorded fields missing)."""
    raw = pd.read_parquet(real_data / "klines" / "BTCUSDT_1h.parquet").iloc[:-1]
    opens = raw.index.tz_localize("UTC").as_unit("ms")
    return pd.DataFrame(
        {
            "open_time": opens,
            "open": raw["open"].to_numpy(),
            "high": raw["high"].to_numpy(),
            "low": raw["low"].to_numpy(),
            "close": raw["close"].to_numpy(),
            "volume": raw["volume"].to_numpy(),
            "quote_volume": raw["quote_volume"].to_numpy(),
            "trades": pd.array([None] * len(raw), dtype="Int64"),
            "taker_buy_base": raw["taker_buy_volume"].to_numpy(),
            "taker_buy_quote": float("nan"),
            "close_time": (opens + pd.Timedelta(hours=1) - pd.Timedelta(milliseconds=1)).as_unit(
                "ms"
            ),
        }
    ).reset_index(drop=True)


PROV = {"source": "aster", "symbol": "BTCUSDT", "interval": "1h"}


def test_round_trip_keeps_every_value_and_the_provenance(tmp_path, btc) -> None:
    path = tmp_path / "BTCUSDT_1h.parquet"
    write_series(path, btc, PROV, "klines")
    loaded = read_series(path, "klines")
    pd.testing.assert_frame_equal(loaded.frame, btc, check_exact=True)
    assert tuple(loaded.frame.columns) == KLINE_COLUMNS
    assert str(loaded.frame["open_time"].dtype) == "datetime64[ms, UTC]"
    assert loaded.provenance == PROV == read_provenance(path)


def test_duplicate_bars_are_refused_naming_file_rule_and_row(tmp_path, btc) -> None:
    dup = pd.concat([btc.iloc[:10], btc.iloc[9:10], btc.iloc[10:]], ignore_index=True)
    path = tmp_path / "x.parquet"
    with pytest.raises(StoreError, match=r"x\.parquet: duplicate timestamp \(row 10\)"):
        write_series(path, dup, PROV, "klines")
    assert not path.exists()


def test_unsorted_bars_are_refused(tmp_path, btc) -> None:
    swapped = btc.iloc[[0, 2, 1, *range(3, len(btc))]].reset_index(drop=True)
    with pytest.raises(StoreError, match=r"timestamps not sorted \(row 2\)"):
        write_series(tmp_path / "x.parquet", swapped, PROV, "klines")


def test_missing_column_is_refused(tmp_path, btc) -> None:
    with pytest.raises(StoreError, match=r"schema.*missing columns \['volume'\]"):
        write_series(tmp_path / "x.parquet", btc.drop(columns="volume"), PROV, "klines")


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, btc) -> None:
    path = tmp_path / "BTCUSDT_1h.parquet"
    write_series(path, btc, PROV, "klines")
    before = path.read_bytes()
    with pytest.raises(StoreError):
        write_series(path, btc.drop(columns="close"), PROV, "klines")
    assert path.read_bytes() == before
    assert not remove_stale_temp_files(tmp_path), "no temp file is left behind"


def test_a_truncated_file_is_reported_as_corrupt(tmp_path, btc) -> None:
    path = tmp_path / "BTCUSDT_1h.parquet"
    write_series(path, btc, PROV, "klines")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFile, match="BTCUSDT_1h.parquet: unreadable parquet"):
        read_series(path, "klines")


def test_a_file_without_provenance_reads_as_unverified(tmp_path, btc) -> None:
    path = tmp_path / "plain.parquet"
    btc.to_parquet(path)
    assert read_series(path, "klines").provenance is None
