"""The paper period's report, and its reconciliation with the backtest over the same bars.

Two comparisons, both from the journal's first bar and a flat account of the same
capital:

1. **The engine.** The journal's own bar inputs through the backtest's loop
   (``engine.simulate``) must give the equity the trader journaled at every bar
   (the last excepted: the backtest closes what is open at the end of its data).
   This is the "same inputs, same result" check; any difference is a defect.
2. **The market.** The backtest's inputs for the same bars, built as ``asterai
   backtest`` builds them (the collected history through the gate, the point-in-time
   universe, the batch feature table's ATR, the exported model's predictions on the
   batch feature table), against what the trader was given. Every differing input is
   listed with its cause, read from the journal: a bar seen late (its signals were not
   acted on), after a restart, during stale data; a bar the exchange served
   differently, or not at all, when it was traded; a signal computed from other bars;
   funding not yet published. Then the two accounts: the first bar where their
   equity parts, and the trades only one of them made.

The data root must hold the collected history over the paper period (``asterai
collect``, ``validate``, ``features`` after it); the models are not retrained.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from asterai import atomic
from asterai.backtest import engine
from asterai.backtest.inputs import BacktestInputError, Inputs, lay_on_grid, market_inputs
from asterai.config import Settings
from asterai.data.store import to_epoch_ms
from asterai.intervals import iso_ms
from asterai.paper.journal import Journal, JournalError, pause_starts
from asterai.paths import DataPaths

#: two inputs closer than this are the same (float32 model inputs, TA-Lib's streaming)
TOLERANCE = 1e-9
FIELDS = ("open", "high", "low", "close", "volume", "tradeable", "p_long", "p_short", "atr",
          "funding")  # fmt: skip
_ARRAYS = dict(zip(FIELDS, ("open_", "high", "low", "close", "volume", "tradeable", "p_long",
                            "p_short", "atr", "funding"), strict=True))  # fmt: skip


class ReconcileError(RuntimeError):
    """The report cannot be made (no journal, no collected history over the period)."""


@dataclass(slots=True)
class Reconciliation:
    window: tuple[str, str]
    bars: int
    engine_equal: bool
    engine_max_diff: float
    batch: str  # "equal", "differs", or why it was not compared
    differences: pd.DataFrame = field(default_factory=pd.DataFrame)
    causes: dict[str, int] = field(default_factory=dict)
    first_equity_difference: str | None = None
    trades_only_paper: int = 0
    trades_only_backtest: int = 0
    paper_final_equity: float = 0.0
    backtest_final_equity: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    folder: str = ""
    #: the backtest's equity over the same bars from its own inputs (the dashboard's
    #: shadow of the paper account), when compared
    backtest_equity: pd.DataFrame | None = None
    #: the journal's controls the backtest does not have (the kill switch, a daily pause)
    #: from the bar they changed the account at, and how that part was checked
    controls: str | None = None

    def lines(self) -> list[str]:
        out = [
            f"paper period {self.window[0]} .. {self.window[1]} ({self.bars} bars); final "
            f"equity {self.paper_final_equity:.4f}",
            "engine: the backtest's loop over the journal's own bars "
            + ("gives the journaled equity at every bar" if self.engine_equal
               else f"DIFFERS from the journal (max {self.engine_max_diff:.3g}): a defect"),
        ]  # fmt: skip
        if self.controls:
            out.append(f"  {self.controls}")
        out.append(f"against the backtest's own inputs over the same bars: {self.batch}")
        if self.causes:
            for cause, n in sorted(self.causes.items(), key=lambda kv: -kv[1]):
                out.append(f"  {n:>6} input(s): {cause}")
        if self.backtest_final_equity is not None:
            out.append(
                f"  backtest final equity {self.backtest_final_equity:.4f}; first equity "
                f"difference {self.first_equity_difference or 'none'}; trades only in paper "
                f"{self.trades_only_paper}, only in the backtest {self.trades_only_backtest}"
            )
        out.append(f"written to {self.folder}")
        return out


def journal_inputs(journal: Journal) -> Inputs:
    """The journal's bars as the backtest's inputs (what the trader gave the broker)."""
    acct = journal.account
    bars = list(journal.bars())
    if not bars:
        raise ReconcileError(f"{journal.path}: no bar journaled yet")
    T, N = bars[-1][0].t + 1, len(acct.symbols)
    arrays = {f: np.full((T, N), np.nan) for f in FIELDS}
    arrays["funding"][:] = 0.0
    arrays["tradeable"][:] = 0.0
    for bar, _, _ in bars:
        for f in FIELDS:
            arrays[f][bar.t] = getattr(bar, f)
    times = acct.start_ms + np.arange(T, dtype=np.int64) * acct.step_ms
    return Inputs(
        list(acct.symbols), times, arrays["open"], arrays["high"], arrays["low"],
        arrays["close"], arrays["volume"], arrays["tradeable"].astype(bool), arrays["p_long"],
        arrays["p_short"], arrays["atr"], arrays["funding"], acct.tick, acct.step,
        acct.min_notional, [], (int(times[0]), int(times[-1])),
    )  # fmt: skip


def batch_inputs(settings: Settings, journal: Journal, start: int, end: int) -> Inputs:
    """The backtest's inputs over [start, end] for the journal's symbols: the collected
    market through the gate and the exported model's predictions on the feature table."""
    from asterai.deploy.runtime import OnnxModel

    acct = journal.account
    paths = DataPaths.at(settings.data_root)
    model = OnnxModel(paths.models(acct.facts["model"]) / "onnx")
    table_path = paths.features(settings.features.base_interval)
    if not table_path.exists():
        raise ReconcileError(f"{table_path} does not exist: run `asterai features`")
    table = pd.read_parquet(table_path)
    ms = to_epoch_ms(table["open_time"])
    if not len(ms) or ms.max() < end:
        raise ReconcileError(
            f"the feature table ends at {iso_ms(int(ms.max())) if len(ms) else 'nothing'}, "
            f"before the paper period's last bar {iso_ms(end)}: collect, validate and build "
            "the features again to compare the paper period with the backtest"
        )
    inside = (ms >= start) & (ms <= end) & table["symbol"].isin(acct.symbols).to_numpy()
    preds = model.predict(table, targets=inside)
    preds = preds.assign(
        symbol=table["symbol"].astype(str)[inside], open_time=table["open_time"][inside]
    )
    try:
        market = market_inputs(settings, list(acct.symbols), start, end)
    except BacktestInputError as err:
        raise ReconcileError(f"the backtest's inputs over the paper period: {err}") from err
    # every symbol the account trades, with or without a prediction in the window
    return replace(
        market,
        p_long=lay_on_grid(preds, "p_long", market.symbols, market.times, acct.step_ms),
        p_short=lay_on_grid(preds, "p_short", market.symbols, market.times, acct.step_ms),
    )


def _cause_of_bar(row: dict[str, Any], events: list[dict[str, Any]], step_ms: int) -> str | None:
    """Why a journaled bar's signals were not acted on (None: they were)."""
    if not row["late"]:
        return None
    close = row["open_ms"] + step_ms - 1
    between = [e["kind"] for e in events if close < e["at_ms"] <= row["seen_ms"]]
    if "restart" in between or "start" in between:
        return "late bar (after a restart): seen after its close, signals not acted on"
    if "stale" in between or "resumed" in between:
        return "late bar (stale data): seen after its close, signals not acted on"
    return "late bar: seen after its close, signals not acted on"


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both_nan = np.isnan(a) & np.isnan(b)
    return both_nan | (np.abs(np.nan_to_num(a - b, nan=np.inf)) <= TOLERANCE)


def compare_inputs(
    paper: Inputs,
    batch: Inputs,
    rows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    step_ms: int,
) -> pd.DataFrame:
    """Every (bar, symbol, input) where the trader's input differs from the backtest's,
    with its cause."""
    by_t = {r["t"]: r for r in rows}
    out = []
    T = min(len(paper.times), len(batch.times))
    for name in FIELDS:
        a = getattr(paper, _ARRAYS[name])[:T].astype(float)
        b = getattr(batch, _ARRAYS[name])[:T].astype(float)
        for t, j in zip(*np.nonzero(~_same(a, b)), strict=True):
            out.append((int(t), paper.symbols[j], name, a[t, j], b[t, j]))
    frame = pd.DataFrame(out, columns=["t", "symbol", "input", "paper", "backtest"])
    causes = []
    for t, symbol, name, a, b in out:
        row = by_t.get(t)
        late = _cause_of_bar(row, events, step_ms) if row is not None else None
        price_differs = not all(
            _same(getattr(paper, _ARRAYS[f])[t, paper.symbols.index(symbol)],
                  getattr(batch, _ARRAYS[f])[t, paper.symbols.index(symbol)])
            for f in ("open", "high", "low", "close", "volume")
        )  # fmt: skip
        if row is None:
            causes.append("bar not journaled")
        elif name in ("p_long", "p_short") and late is not None:
            causes.append(late)
        elif name in ("open", "high", "low", "close", "volume"):
            causes.append(
                "no bar when traded (late for this symbol, or not served)" if np.isnan(a)
                else "not in the collected history" if np.isnan(b)
                else "the exchange's bar changed after it was traded (revised)"
            )  # fmt: skip
        elif name == "funding":
            causes.append("funding rate not yet published when the bar was traded")
        elif price_differs:
            causes.append(f"{name} computed from a bar that differs (see its prices)")
        elif name == "tradeable":
            causes.append(
                "the universe's rule saw other bars (a late or missing bar before), or "
                "another tick (the exchange's at the service's start, not discovery's)"
            )
        else:
            causes.append(
                f"{name} computed from other bars (a late or revised bar before it, or a "
                "window cut by a restart)"
            )
    frame["cause"] = causes
    frame.insert(1, "time", [iso_ms(int(paper.times[t])) for t in frame["t"]])
    return frame


def controls_from(rows: list[dict[str, Any]]) -> tuple[int, str] | None:
    """The first bar whose equity a control the backtest does not have may change, and
    that control: the kill switch (it closes at the bar's open) or a daily pause (the
    user's, or the daily loss limit's: a close below the day's floor refuses that
    close's signals, so the next bar is the first to differ); None without either."""
    killed = next((i for i, r in enumerate(rows) if r["kill"]), None)
    paused = next(pause_starts(rows), None)
    if killed is not None and (paused is None or killed <= paused):
        return killed, f"the kill switch at {iso_ms(int(rows[killed]['open_ms']))}"
    if paused is None:
        return None
    r = rows[paused]
    floor = next(x["new_floor"] for x in rows[paused::-1] if x["new_floor"] is not None)
    what = "the user's daily pause" if math.isinf(floor) else "the daily loss limit's pause"
    return paused + 1, f"{what} from the close of {iso_ms(int(r['open_ms']))}"


def _trade_keys(trades: pd.DataFrame) -> set[tuple]:
    return {(r.symbol, r.side, str(r.entry_time), str(r.exit_time), round(float(r.pnl), 9))
            for r in trades.itertuples()}  # fmt: skip


def reconcile(settings: Settings) -> tuple[Reconciliation, engine.Result]:
    paths = DataPaths.at(settings.data_root)
    if not paths.paper_journal.exists():
        raise ReconcileError(f"{paths.paper_journal} does not exist: no paper account here")
    with Journal.open(paths.paper_journal, readonly=True) as j:
        acct = j.account
        paper = journal_inputs(j)
        rows = j.query("SELECT * FROM bars ORDER BY t")
        events = j.query("SELECT * FROM events ORDER BY seq")
        p = acct.params
        ran = engine.simulate(paper, p)
        journaled = np.array([r["equity"] for r in rows])
        # the backtest has no kill switch and no daily pause: its loop is compared up to
        # the first bar one of them changed; the rest is the journal's replay through
        # the engine's own step with the journaled controls (``rebuild``)
        cut = controls_from(rows)
        upto = len(rows) - 1 if cut is None else min(cut[0], len(rows) - 1)
        diff = np.abs(ran.equity["equity"].to_numpy()[:upto] - journaled[:upto])
        equal = bool(np.all(diff == 0))
        start, end = int(paper.times[0]), int(paper.times[-1])
        out = Reconciliation(
            (iso_ms(start), iso_ms(end)), len(rows), equal,
            float(diff.max()) if len(diff) else 0.0, "not compared",
        )  # fmt: skip
        if cut is not None:
            try:
                j.rebuild()
                replayed = "replayed through the engine's per-bar step: equal"
            except JournalError as err:
                out.engine_equal = False
                replayed = f"replayed through the engine's per-bar step: DIFFERS ({err})"
            out.controls = (f"the backtest's loop compared up to {cut[1]}, a control it "
                            f"does not have; from there the journal, {replayed}")  # fmt: skip
        out.paper_final_equity = float(journaled[-1])
        try:
            batch = batch_inputs(settings, j, start, end)
        except ReconcileError as err:
            out.batch = f"not compared: {err}"
            return out, ran
    out.differences = compare_inputs(paper, batch, rows, events, acct.step_ms)
    out.causes = out.differences["cause"].value_counts().to_dict()
    theirs = engine.simulate(batch, p)
    out.backtest_equity = theirs.equity
    a = ran.equity["equity"].to_numpy()[:upto]
    b = theirs.equity["equity"].to_numpy()[: len(a)]
    parted = np.flatnonzero(np.abs(a - b) > TOLERANCE)
    out.first_equity_difference = iso_ms(int(paper.times[parted[0]])) if len(parted) else None
    # trades that closed before the first bar a control changed
    limit = int(paper.times[cut[0]]) if cut is not None and cut[0] < len(rows) else end + 1
    before = pd.Timestamp(limit, unit="ms", tz="UTC")
    done_a = ran.trades[(ran.trades["exit_reason"] != "end of data")
                        & (pd.to_datetime(ran.trades["exit_time"], utc=True) < before)]
    done_b = theirs.trades[(theirs.trades["exit_reason"] != "end of data")
                           & (pd.to_datetime(theirs.trades["exit_time"], utc=True) < before)]
    ka, kb = _trade_keys(done_a), _trade_keys(done_b)
    out.trades_only_paper, out.trades_only_backtest = len(ka - kb), len(kb - ka)
    out.backtest_final_equity = float(theirs.equity["equity"].iloc[-2 if len(b) > 1 else -1])
    out.batch = (
        "equal: the same inputs, the same trades and equity"
        if not len(out.differences) and not len(parted)
        else f"{len(out.differences)} differing input(s)"
    )
    return out, ran


def write_report(settings: Settings) -> Reconciliation:
    """``data/paper/report/``: the backtest's report for the paper period (metrics.json,
    trades.csv, equity.csv, rejected_orders.csv, the charts and report.html, with the
    baselines over the same bars) plus reconciliation.json and differences.csv, as one
    set. Without the collected history over the period, the figures only (the baselines
    read it)."""
    from asterai.backtest import metrics

    out, ran = reconcile(settings)
    paths = DataPaths.at(settings.data_root)
    with Journal.open(paths.paper_journal, readonly=True) as j:
        acct = j.account
        paper = journal_inputs(j)
    name = f"paper ({acct.facts['model']})"
    run: engine.ModelRun | None = None
    if out.backtest_final_equity is not None:
        run = engine.measure(settings, paper, acct.params, name)
        m = run.metrics
        m["models"] = {name: engine._headline(m)}
    else:
        per_year, per_day = engine.annualisation(settings)
        m = metrics.compute(
            ran.equity, ran.trades, ran.rejected, acct.params.capital, settings.train.seed,
            bars_per_year=per_year, block_bars=per_day, max_drawdown=acct.params.max_drawdown,
        )  # fmt: skip
    m["paper"] = (
        "the paper period, as journaled; positions still open at its last bar are closed "
        "there at its close, as the backtest closes them at the end of its data"
    )
    out.metrics = m
    folder = paths.paper / "report"
    out.folder = str(folder)

    def build(tmp) -> None:
        ran.trades.to_csv(tmp / "trades.csv", index=False)
        ran.equity.to_csv(tmp / "equity.csv", index=False)
        ran.rejected.to_csv(tmp / "rejected_orders.csv", index=False)
        out.differences.to_csv(tmp / "differences.csv", index=False)
        (tmp / "metrics.json").write_text(json.dumps(m, indent=2, default=str))
        doc = {
            "window": out.window, "bars": out.bars, "engine_equal": out.engine_equal,
            "engine_max_diff": out.engine_max_diff, "batch": out.batch, "causes": out.causes,
            "first_equity_difference": out.first_equity_difference,
            "trades_only_paper": out.trades_only_paper,
            "trades_only_backtest": out.trades_only_backtest,
            "paper_final_equity": out.paper_final_equity, "controls": out.controls,
            "backtest_final_equity": out.backtest_final_equity,
        }  # fmt: skip
        (tmp / "reconciliation.json").write_text(json.dumps(doc, indent=2))
        if out.backtest_equity is not None:
            # its last bar closes what is open (the end of its data, with the fees): not
            # a figure of the market's, left out as the comparison leaves it out
            out.backtest_equity.iloc[:-1].to_csv(tmp / "backtest_equity.csv", index=False)
        if run is not None:
            engine.baselines_frame(run).to_csv(tmp / "baselines_equity.csv", index=False)
            engine.write_report_files(tmp, settings, name, run, run.curves)

    atomic.replace_folder(folder, build)
    return out
