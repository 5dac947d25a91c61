"""The point-in-time universe on the real recording: causal, and right about real markets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_EXCHANGE, copy_root

from asterai.data.gate import validate
from asterai.data.store import read_provenance, read_series, to_epoch_ms
from asterai.data.universe import (
    CLOSED,
    REASONS,
    TOO_THIN,
    TRADEABLE,
    BaseBars,
    Rules,
    build_universe,
    load_universe,
    tradeable_kernel,
)
from asterai.intervals import DAY_MS, HOUR_MS
from asterai.paths import DataPaths

DEAD = ("1INCHUSDT", "AIUSDT", "ALGOUSDT")


@pytest.fixture(scope="module")
def collected(tmp_path_factory, collected_root):
    from asterai.config import load_settings

    root = copy_root(collected_root, tmp_path_factory.mktemp("universe"))
    settings = load_settings(root, exchange=FAST_EXCHANGE)
    report = validate(settings, environment=False)
    assert report.ok, report.reasons()
    return settings


@pytest.fixture(scope="module")
def bases(collected) -> dict[str, BaseBars]:
    paths = DataPaths.at(collected.data_root)
    out = {}
    for path in sorted(paths.historical.glob("*_1h.parquet")):
        symbol = path.name.removesuffix("_1h.parquet")
        listing = (read_provenance(path) or {}).get("listing_open_time")
        out[symbol] = BaseBars.from_frame(read_series(path, "klines").frame, listing)
    return out


@pytest.fixture(scope="module")
def universe(collected) -> pd.DataFrame:
    return load_universe(collected)


def rows_of(universe: pd.DataFrame, symbol: str) -> pd.DataFrame:
    return universe[universe["symbol"] == symbol].reset_index(drop=True)


def test_one_row_per_symbol_and_bar_in_the_features_order(universe, bases) -> None:
    assert list(universe.columns) == ["symbol", "open_time", "tradeable", "reason"]
    assert len(universe) == sum(len(b.times) for b in bases.values())
    key = to_epoch_ms(universe["open_time"]) * 100 + universe["symbol"].rank(method="dense")
    assert (np.diff(key.to_numpy()) > 0).all()  # sorted by (open_time, symbol), unique
    assert universe["reason"].isna().equals(universe["tradeable"])  # a reason exactly when not


@pytest.mark.parametrize("cut", ["2025-09-20 00:00", "2025-10-03 13:00", "2025-10-10 22:00"])
def test_the_universe_of_a_truncated_history_equals_the_full_one_on_the_past(
    bases, collected, cut
) -> None:
    cut_ms = int(pd.Timestamp(cut, tz="UTC").value // 1_000_000)
    excluded = {s: "tradeability" for s in DEAD}  # the gate's verdicts are inputs, fixed
    full = build_universe(bases, excluded, collected)
    truncated = build_universe(
        {
            s: BaseBars(
                b.times[b.times <= cut_ms],
                b.volume[b.times <= cut_ms],
                b.quote_volume[b.times <= cut_ms],
                b.listing_ms,
            )
            for s, b in bases.items()
            if (b.times <= cut_ms).any()
        },
        excluded,
        collected,
    )
    past = full[to_epoch_ms(full["open_time"]) <= cut_ms].reset_index(drop=True)
    pd.testing.assert_frame_equal(past, truncated)
    # and something does happen after the cut: the test would be empty otherwise
    assert len(full) > len(truncated)


def test_dead_markets_are_never_tradeable(universe) -> None:
    for symbol in DEAD:
        rows = rows_of(universe, symbol)
        assert len(rows) > 700 and not rows["tradeable"].any()
        assert rows["reason"].str.startswith("excluded by the gate: tradeability").all()


def test_a_new_listing_becomes_tradeable_once_it_qualifies(universe, collected) -> None:
    # 2ZUSDT was listed 2025-10-02; the default needs 3 days of history
    rows = rows_of(universe, "2ZUSDT")
    listed = rows["open_time"].iloc[0]
    assert (
        listed == pd.Timestamp("2025-10-02 01:00", tz="UTC")
        or listed.date().isoformat() == "2025-10-02"
    )
    young = rows["open_time"] + pd.Timedelta(hours=1) - listed < pd.Timedelta(days=3)
    assert (rows.loc[young, "reason"] == REASONS[1]).all()
    assert rows.loc[~young, "tradeable"].mean() > 0.8  # then it trades, most hours
    assert collected.universe.min_listing_days == 3


def test_majors_trade_every_hour_once_their_history_is_long_enough(universe) -> None:
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        rows = rows_of(universe, symbol)
        start = rows["open_time"].iloc[0]
        settled = rows["open_time"] + pd.Timedelta(hours=1) - start >= pd.Timedelta(days=3)
        assert rows.loc[settled, "tradeable"].all(), symbol
        assert not rows.loc[~settled, "tradeable"].any(), symbol


def test_a_stock_perpetual_is_not_tradeable_while_its_market_is_closed(universe, bases) -> None:
    rows = rows_of(universe, "AAPLUSDT")
    volume = bases["AAPLUSDT"].volume
    closed = volume == 0
    assert 0.3 < closed.mean() < 0.6  # about half of its hours, outside stock-market hours
    assert not rows.loc[closed, "tradeable"].any()
    settled = rows["reason"] != REASONS[1]
    assert (rows.loc[closed & settled, "reason"].isin([REASONS[CLOSED], REASONS[TOO_THIN]])).all()
    assert rows.loc[~closed, "tradeable"].any()


def test_a_market_that_dies_is_tradeable_until_it_dies(bases) -> None:
    # The rule on real APEUSDT bars whose trading stops on 2025-10-08 (the volumes after
    # that are set to zero here, inside the test, as a delisted market's would be).
    b = bases["APEUSDT"]
    death = int(pd.Timestamp("2025-10-08", tz="UTC").value // 1_000_000)
    after = b.times >= death
    volume, quote = b.volume.copy(), b.quote_volume.copy()
    volume[after] = 0.0
    quote[after] = 0.0
    rules = Rules(HOUR_MS, 3 * DAY_MS, DAY_MS, 1_000.0)
    alive = tradeable_kernel(b.times, b.volume, b.quote_volume, b.listing_ms, rules)
    dying = tradeable_kernel(b.times, volume, quote, b.listing_ms, rules)
    assert np.array_equal(dying[~after], alive[~after])  # its past does not know it will die
    assert (dying[after] != TRADEABLE).all()
    # the trailing day of volume still counts for a while, then it is too thin
    assert (dying[b.times >= death + DAY_MS] == TOO_THIN).all()


def test_the_volume_floor_is_a_setting(bases, collected) -> None:
    strict = collected.model_copy(
        update={"universe": collected.universe.model_copy(update={"min_quote_volume_24h": 5e7})}
    )
    frame = build_universe(bases, {}, strict)
    share = frame.groupby("symbol")["tradeable"].mean()
    assert share["BTCUSDT"] > 0.85 and share["ETHUSDT"] > 0.85  # billions a day
    assert share["APEUSDT"] == 0.0  # tens of thousands a day
    assert (
        frame.loc[frame["symbol"] == "APEUSDT", "reason"].isin(
            [REASONS[1], REASONS[TOO_THIN], REASONS[CLOSED]]
        )
    ).all()
