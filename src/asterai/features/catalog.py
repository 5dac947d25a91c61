"""Every feature, documented in one place: name, group, formula and window.

The builder checks that the columns it produces are exactly this catalog, so a
feature cannot exist without its documentation. Windows are in bars of the base
interval (1h by default) unless the name carries a timeframe prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

from asterai.features import confluence as cf
from asterai.features import indicators as ind
from asterai.features import regime as rg


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    group: str
    formula: str


BASE: tuple[FeatureSpec, ...] = (
    *(FeatureSpec(f"ret_{h}", "asset", f"log(close_t / close_t-{h})") for h in ind.RETURN_HORIZONS),
    FeatureSpec("rsi_14", "asset", "TA-Lib RSI(close, 14)"),
    FeatureSpec("macd", "asset", "TA-Lib MACD(12, 26, 9) line / close"),
    FeatureSpec("macd_signal", "asset", "MACD signal line / close"),
    FeatureSpec("macd_hist", "asset", "MACD histogram / close"),
    FeatureSpec(
        "bb_pctb_20", "asset", "(close - lower) / (upper - lower), TA-Lib BBANDS(20, 2, 2)"
    ),
    FeatureSpec("bb_width_20", "asset", "(upper - lower) / middle band"),
    FeatureSpec("atr_14", "asset", "TA-Lib ATR(high, low, close, 14), in price units"),
    FeatureSpec("atr_pct_14", "asset", "ATR(14) / close"),
    FeatureSpec("adx_14", "asset", "TA-Lib ADX(high, low, close, 14)"),
    FeatureSpec("rv_24", "asset", "std of 1-bar log returns over 24 bars"),
    FeatureSpec("rv_72", "asset", "std of 1-bar log returns over 72 bars"),
    FeatureSpec("volume_z_24", "asset", "z-score of log(1 + volume) over 24 bars"),
    FeatureSpec("volume_z_72", "asset", "z-score of log(1 + volume) over 72 bars"),
    FeatureSpec("taker_buy_share", "asset", "taker-buy base volume / volume (NaN on zero volume)"),
    FeatureSpec("taker_buy_share_24", "asset", "mean taker-buy share over 24 bars"),
    *(
        FeatureSpec(
            f"dist_{side}_{w}", "asset", f"close / rolling {w}-bar {side} - 1 (support/resistance)"
        )
        for w in ind.RANGE_WINDOWS
        for side in ("high", "low")
    ),
    FeatureSpec(
        "funding_rate",
        "asset",
        "latest funding rate settled at or before the bar's close (NaN without funding)",
    ),
    FeatureSpec("funding_rate_change", "asset", "latest funding rate - the one before it"),
    FeatureSpec(
        "listing_age_h",
        "asset",
        "hours from the symbol's first bar on the exchange to the bar's close; NaN when the "
        "listing predates the available history (see build.unknown_listings)",
    ),
    FeatureSpec("rsi_oversold", "event", f"1 if RSI(14) < {ind.RSI_OVERSOLD:g}"),
    FeatureSpec("rsi_overbought", "event", f"1 if RSI(14) > {ind.RSI_OVERBOUGHT:g}"),
    FeatureSpec(
        "macd_cross_up", "event", "1 if the MACD histogram turned from <= 0 to > 0 at this bar"
    ),
    FeatureSpec(
        "macd_cross_down", "event", "1 if the MACD histogram turned from >= 0 to < 0 at this bar"
    ),
    FeatureSpec("bb_break_up", "event", "1 if close > upper Bollinger band"),
    FeatureSpec("bb_break_down", "event", "1 if close < lower Bollinger band"),
    FeatureSpec("volume_spike", "event", f"1 if volume_z_24 > {ind.VOLUME_SPIKE_Z:g}"),
    *(
        FeatureSpec(
            f"corr_{ref}_{w}",
            "cross",
            f"rolling {w}-bar correlation of 1-bar returns with {ref.upper()}USDT",
        )
        for ref in ("btc", "eth")
        for w in cf.CORR_WINDOWS
    ),
    *(
        FeatureSpec(
            f"agree_majority_{h}",
            "cross",
            f"1 if sign(ret_{h}) equals the majority sign across assets",
        )
        for h in cf.ALIGN_HORIZONS
    ),
    *(
        FeatureSpec(f"rel_strength_{h}", "cross", f"ret_{h} - mean ret_{h} across assets")
        for h in cf.STRENGTH_HORIZONS
    ),
    FeatureSpec(
        "market_avg_corr_24",
        "market",
        "mean pairwise correlation of 1-bar returns over 24 bars (exact)",
    ),
    *(
        FeatureSpec(f"share_{flag}", "market", f"share of assets with {flag} set")
        for flag in cf.EVENT_FLAGS
    ),
    FeatureSpec("n_volume_spikes", "market", "number of assets with a volume spike at this bar"),
    FeatureSpec("share_volume_spikes", "market", "share of assets with a volume spike"),
    *(
        FeatureSpec(
            f"share_pos_ret_{h}", "market", f"share of assets with ret_{h} > 0 (momentum alignment)"
        )
        for h in cf.ALIGN_HORIZONS
    ),
    FeatureSpec("market_ret_1", "market", "equal-weighted mean of the assets' 1-bar returns"),
    FeatureSpec("market_rv_24", "market", "std of market_ret_1 over 24 bars"),
    FeatureSpec(
        "btc_dominance_24", "market", "BTCUSDT quote volume / all assets' quote volume, 24-bar sums"
    ),
    FeatureSpec(
        "eth_dominance_24", "market", "ETHUSDT quote volume / all assets' quote volume, 24-bar sums"
    ),
    FeatureSpec(
        "regime_trending",
        "regime",
        f"1 if at least half the assets have ADX(14) > {rg.ADX_TREND:g}",
    ),
    FeatureSpec(
        "regime_high_vol",
        "regime",
        "1 if market_rv_24 > its median over the last 720 bars (>= 168 needed)",
    ),
    FeatureSpec("regime", "regime", "2 x regime_trending + regime_high_vol"),
)

#: Indicators recomputed on each higher timeframe and joined after that bar's close.
HIGHER_TF: tuple[tuple[str, str], ...] = (
    ("ret_1", "1-bar log return"),
    ("rsi_14", "RSI(14)"),
    ("macd_hist", "MACD histogram / close"),
    ("bb_pctb_20", "Bollinger %b (20, 2)"),
    ("atr_pct_14", "ATR(14) / close"),
    ("adx_14", "ADX(14)"),
    ("rv_24", "std of 1-bar log returns over 24 bars"),
    ("volume_z_24", "z-score of log(1 + volume) over 24 bars"),
)

#: The asset-level features whose raw value moves with the whole market (returns,
#: momentum, volatility, volume, order flow, range position, funding): each gets an
#: ``xs_rank_`` column, its percentile rank across the assets at the bar, for a
#: cross-sectional model (will this symbol beat the others?). Left out: the 0/1 event
#: flags, the features that are already relative (``corr_*``, ``agree_majority_*``,
#: ``rel_strength_*``) or market-wide (the same value for every asset), ``atr_14``
#: (price units: it ranks the coins' prices) and ``listing_age_h`` (a clock, not a state).
XS_RANKED: tuple[str, ...] = (
    *(f"ret_{h}" for h in ind.RETURN_HORIZONS),
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pctb_20",
    "bb_width_20",
    "atr_pct_14",
    "adx_14",
    "rv_24",
    "rv_72",
    "volume_z_24",
    "volume_z_72",
    "taker_buy_share",
    "taker_buy_share_24",
    *(f"dist_{side}_{w}" for w in ind.RANGE_WINDOWS for side in ("high", "low")),
    "funding_rate",
    "funding_rate_change",
)
#: ... and every higher-timeframe indicator, as ``{iv}_{name}`` for each configured interval.
XS_RANKED_HIGHER: tuple[str, ...] = tuple(name for name, _ in HIGHER_TF)


def ranked_features(higher_intervals: tuple[str, ...]) -> tuple[str, ...]:
    """The features that get an ``xs_rank_`` column in a run with these higher timeframes."""
    higher = tuple(f"{iv}_{name}" for iv in higher_intervals for name in XS_RANKED_HIGHER)
    return XS_RANKED + higher


LABELS: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "label_tb",
        "label",
        "long trade's triple barrier: +1 take profit, -1 stop, 0 horizon (see labels.py)",
    ),
    FeatureSpec("label_tb_bars", "label", "bars from entry to the long trade's outcome"),
    FeatureSpec(
        "label_tb_short",
        "label",
        "short trade's triple barrier (target below, stop above): +1 target, -1 stop, 0 horizon",
    ),
    FeatureSpec("label_tb_short_bars", "label", "bars from entry to the short trade's outcome"),
    FeatureSpec(
        "label_fwd_ret", "label", "log(close_t+horizon / open_t+1): from the fill of a signal at t"
    ),
    FeatureSpec(
        "label_r",
        "label",
        "long trade's gross R-multiple on the triple barrier's path: (exit - entry) / risk, "
        "exit at the stop (a later bar's open when it gaps through), the target or the "
        "horizon's close (see labels.py)",
    ),
    FeatureSpec("label_r_short", "label", "short trade's gross R-multiple: (entry - exit) / risk"),
    FeatureSpec("label_risk", "label", "long trade's risk (entry - stop) / entry"),
    FeatureSpec("label_risk_short", "label", "short trade's risk (stop - entry) / entry"),
)


def catalog(higher_intervals: tuple[str, ...]) -> tuple[FeatureSpec, ...]:
    """The full feature list for a run with these higher timeframes."""
    higher = tuple(
        FeatureSpec(
            f"{iv}_{name}",
            f"timeframe_{iv}",
            f"{what} on {iv} bars, joined after the {iv} bar closes",
        )
        for iv in higher_intervals
        for name, what in HIGHER_TF
    )
    ranked = tuple(
        FeatureSpec(
            f"xs_rank_{name}",
            "cross_rank",
            f"percentile rank of {name} among the assets with a value at this bar: "
            "(average rank - 1) / (n - 1), ties averaged, 0 lowest, 1 highest; NaN with "
            f"fewer than {cf.MIN_RANK_ASSETS} assets",
        )
        for name in ranked_features(higher_intervals)
    )
    return BASE + higher + ranked


def feature_names(higher_intervals: tuple[str, ...]) -> list[str]:
    return [f.name for f in catalog(higher_intervals)]


def label_names() -> list[str]:
    return [f.name for f in LABELS]
