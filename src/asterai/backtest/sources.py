"""Where the money came from: a backtest's trades by side, by the score's decile and
by symbol.

The training's decile table (``asterai.models.money``) pools every scored row; this is
the account's side of the same question: the trades the strategy actually made, after
its limits, fills, fees and funding. A model can rank the cross-section correctly and
still lose because one side, a few deciles or a handful of symbols pay for everything
(or cost everything): the report shows which.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from asterai.backtest.inputs import Inputs
from asterai.data.store import to_epoch_ms
from asterai.models.money import score_deciles
from asterai.paths import DataPaths

#: Each model's config file, in its folder (``models.train.SPECS``).
CONFIG_FILES = {"confluence": "ensemble_config.json", "aster_native": "model_config.json"}

#: Symbols shown at each end of the ranking by PnL.
TOP_SYMBOLS = 5


def _group(pnl: pd.Series) -> dict[str, Any]:
    return {
        "trades": int(len(pnl)),
        "pnl": float(pnl.sum()),
        "mean_pnl": float(pnl.mean()) if len(pnl) else None,
        "median_pnl": float(pnl.median()) if len(pnl) else None,
        "win_rate": float((pnl > 0).mean()) if len(pnl) else None,
    }


def signal_scores(trades: pd.DataFrame, inputs: Inputs) -> np.ndarray:
    """Each trade's score: the probability of its own side at its signal bar."""
    if trades.empty:
        return np.empty(0)
    t = np.searchsorted(inputs.times, to_epoch_ms(trades["signal_time"]))
    index = {s: k for k, s in enumerate(inputs.symbols)}
    j = np.array([index[s] for s in trades["symbol"]], dtype=np.int64)
    long = trades["side"].to_numpy() == "long"
    return np.where(long, inputs.p_long[t, j], inputs.p_short[t, j]).astype(float)


def where_the_money_came_from(trades: pd.DataFrame, inputs: Inputs) -> dict[str, Any]:
    """By side; by decile of the trades' own scores (``signal_scores``, deciled by the
    training's rule, ``models.money.score_deciles``; lowest first), the mean and median PnL
    in each; by symbol, the ``TOP_SYMBOLS`` biggest winners and losers."""
    out: dict[str, Any] = {"trades": int(len(trades))}
    out["by_side"] = {s: _group(trades.loc[trades["side"] == s, "pnl"]) for s in ("long", "short")}
    if trades.empty:
        return out | {"by_decile": [], "winners": [], "losers": []}
    score = pd.Series(signal_scores(trades, inputs))
    decile = score_deciles(score.to_numpy())
    out["by_decile"] = [
        {
            "decile": int(d) + 1,
            "score_min": float(score[decile == d].min()),
            "score_max": float(score[decile == d].max()),
            **_group(trades.loc[decile == d, "pnl"]),
        }
        for d in np.unique(decile)
    ]
    per_symbol = []
    for symbol, g in trades.groupby("symbol"):
        per_symbol.append(
            {
                "symbol": str(symbol),
                **_group(g["pnl"]),
                "long": int((g["side"] == "long").sum()),
                "short": int((g["side"] == "short").sum()),
            }
        )
    per_symbol.sort(key=lambda r: r["pnl"], reverse=True)
    out["winners"] = [r for r in per_symbol[:TOP_SYMBOLS] if r["pnl"] > 0]
    out["losers"] = [r for r in per_symbol[::-1][:TOP_SYMBOLS] if r["pnl"] < 0]
    return out


def training_figures(root: Any, model: str, run_id: str | None) -> dict[str, Any] | None:
    """What the training measured on the same out-of-sample rows (``models.money``):
    its sentence, each side's traded rows and decile table; None when the model's config
    is missing or belongs to another run than the predictions traded, and for what is
    not a trained model's backtest (paper trading's report over its journal)."""
    if model not in CONFIG_FILES:
        return None
    path = DataPaths.at(root).models(model) / CONFIG_FILES[model]
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    summary = config.get("training_summary") or {}
    if config.get("run_id") != run_id or "earnings" not in summary:
        return None
    return {
        "earnings": summary["earnings"],
        "traded": summary["pooled"]["model"]["traded"],
        "deciles": summary["deciles"],
        "round_trip_cost": summary["round_trip_cost"],
    }
