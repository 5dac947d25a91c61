"""Typed, frozen settings. Defaults are the documented strategy (DESIGN.md).

Precedence, highest first: explicit overrides (the command line), ``ASTERAI_*``
environment variables (nested with ``__``, e.g. ``ASTERAI_COLLECT__DAYS=90``),
``asterai.toml`` in the data root, then the defaults below.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from asterai.intervals import parse_intervals
from asterai.limits import OPTIMAL_KLINE_PAGE

REAL_EXCHANGE_URL = "https://fapi.asterdex.com"
#: the real exchange's websocket market streams (its REST base URL's companion)
REAL_STREAM_URL = "wss://fstream.asterdex.com"

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,30}$")


def parse_symbols(value: Any) -> tuple[str, ...]:
    """``"btcusdt, ETHUSDT"`` or a list -> ``("BTCUSDT", "ETHUSDT")``; refuses odd names."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a symbol must be text, got {item!r}")
        name = item.strip().upper()
        if not name:
            continue
        if not _SYMBOL_RE.match(name):
            raise ValueError(f"{item!r} is not a symbol name (letters and digits, like BTCUSDT)")
        if name not in out:
            out.append(name)
    return tuple(out)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExchangeSettings(_Frozen):
    """How the REST client talks to the exchange."""

    timeout_s: float = Field(15.0, gt=0, description="per-request timeout")
    max_retries: int = Field(
        30, ge=0, le=100, description="most retries of one request's temporary failures"
    )
    retry_budget_s: float = Field(
        120.0,
        gt=0,
        description="most seconds from a request's first failure (5xx, dropped or truncated "
        "responses, timeouts, 429s) until it is declared failed, its failed attempts and "
        "waits included: a short outage is waited out, a long one stops the run with the "
        "endpoint, the attempts and the last error",
    )
    connect_retries: int = Field(
        3,
        ge=0,
        le=100,
        description="retries of a transport failure (refused, unresolvable, timed out) "
        "before the exchange has sent any answer (then: unreachable); once it has answered, "
        "the same failure is an outage, waited out within retry_budget_s",
    )
    backoff_base_s: float = Field(0.5, gt=0, description="first retry delay; doubles, jittered")
    backoff_max_s: float = Field(30.0, gt=0, description="longest retry delay")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    weight_safety: float = Field(
        1.0, gt=0, le=1.0, description="share of the declared weight limit the client may use"
    )
    follower_share: float = Field(
        0.33, gt=0, le=1.0,
        description="share of that budget each long-running process takes (the signal "
        "service, the paper trader, live trading): the exchange counts weight per IP, so "
        "three of them on one machine stay under the limit together (1.0: one runs alone)",
    )  # fmt: skip

    def following(self) -> ExchangeSettings:
        """These settings for a long-running process: its share of the IP's budget."""
        return self.model_copy(update={"weight_safety": self.weight_safety * self.follower_share})


class CollectSettings(_Frozen):
    """What ``asterai collect`` fetches."""

    intervals: tuple[str, ...] = ("1h", "4h", "1d")
    days: int = Field(180, ge=1, le=3650, description="history to collect, or since listing")
    page_limit: int = Field(
        OPTIMAL_KLINE_PAGE, ge=1, le=1500, description="bars per klines request"
    )
    funding: bool = True

    @field_validator("intervals", mode="before")
    @classmethod
    def _intervals(cls, value: Any) -> tuple[str, ...]:
        return parse_intervals(value)


class DiscoverySettings(_Frozen):
    """How ``asterai discover`` categorises symbols."""

    majors: tuple[str, ...] = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "ADA")
    new_listing_days: int = Field(30, ge=1, description="younger than this: new listing")
    min_history_bars: int = Field(48, ge=1, description="fewer hourly bars: not trainable")
    activity_lookback_hours: int = Field(168, ge=24, le=1500)


class FeatureSettings(_Frozen):
    """What ``asterai features`` builds."""

    base_interval: str = "1h"
    higher_intervals: tuple[str, ...] = ("4h", "1d")
    label_horizon: int = Field(24, ge=1, le=1000, description="bars to the vertical barrier")
    tp_atr: float = Field(
        2.0, gt=0, description="take-profit barrier, in ATR(14) of the signal bar"
    )
    sl_atr: float = Field(2.0, gt=0, description="stop-loss barrier, in ATR(14) of the signal bar")
    plot_symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")

    @field_validator("higher_intervals", mode="before")
    @classmethod
    def _higher(cls, value: Any) -> tuple[str, ...]:
        return parse_intervals(value) if value else ()

    @field_validator("base_interval")
    @classmethod
    def _base(cls, value: str) -> str:
        return parse_intervals(value)[0]


class QualitySettings(_Frozen):
    """What the quality gate demands before training may start."""

    max_missing_share: float = Field(0.05, ge=0, le=1)
    required_symbols: tuple[str, ...] = Field(
        ("BTCUSDT", "ETHUSDT"),
        description="symbols that must be trainable (the cross-asset features need them)",
    )
    min_trainable_symbols: int = Field(
        2, ge=1, description="fewer trainable symbols than this: not ready"
    )

    @field_validator("required_symbols", mode="before")
    @classmethod
    def _required(cls, value: Any) -> tuple[str, ...]:
        return parse_symbols(value)


class UniverseSettings(_Frozen):
    """Which symbols are tradeable at each bar (data/universe.parquet), from trailing data."""

    min_listing_days: float = Field(
        3.0, ge=0, description="days since the listing (first bar) before a symbol is tradeable"
    )
    min_quote_volume_24h: float = Field(
        10_000.0, ge=0, description="trailing 24 h quote volume (USDT) a symbol needs"
    )
    max_tick_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "a bar whose price tick (today's, from discovery) is more than this share of its "
            "close is not tradeable: the spread alone would be the edge; 0 turns the rule off"
        ),
    )


class StrategySettings(_Frozen):
    capital: float = Field(50.0, gt=0, description="starting capital, USDT")
    risk_per_trade: float = Field(0.01, gt=0, le=1)
    max_positions: int = Field(5, ge=1)
    maker_fee: float = Field(0.0005, ge=0)
    taker_fee: float = Field(0.00075, ge=0)
    slippage: float = Field(
        0.0005, ge=0, lt=0.1, description="adverse slippage on market fills, share of price"
    )
    max_leverage: float = Field(5.0, gt=0, description="open notional / equity at most")
    max_drawdown: float = Field(
        0.5, gt=0, le=1, description="circuit breaker: close everything and stop below this"
    )
    default_min_notional: float = Field(
        5.0, ge=0, description="USDT; used where discovery has no MIN_NOTIONAL filter"
    )
    maintenance_margin: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="liquidation when equity falls to this share of the open notional, one "
        "rate for every symbol; Aster publishes its per-symbol brackets at GET "
        "/fapi/v1/leverageBracket (signed; its documentation shows 0.65% for ETHUSDT's "
        "first bracket): 1% is above that, but thin markets' brackets can be higher, so "
        "raise it when you trade them",
    )
    liquidation_fee: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="fee rate on a liquidation's notional, on top of the taker fee, where "
        "discovery has none (exchangeInfo's liquidationFee, 1% in Aster's documentation)",
    )
    kelly_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="0 = off; else risk this share of the Kelly bet from the calibrated "
        "probability at the labels' odds, never more than risk_per_trade",
    )
    sides: Literal["both", "long", "short"] = Field(
        "long",
        description="which sides the strategy trades: both (the stronger side of each "
        "signal), long or short only (a signal for the other side is no trade). The "
        "default is the walk-forward's choice by what the traded rows are paid "
        "(bench/train_choices.py; its table and its caveats are in the README)",
    )


class EnsembleSettings(_Frozen):
    xgboost_weight: float = Field(0.6, ge=0, le=1)
    lstm_weight: float = Field(0.4, ge=0, le=1)


class XGBoostSettings(_Frozen):
    """XGBoost (``hist``) for both directions at once (one output per direction)."""

    n_estimators: int = Field(400, ge=1, le=20_000, description="most boosting rounds")
    max_depth: int = Field(4, ge=1, le=16)
    learning_rate: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(5.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(30, ge=1, description="rounds without validation gain")
    objective: Literal["binary", "rank_pairwise", "pseudohuber", "squared"] = Field(
        "binary",
        description="binary: one logistic output per direction; rank_pairwise: one "
        "ranking score per bar (rank:pairwise grouped by bar), high = long, low = short; "
        "pseudohuber / squared (train.target = r_multiple only): one regression output "
        "per direction fitting the trade's net R-multiple (reg:pseudohubererror with a "
        "slope of 1 R, or reg:squarederror)",
    )
    ranking_pairs: int = Field(
        0,
        ge=0,
        le=1_000,
        description="rank_pairwise only: 0 pairs every row with every other row of its "
        "bar; N > 0 samples N pairs per row (lambdarank_pair_method mean), cheaper on "
        "wide cross-sections",
    )


def _over(default: XGBoostSettings, value: Any) -> Any:
    """What asterai.toml (a table) or code (an ``XGBoostSettings``) sets for a model's
    member, over that model's own defaults: ``[aster_native.xgboost] max_depth = 4``
    changes the depth alone, it does not rebuild the rest from ``XGBoostSettings``'."""
    if isinstance(value, XGBoostSettings):
        value = value.model_dump(exclude_unset=True)
    if isinstance(value, dict):
        return {**default.model_dump(), **value}
    return value


#: The confluence model's member ranks each bar's symbols (bench/train_choices.py).
CONFLUENCE_XGBOOST = XGBoostSettings(objective="rank_pairwise")
#: The Aster-native model's member: conservative (shallow, strongly regularised).
ASTER_NATIVE_XGBOOST = XGBoostSettings(
    n_estimators=300,
    max_depth=3,
    learning_rate=0.05,
    subsample=0.7,
    colsample_bytree=0.7,
    min_child_weight=20.0,
    reg_lambda=10.0,
    early_stopping_rounds=15,
)


class LSTMSettings(_Frozen):
    """The LSTM over the last ``sequence_length`` bars of one symbol's features."""

    sequence_length: int = Field(24, ge=2, le=512, description="bars per window")
    hidden_size: int = Field(32, ge=1, le=1024)
    num_layers: int = Field(1, ge=1, le=4)
    dropout: float = Field(0.0, ge=0, lt=1)
    epochs: int = Field(4, ge=1, le=500, description="most epochs per fold")
    patience: int = Field(2, ge=1, description="epochs without validation gain before stopping")
    batch_size: int = Field(
        1024, ge=1, le=65_536, description="windows per step; lower it on GPU out-of-memory"
    )
    learning_rate: float = Field(2e-3, gt=0, le=1)
    window_stride: int = Field(
        2, ge=1, le=100, description="train on every k-th window (all are predicted)"
    )
    missing_indicator_share: float = Field(
        0.05, ge=0, le=1, description="a column missing this often gets an indicator input"
    )


class TrainSettings(_Frozen):
    """Walk-forward evaluation and the final models (``asterai train``)."""

    folds: int = Field(4, ge=1, le=50, description="walk-forward folds (fewer when data is short)")
    scheme: Literal["expanding", "rolling"] = "expanding"
    test_bars: int | None = Field(
        None, ge=1, description="bars per test window (default: half the span over the folds)"
    )
    test_share: float = Field(
        0.5, gt=0, lt=1, description="share of the span the test windows cover by default"
    )
    min_train_bars: int = Field(120, ge=10, description="shortest first training window")
    valid_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="last part of each training window: early stopping, then calibration",
    )
    calibration_share: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="last part of each validation window that fits the Platt calibration "
        "(the part before it stops early; the two never share a row)",
    )
    embargo_bars: int = Field(6, ge=0, description="gap added to the purge (label horizon)")
    target: Literal["triple_barrier", "cross_sectional", "r_multiple"] = Field(
        "cross_sectional",
        description="triple_barrier: would the trade reach its target before its stop; "
        "cross_sectional: would the symbol's forward return beat the bar's median by the "
        "round-trip cost; r_multiple: the trade's outcome in units of its risk, net of "
        "the round-trip cost (a regression: needs a pseudohuber or squared XGBoost "
        "objective)",
    )
    stopping_metric: Literal["auc", "ic", "logloss", "mean_net"] = Field(
        "auc",
        description="what early stopping (XGBoost's rounds, the LSTM's epoch) and the LSTM "
        "gate maximise on their rows: auc (mean of both directions), ic (mean per-bar rank "
        "correlation with the forward return), logloss (minimised) or mean_net (what the "
        "trades are paid: the mean forward return after the round-trip cost of each "
        "allowed side's top score decile)",
    )
    lstm_gate: bool = Field(
        True,
        description="the LSTM joins a fold's ensemble only where it beat the XGBoost member "
        "on that fold's calibration rows (by the stopping metric; AUC for logloss)",
    )
    min_median_trees: int = Field(
        10, ge=1, description="warn when the median tree count over the folds is below this"
    )
    min_median_epochs: int = Field(
        2, ge=1, description="warn when the median LSTM epochs kept over the folds is below this"
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="probability that signals a trade")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="CPU threads for XGBoost (0: every core); the search "
        "gives each of its worker processes its share",
    )
    min_history_bars: int = Field(
        168, ge=1, description="confluence: symbols with fewer base bars are left out"
    )
    xgboost: XGBoostSettings = CONFLUENCE_XGBOOST
    lstm: LSTMSettings = LSTMSettings()

    @field_validator("xgboost", mode="before")
    @classmethod
    def _member(cls, value: Any) -> Any:
        return _over(CONFLUENCE_XGBOOST, value)


class AsterNativeSettings(_Frozen):
    """The model for new listings and thin markets: every trainable symbol, conservative."""

    min_history_bars: int = Field(48, ge=1, description="shortest history that is used")
    xgboost: XGBoostSettings = ASTER_NATIVE_XGBOOST

    @field_validator("xgboost", mode="before")
    @classmethod
    def _member(cls, value: Any) -> Any:
        return _over(ASTER_NATIVE_XGBOOST, value)


class Range(_Frozen):
    """One searched parameter's range: ``low`` to ``high`` inclusive, sampled on a log
    scale when ``log`` (both ends then above 0), on multiples of ``step`` from ``low``
    when given (integers: step 1 unless set)."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(
                f"an empty or inverted range: low = {self.low:g} must be below high = {self.high:g}"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range must start above 0, got low = {self.low:g}")
        if self.log and self.step is not None:
            raise ValueError("a range is either on a log scale or stepped, not both")
        return self


def _r(low: float, high: float, log: bool = False, step: float | None = None) -> Range:
    return Range(low=low, high=high, log=log, step=step)


class SearchSpace(_Frozen):
    """What the search may change, each parameter's default range (narrow any in
    ``[optimize.space]``; ``optimize.search`` lists the ones searched). The settings each
    parameter sets are in ``asterai.optimize.space.PARAMETERS``."""

    max_depth: Range = _r(2, 8, step=1)
    learning_rate: Range = _r(0.01, 0.3, log=True)
    n_estimators: Range = _r(100, 800, step=50)
    subsample: Range = _r(0.5, 1.0)
    colsample_bytree: Range = _r(0.4, 1.0)
    min_child_weight: Range = _r(1.0, 50.0, log=True)
    reg_lambda: Range = _r(0.1, 50.0, log=True)
    lstm_hidden_size: Range = _r(16, 128, log=True)
    lstm_sequence_length: Range = _r(12, 48, step=12)
    lstm_weight: Range = _r(0.0, 0.8)
    threshold: Range = _r(0.5, 0.8)
    tp_atr: Range = _r(1.0, 4.0)
    sl_atr: Range = _r(1.0, 4.0)
    label_horizon: Range = _r(8, 48, step=4)

    @model_validator(mode="after")
    def _bounds(self) -> SearchSpace:
        if not (0 < self.threshold.low and self.threshold.high < 1):
            raise ValueError(
                f"threshold: a probability threshold lies strictly inside 0..1, got "
                f"{self.threshold.low:g}..{self.threshold.high:g}"
            )
        for name in ("subsample", "colsample_bytree"):
            r = getattr(self, name)
            if not (0 < r.low and r.high <= 1):
                raise ValueError(f"{name}: a share lies in (0, 1], got {r.low:g}..{r.high:g}")
        if not (0 <= self.lstm_weight.low and self.lstm_weight.high <= 1):
            raise ValueError("lstm_weight: an ensemble weight lies in 0..1")
        for name in ("max_depth", "n_estimators", "lstm_hidden_size", "lstm_sequence_length",
                     "label_horizon", "min_child_weight", "reg_lambda", "learning_rate",
                     "tp_atr", "sl_atr"):  # fmt: skip
            r = getattr(self, name)
            if r.low <= 0 and name not in ("min_child_weight", "reg_lambda"):
                raise ValueError(f"{name}: the range must start above 0, got low = {r.low:g}")
            if r.low < 0:
                raise ValueError(f"{name}: the range must not go below 0, got low = {r.low:g}")
        return self


OBJECTIVES = ("sharpe", "sortino", "profit_factor", "logloss")


class OptimizeSettings(_Frozen):
    """The strategy search (``asterai optimize``): Optuna over the walk-forward of the
    history before a final window that no trial sees."""

    model: Literal["confluence", "aster_native"] = "confluence"
    study: str = Field(
        "confluence", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="study name"
    )
    trials: int = Field(20, ge=1, le=100_000, description="trials this run adds")
    timeout_s: float | None = Field(None, gt=0, description="stop starting trials after this")
    workers: int = Field(1, ge=1, le=64, description="processes on one study")
    storage: str | None = Field(
        None,
        description="None: Optuna's journal file in data/optimization/{study}/; or a "
        "postgresql:// URL shared by workers on several machines",
    )
    objective: Literal["sharpe", "sortino", "profit_factor", "logloss"] = Field(
        "sharpe",
        description="out-of-sample walk-forward after every cost: the daily Sharpe (or "
        "Sortino) of the concatenated equity, the profit factor, or minus the log loss",
    )
    min_trades: int = Field(
        10, ge=0, description="a trial with fewer out-of-sample trades fails (not a win)"
    )
    final_share: float = Field(
        0.2, gt=0, lt=0.5, description="the newest share of the history no trial sees"
    )
    seed: int = 42
    startup_trials: int = Field(
        5, ge=0, description="trials before the TPE sampler and the median pruner act"
    )
    pbo_blocks: int = Field(8, ge=2, le=16, description="CSCV blocks (even)")
    search: tuple[str, ...] | None = Field(
        None, description="the parameters searched (default: all that apply to the model)"
    )
    space: SearchSpace = SearchSpace()

    @field_validator("search")
    @classmethod
    def _known(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        known = tuple(SearchSpace.model_fields)
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {', '.join(known)}")
        if not value:
            raise ValueError("an empty list: name at least one parameter to search")
        return tuple(value)

    @field_validator("pbo_blocks")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"CSCV needs an even number of blocks, got {value}")
        return value


class PaperSettings(_Frozen):
    """Paper trading (``asterai paper``): the exported model's signals on a simulated
    account (``strategy``'s capital, risk and costs) against the live market."""

    model: Literal["confluence", "aster_native"] = "confluence"
    symbols: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        None, description="the symbols traded (default: every symbol of the export)"
    )
    daily_loss_limit: float = Field(
        0.05, ge=0, lt=1,
        description="no new entry for the rest of a UTC day once a close is this share "
        "below the previous day's last equity (0: off); exits go on",
    )  # fmt: skip
    max_delay_s: float = Field(
        120.0, gt=0,
        description="a bar seen later than this after its close is late: its exits, "
        "stops and funding are applied, its signals are not acted on",
    )  # fmt: skip
    grace_s: float = Field(
        120.0, gt=0, description="a bar overdue by this much makes the data stale"
    )
    poll_delay_s: float = Field(5.0, ge=0, description="seconds after a close before polling")
    straggler_wait_s: float = Field(
        30.0, ge=0,
        description="how long after a close to wait for a traded symbol whose bar has not "
        "come with the others' (it had the bar before) before trading the bar without "
        "it; its bar, when it comes, feeds the features but is not traded",
    )  # fmt: skip

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> tuple[str, ...] | None:
        return None if value is None else parse_symbols(value)

    @model_validator(mode="after")
    def _wait_within_delay(self) -> PaperSettings:
        if self.straggler_wait_s >= self.max_delay_s:
            raise ValueError(
                f"paper.straggler_wait_s = {self.straggler_wait_s:g} is not below "
                f"paper.max_delay_s = {self.max_delay_s:g}: a bar traded after that wait "
                "would always be late, its signals never acted on"
            )
        return self


class LiveSettings(_Frozen):
    """Live trading (``asterai live``): paper trading's loop and settings (``paper``:
    the model, the symbols, the delays, the daily loss limit) with signed orders on the
    exchange's account."""

    capital: float | None = Field(
        None, gt=0,
        description="USDT the bot may use (its allotment; default: strategy.capital): "
        "sizing never uses more than it plus the bot's realised PnL, whatever else the "
        "wallet holds. Raising it is always the user's command",
    )  # fmt: skip
    min_paper_days: float = Field(
        14.0, ge=0,
        description="days of a paper journal of the same export, reconciled with the "
        "backtest, that live trading needs before it starts (--override-ramp skips it, "
        "recorded in the journal)",
    )  # fmt: skip
    leverage: int = Field(
        10, ge=1, le=125,
        description="the exchange's leverage set on each traded symbol (cross margin, "
        "one-way mode): the margin it ties up; the strategy's own exposure cap is "
        "strategy.max_leverage",
    )  # fmt: skip
    max_rejections: int = Field(
        5, ge=1,
        description="the circuit breaker: this many orders in a row refused by the "
        "exchange stop new entries until a restart",
    )  # fmt: skip
    tracking_tolerance: float = Field(
        0.01, gt=0,
        description="the ramp's tolerance: the standard deviation of the daily "
        "difference between the live and the shadow account's returns",
    )  # fmt: skip


class WatchSettings(_Frozen):
    """Watching the accounts (``asterai dashboard``, ``--watch-port``): the alerts'
    pace. Where alerts go is a secret (a bot token, a webhook's key): only the
    environment says it, ``ASTERAI_ALERT_URLS`` (apprise URLs, space or comma
    separated)."""

    alert_interval_s: float = Field(
        600.0, ge=0,
        description="at most one message per kind of alert in this many seconds: what "
        "comes meanwhile is folded into the next one (the kill switch, a start after a "
        "crash and a liquidation go at once)",
    )  # fmt: skip
    error_streak: int = Field(
        3, ge=1, description="errors journaled with no bar committed between them that make "
        "an alert",
    )  # fmt: skip
    poll_s: float = Field(5.0, gt=0, description="seconds between looks at the journal")


class Settings(BaseSettings):
    """Everything configurable, with the documented defaults."""

    model_config = SettingsConfigDict(
        env_prefix="ASTERAI_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_root: Path = Path(".")
    base_url: str = REAL_EXCHANGE_URL
    ws_url: str | None = Field(
        None,
        description="the exchange's websocket streams, for closed klines pushed at their "
        "close (default: the real exchange's with the real REST URL; none with another "
        "REST URL, so a replay is never mixed with the live market; 'off': REST only)",
    )
    api_key: SecretStr | None = Field(None, exclude=True, repr=False)
    api_secret: SecretStr | None = Field(None, exclude=True, repr=False)
    exchange: ExchangeSettings = ExchangeSettings()
    collect: CollectSettings = CollectSettings()
    discovery: DiscoverySettings = DiscoverySettings()
    quality: QualitySettings = QualitySettings()
    features: FeatureSettings = FeatureSettings()
    strategy: StrategySettings = StrategySettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    universe: UniverseSettings = UniverseSettings()
    train: TrainSettings = TrainSettings()
    aster_native: AsterNativeSettings = AsterNativeSettings()
    optimize: OptimizeSettings = OptimizeSettings()
    paper: PaperSettings = PaperSettings()
    live: LiveSettings = LiveSettings()
    watch: WatchSettings = WatchSettings()
    params_from: str | None = Field(
        None, description="the best_params.json these settings came from (--params)"
    )
    exclude_symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="symbols left out of every step, by the user's choice"
    )

    @field_validator("exclude_symbols", mode="before")
    @classmethod
    def _exclude(cls, value: Any) -> tuple[str, ...]:
        return parse_symbols(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base URL must start with http:// or https://, got {value!r}")
        if "@" in urlsplit(value).netloc:
            raise ValueError(
                "the base URL must not carry credentials (they would be written into reports "
                "and provenance); API keys come from ASTERAI_API_KEY / ASTERAI_API_SECRET"
            )
        return value

    @field_validator("ws_url")
    @classmethod
    def _ws_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if value != "off" and not value.startswith(("ws://", "wss://")):
            raise ValueError(f"ws_url must start with ws:// or wss:// (or be 'off'), got {value!r}")
        if "@" in urlsplit(value).netloc:
            raise ValueError("the websocket URL must not carry credentials")
        return value

    def streams_url(self) -> str | None:
        """Where to open the kline streams, or None (REST only)."""
        if self.ws_url == "off":
            return None
        if self.ws_url is not None:
            return self.ws_url
        return REAL_STREAM_URL if self.base_url == REAL_EXCHANGE_URL else None

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to write into reports: no credentials (the API keys left out, a
        storage URL's password masked)."""
        out = self.model_dump(mode="json", exclude={"api_key", "api_secret"})
        if out["optimize"].get("storage"):
            out["optimize"]["storage"] = redact_url(out["optimize"]["storage"])
        return out

    def given_dict(self) -> dict[str, Any]:
        """What was set (asterai.toml, ASTERAI_* variables, the command line), nothing
        defaulted, secrets in full: for rebuilding these settings with changes
        (``load_settings(root, **given)``), never for writing anywhere. A field left
        unset stays unset in the rebuilt settings (``train.folds`` may then still
        shrink with the history)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude={"data_root"})


def redact_url(url: str) -> str:
    """A URL with its password masked (``postgresql://user:***@host/db``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        netloc = f"{parts.username}:***@{host}{port}"
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class ConfigError(ValueError):
    """A settings file or variable that cannot be used, with where and why."""


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err


def load_settings(data_root: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings for ``data_root`` (default: ``ASTERAI_DATA_ROOT`` or the current folder).

    ``overrides`` are nested dicts or top-level values, e.g.
    ``load_settings(root, base_url=url, collect={"days": 30})``; ``None`` values are ignored.
    """
    root = Path(data_root or os.environ.get("ASTERAI_DATA_ROOT") or ".").expanduser().resolve()
    toml_path = root / "asterai.toml"
    file_values = _read_toml(toml_path)
    file_values.pop("data_root", None)
    cli_values = {
        key: (
            {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value
        )
        for key, value in overrides.items()
        if value is not None
    }
    cli_values["data_root"] = root

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                env_settings,
                InitSettingsSource(settings_cls, init_kwargs=file_values),
            )

    try:
        loaded = _Loaded(**cli_values)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {key}: {e['msg']}")
        raise ConfigError(
            "invalid settings (from the command line, ASTERAI_* variables or "
            f"{toml_path}):\n" + "\n".join(lines)
        ) from err
    return loaded
