"""Baselines on the same window, universe and costs as the model's backtest.

- ``buy_and_hold_btc``: the capital in BTCUSDT at the window's first open (taker fee and
  slippage), marked at every close, funding paid as a long.
- ``equal_weight``: the capital spread equally over the symbols tradeable at each day's
  first bar, rebalanced daily at the open with the taker fee on the traded notional.
- ``rule_confluence``: a confluence strategy without machine learning, run through the
  same kernel with the same sizing, limits, fees and filters: long when most assets'
  24-bar momentum is up (``share_pos_ret_24`` at least 0.6) and the asset's RSI(14) sits
  between 50 and 70, short in the mirror case (at most 0.4, RSI between 30 and 50).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from asterai.backtest import kernel
from asterai.backtest.inputs import Inputs, grid_feature
from asterai.config import Settings

RULE = {
    "momentum_up": 0.6,
    "momentum_down": 0.4,
    "rsi_long": (50.0, 70.0),
    "rsi_short": (30.0, 50.0),
}


def _frame(inputs: Inputs, equity: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "time": pd.to_datetime(inputs.times, unit="ms", utc=True).as_unit("ms"),
            "equity": equity,
        }
    )


def buy_and_hold_btc(inputs: Inputs, settings: Settings) -> pd.DataFrame | None:
    if "BTCUSDT" not in inputs.symbols:
        return None
    j = inputs.symbols.index("BTCUSDT")
    st = settings.strategy
    first = int(np.flatnonzero(np.isfinite(inputs.open_[:, j]))[0])
    entry = inputs.open_[first, j] * (1 + st.slippage)
    capital = st.capital * (1 - st.taker_fee)
    qty = capital / entry
    close = pd.Series(inputs.close[:, j]).ffill().to_numpy()
    funding = np.cumsum(np.where(np.isfinite(close), qty * close * inputs.funding[:, j], 0.0))
    equity = st.capital - st.capital * st.taker_fee + qty * (close - entry) - funding
    equity[:first] = st.capital
    return _frame(inputs, equity)


def equal_weight(inputs: Inputs, settings: Settings) -> pd.DataFrame:
    st = settings.strategy
    T, N = inputs.close.shape
    equity = np.full(T, st.capital)
    holdings = np.zeros(N)  # quantities
    cash = st.capital
    day = inputs.times // 86_400_000
    last = np.full(N, np.nan)
    for t in range(T):
        opens = inputs.open_[t]
        if t == 0 or day[t] != day[t - 1]:  # rebalance at the day's first open
            marks = np.where(np.isfinite(opens), opens, last)
            value = cash + np.nansum(holdings * marks)
            wanted = inputs.tradeable[t - 1] if t else inputs.tradeable[t]
            wanted = wanted & np.isfinite(opens)
            target = np.zeros(N)
            if wanted.any():
                target[wanted] = value / wanted.sum() / opens[wanted]
            traded = np.nansum(np.abs(target - holdings) * np.where(np.isfinite(marks), marks, 0.0))
            cash = value - np.nansum(target * np.where(np.isfinite(marks), marks, 0.0))
            cash -= traded * (st.taker_fee + st.slippage)
            holdings = target
        closes = inputs.close[t]
        last = np.where(np.isfinite(closes), closes, last)
        cash -= np.nansum(holdings * last * inputs.funding[t])
        equity[t] = cash + np.nansum(holdings * last)
    return _frame(inputs, equity)


def rule_confluence(
    inputs: Inputs, settings: Settings, p: kernel.Params
) -> tuple[pd.DataFrame, int]:
    momentum = grid_feature(settings, inputs, "share_pos_ret_24")
    rsi = grid_feature(settings, inputs, "rsi_14")
    lo_l, hi_l = RULE["rsi_long"]
    lo_s, hi_s = RULE["rsi_short"]
    long_ = (momentum >= RULE["momentum_up"]) & (rsi >= lo_l) & (rsi <= hi_l)
    short = (momentum <= RULE["momentum_down"]) & (rsi >= lo_s) & (rsi <= hi_s)
    known = np.isfinite(momentum) & np.isfinite(rsi) & np.isfinite(inputs.p_long)
    # the rule trades only where the model had an out-of-sample prediction: same window
    p_long = np.where(known, long_.astype(float), np.nan)
    p_short = np.where(known, short.astype(float), np.nan)
    trades, _, curve, _ = kernel.simulate_nb(
        inputs.open_, inputs.high, inputs.low, inputs.close, inputs.volume, inputs.tradeable,
        p_long, p_short,
        inputs.atr, inputs.funding, inputs.tick, inputs.step, inputs.min_notional,
        p._replace(threshold=0.5, kelly_fraction=0.0),  # 0/1 'probabilities': no Kelly
    )  # fmt: skip
    return _frame(inputs, curve[:, 0]), int(len(trades))
