"""One evaluation of a set of parameters: the walk-forward on a window, its
out-of-sample predictions backtested after every cost, the objective and the figures
the study keeps.

The search's trials evaluate on the search part (``Workspace.search_panel``; the
backtest ends at ``Split.search_end``); the final comparison evaluates once on the final
window, with one fold whose test window is that window (trained on everything before
it, less the purge). Both are the training's own ``walk_forward`` (``write=False``) and
the backtest's own kernel, so a trial measures what ``asterai train`` and ``asterai
backtest`` would.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from asterai.backtest import metrics as bm
from asterai.backtest.engine import params, simulate
from asterai.backtest.inputs import check_sizing, with_predictions
from asterai.config import Settings
from asterai.data.store import to_epoch_ms
from asterai.models.train import FoldCallback, walk_forward
from asterai.optimize.workspace import OptimizeError, Workspace


class TooFewTrades(ValueError):
    """A trial whose out-of-sample backtest traded less than ``optimize.min_trades``."""


@dataclass(slots=True)
class Evaluation:
    score: float | None  # the objective (higher is better); None: not defined
    figures: dict[str, Any]
    daily_returns: np.ndarray
    bar_returns: np.ndarray
    bar_start: int  # epoch ms of the first bar return
    folds: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def backtest_figures(
    settings: Settings, ws: Workspace, preds: pd.DataFrame, end_ms: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, int]:
    """The predictions traded from their first bar to ``end_ms`` on the worker's market:
    the figures, the daily and per-bar returns, the first bar."""
    inputs = with_predictions(ws.market, preds, end=end_ms)
    result = simulate(inputs, params(settings, inputs))
    capital = settings.strategy.capital
    daily = bm.daily_returns(result.equity, capital)
    curve = result.equity["equity"].to_numpy(dtype=float)
    per_bar = bm.returns_of(np.concatenate([[capital], curve]))
    pnl = result.trades["pnl"].to_numpy(dtype=float)
    gross_win, gross_loss = float(pnl[pnl > 0].sum()), float(-pnl[pnl <= 0].sum())
    figures = {
        "sharpe": bm.sharpe(daily, bm.DAYS_PER_YEAR),
        "sortino": bm.sortino(daily, bm.DAYS_PER_YEAR),
        "profit_factor": gross_win / gross_loss if gross_loss > 0 else None,
        "total_return": float(curve[-1] / capital - 1.0) if len(curve) else 0.0,
        "max_drawdown": bm.drawdown(np.concatenate([[capital], curve]))[0],
        "trades": int(len(result.trades)),
        "days": float(len(daily)),
        "first_bar": int(inputs.times[0]),
        "last_bar": int(inputs.times[-1]),
    }
    return figures, daily, per_bar, int(inputs.times[0])


def _objective(figures: dict[str, Any], logloss: float | None, objective: str) -> float | None:
    if objective == "logloss":
        return None if logloss is None else -logloss
    value = figures[objective]
    return None if value is None or not math.isfinite(value) else float(value)


def _logloss(overall: dict[str, Any]) -> float | None:
    values = [overall["model"][d].get("log_loss") for d in ("long", "short")]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate(
    settings: Settings,
    ws: Workspace,
    *,
    final: bool = False,
    on_fold: FoldCallback | None = None,
) -> Evaluation:
    """``settings`` (the base settings with a trial's parameters) on the search part,
    or with ``final`` on the final window."""
    started = time.perf_counter()
    check_sizing(settings, settings.train.target, ws.model)
    opt = settings.optimize
    if final:
        panel = ws.panel(settings)
        usable = panel.times[panel.tradeable & panel.labelled]
        # bars of the time grid (as ``layout`` counts them, gaps included) from the final
        # window's start to the last usable bar
        test_bars = int((usable.max() - ws.split.final_start) // panel.step_ms) + 1
        # one fold whose test window is the final window: ``layout`` tiles the test
        # windows at the end of the usable bars, so its test window starts at final_start
        # (set explicitly: too little history for it is an error, not fewer folds)
        one_fold = settings.train.model_copy(update={"folds": 1, "test_bars": test_bars})
        one = settings.model_copy(update={"train": one_fold})
        result = walk_forward(ws.model, one, panel=panel, write=False)
        end = int(ws.market.times[-1])
        start = result.layout.folds[0].test_start if result.layout else None
        if start != ws.split.final_start:
            raise OptimizeError(
                f"the final window's test fold starts at {start}, not at the final window "
                f"({ws.split.final_start}): report this"
            )
    else:
        panel = ws.search_panel(settings)
        result = walk_forward(ws.model, settings, panel=panel, write=False, on_fold=on_fold)
        end = ws.split.search_end
    preds = result.predictions
    if preds is None or result.layout is None:
        raise OptimizeError("the walk-forward returned no predictions")
    figures, daily, per_bar, first = backtest_figures(settings, ws, preds, end)
    logloss = _logloss(result.overall)
    figures["logloss"] = logloss
    figures["mean_fold_ic"] = float(
        np.mean([result.overall["model"][d]["mean_fold_ic"] or 0.0 for d in ("long", "short")])
    )
    summary = result.config["training_summary"]
    figures["median_trees"] = summary.get("median_trees")
    score = _objective(figures, logloss, opt.objective)
    horizon_ms = panel.horizon * panel.step_ms
    folds = [
        {
            **f.fold.to_json(),
            # the last bar any of the fold's labels reads
            "label_reach_ms": int(f.fold.test_end + horizon_ms),
        }
        for f in result.folds
    ]
    return Evaluation(score, figures, daily, per_bar, first, folds, time.perf_counter() - started)


def fold_scorer(settings: Settings, ws: Workspace, report) -> FoldCallback:
    """The pruner's per-fold score: the objective of the predictions so far, traded to
    the end of the latest fold's test window; ``report(fold, value)`` may raise to stop."""

    def on_fold(fold: int, preds: pd.DataFrame) -> None:
        if settings.optimize.objective == "logloss":
            return  # the pruner compares backtest scores; log loss is not one
        last = int(to_epoch_ms(preds["open_time"]).max())
        figures, daily, _, _ = backtest_figures(settings, ws, preds, min(last, ws.split.search_end))
        value = _objective(figures, None, settings.optimize.objective)
        report(fold, -1e9 if value is None else value, daily)

    return on_fold
