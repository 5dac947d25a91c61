"""``report.html`` of a study: one self-contained page (charts as data URIs).

Verdict first: the sentence on luck (the deflated Sharpe ratio after N trials) and the
probability of backtest overfitting; then the side-by-side the issue asks for (the
search's best score, the same parameters on the final window, the defaults on the
final window); then the optimisation history and the parameter importances (matplotlib);
then the best parameters and the trial counts. Tables carry ids so a program can read
the page back. The style and the chart check are the backtest report's.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from asterai import atomic
from asterai.backtest.report import CHECK, STYLE, _figure, _fmt, _table

log = logging.getLogger(__name__)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def history_chart(study: optuna.Study, objective: str) -> str:
    trials = study.get_trials(deepcopy=False)
    fig = _figure(9, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        x = [t.number for t in done]
        y = [t.value for t in done]
        ax.scatter(x, y, s=18, color="#2a6fdb", label="complete trial")
        ax.plot(x, np.maximum.accumulate(y), color="#b3261e", lw=1.5, label="best so far")
    other = [t for t in trials if t.state in (TrialState.PRUNED, TrialState.FAIL)]
    if other:
        for state, colour in ((TrialState.PRUNED, "#9aa3b2"), (TrialState.FAIL, "#e0a000")):
            nums = [t.number for t in other if t.state == state]
            if nums:
                lo = min(y) if done else 0.0
                ax.scatter(nums, [lo] * len(nums), marker="x", s=18, color=colour,
                           label=state.name.lower() + " (drawn at the lowest score)")  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel(f"search score ({objective})")
    ax.set_title("Optimisation history (search part only)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def importances(study: optuna.Study) -> dict[str, float] | None:
    """fANOVA importances (Optuna's own evaluator), None with fewer than 2 complete
    trials or a search with one parameter."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2 or len(done[0].params) < 2:
        return None
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
    except Exception as err:  # too few distinct values, ...
        log.info("no parameter importances: %s", err)
        return None


def importance_chart(values: dict[str, float]) -> str:
    names = list(values)[::-1]
    fig = _figure(9, 0.3 * len(names) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(names, [values[n] for n in names], color="#2a6fdb")
    ax.set_xlabel("importance (fANOVA, share of the score's variance)")
    ax.set_title("Parameter importances")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def _row(name: str, f: dict[str, Any]) -> list[str]:
    return [
        html.escape(name),
        _fmt(f.get("score")),
        _fmt(f.get("sharpe")),
        _fmt(f.get("total_return"), "pct"),
        _fmt(f.get("max_drawdown"), "share"),
        str(f.get("trades", "n/a")),
        _fmt(f.get("days")),
        _fmt(f.get("mean_fold_ic")),
    ]


def render(study: optuna.Study, summary: dict[str, Any]) -> str:
    s = summary
    dsr, pbo = s["deflated_sharpe"], s["pbo"]
    p = dsr["deflated_sharpe_ratio"]
    ok = p is not None and p >= 0.95
    luck = html.escape(s["deflated_sharpe_sentence"])
    pbo_text = (
        f"Probability of backtest overfitting (CSCV, {pbo['blocks']} blocks, "
        f"{pbo['splits']} splits, {pbo['trials']} trials): <b>{pbo['pbo']:.2f}</b>: in that "
        "share of the ways to split the search's history in two, the trial best on one half "
        "ranked at or below the median on the other."
        if pbo.get("pbo") is not None
        else f"Probability of backtest overfitting: not computed ({html.escape(pbo.get('reason', ''))})."
    )
    fw = s["final_window"]
    looks = len(fw["evaluations"])
    split = s["split"]
    compare = _table(
        [
            "",
            "score",
            "Sharpe (daily, annualised)",
            "return",
            "max drawdown",
            "trades",
            "days",
            "mean fold IC",
        ],  # fmt: skip
        [
            _row(
                f"search: best trial #{s['best_trial']} (walk-forward before the final window)",
                s["search_best"],
            ),  # fmt: skip
            _row("final window: the same parameters", fw["best_params"]),
            _row("final window: the default parameters", fw["default_params"]),
        ],
        id="comparison",
    )
    counts = s["trials"]
    count_table = _table(
        ["trials", "complete", "pruned", "failed", "running"],
        [
            [
                str(counts["total"]),
                str(counts["complete"]),
                str(counts["pruned"]),
                str(counts["fail"]),
                str(counts["running"]),
            ]
        ],  # fmt: skip
        id="trials",
    )
    best = study.best_trial
    params = _table(
        ["parameter", "best", "searched range"],
        [
            [
                html.escape(k),
                _fmt(v),
                html.escape(
                    f"{s['space'][k]['low']} .. {s['space'][k]['high']}"
                    + (" (log)" if s["space"][k]["log"] else "")
                ),
            ]
            for k, v in best.params.items()
        ],  # fmt: skip
        id="best-params",
    )
    dsr_table = _table(
        [
            "trials tried (complete)",
            "variance of their Sharpes (daily)",
            "expected best Sharpe under no skill",
            "best Sharpe (daily)",
            "days",
            "deflated Sharpe ratio",
        ],  # fmt: skip
        [
            [
                f"{dsr['trials']} ({dsr.get('complete_trials', 'n/a')})",
                _fmt(dsr["sharpe_variance"]),
                _fmt(dsr["expected_max_sharpe"]),
                _fmt(dsr["best_sharpe"]),
                str(dsr["observations"]),
                _fmt(p),
            ]
        ],  # fmt: skip
        id="dsr",
    )
    if dsr.get("note"):
        dsr_table += f"<p class='note'>{html.escape(dsr['note'])}</p>"
    imp = importances(study)
    charts = [f'<img alt="optimisation history" src="{history_chart(study, s["objective"])}">']
    if imp:
        charts.append(f'<img alt="parameter importances" src="{importance_chart(imp)}">')
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>AsterAI optimisation: {html.escape(s['study'])}</title><style>{STYLE}</style>"
        f"<script>{CHECK}</script></head><body>"
        f"<h1>Strategy search: study {html.escape(s['study'])} ({html.escape(s['model'])})</h1>"
        f"<p class='sub'>Objective: {html.escape(s['objective'])}, out of sample after every "
        f"cost. Trials saw bars up to {html.escape(split['search_end'][:16])}; the final "
        f"window from {html.escape(split['final_start'][:16])} was never seen by any trial "
        f"(a gap of {split['gap_bars']} bars between).</p>"
        f"<div class='verdict {'pass' if ok else 'fail'}'>{luck}</div>"
        f"<p>{pbo_text}</p>"
        "<h2>Search against the final window</h2>"
        f"{compare}"
        f"<p class='note'>The final window has been evaluated {looks} time(s) for this study; "
        "every look at it after the first is a little less untouched.</p>"
        "<h2>Deflated Sharpe ratio</h2>"
        f"{dsr_table}<p class='note'>Bailey and López de Prado (2014): the best trial's "
        "Sharpe against the best one expected from that many trials of no skill, with the "
        "returns' skew and kurtosis. Every trial tried counts, pruned ones with their "
        "returns up to the fold they were stopped at. 0.95 or more: distinguishable from "
        "luck.</p>"
        "<h2>History and importances</h2>" + "".join(charts) +
        "<h2>Best parameters</h2>" + params +
        "<h2>Trials</h2>" + count_table +
        "<p class='note'>trials.csv beside this page lists every trial, with its failure "
        "reason where it failed; best_params.json is what `asterai train --params` reads.</p>"
        "</body></html>"
    )  # fmt: skip


def write_report(path: Path, study: optuna.Study, summary: dict[str, Any]) -> None:
    atomic.write_text(path, render(study, summary))
