"""The backtest's charts (PNG) and ``report.html``: one self-contained page a person reads.

The page puts the verdict first (the guide's criteria, PASS or FAIL, each with its 95%
interval, and whether the result is significant), then the models side by side and the
baselines, then the charts, then the tables (exit reasons, rejected orders, categories,
assumptions, trades). The charts are embedded as data URIs so the page travels as one
file. Every number shown comes from ``metrics.json`` or the CSVs written beside it
(the baselines' curves are in ``baselines_equity.csv``). Every table carries an ``id``,
so a program can read the page back (``tests/test_backtest.py`` does, and checks each
number against ``metrics.json``).

Hand-written HTML rather than quantstats' tearsheet: that one computes its own metrics
(which would then disagree with ours in the details) and cannot show rejected orders,
funding or the criteria.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asterai.backtest.metrics import CRITERIA

DPI = 100
CHARTS = {
    "equity.png": "Equity against the baselines (same window, universe, capital and costs) "
    "and the other model (on its own predictions and window)",
    "drawdown.png": "Drawdown from the running peak",
    "monthly_returns.png": "Monthly returns",
    "trade_pnl.png": "Distribution of trade PnL",
    "exposure.png": "Open positions and exposure (open notional / equity, equity.csv's "
    "exposure column)",
}
MODEL_NAMES = ("confluence", "aster_native")
COLOURS = {
    "confluence": "#1f5fa8",
    "aster_native": "#b5478b",
    "buy_and_hold_btc": "#e08a1e",
    "equal_weight_universe": "#5a9e4b",
    "rule_confluence": "#7f7f7f",
}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)


def monthly_returns(equity: pd.DataFrame, capital: float) -> pd.DataFrame:
    """Return per calendar month (rows: years, columns: months 1..12), from the equity at
    each month's last bar against the previous month's (the capital for the first)."""
    series = pd.Series(
        equity["equity"].to_numpy(dtype=float), index=pd.DatetimeIndex(equity["time"])
    )
    ends = series.groupby([series.index.year, series.index.month]).last()
    previous = np.concatenate([[capital], ends.to_numpy()[:-1]])
    returns = pd.Series(ends.to_numpy() / previous - 1.0, index=ends.index)
    table = returns.unstack()
    return table.reindex(columns=range(1, 13))


def write_charts(
    folder: Path,
    model: str,
    equity: pd.DataFrame,
    trades: pd.DataFrame,
    capital: float,
    max_drawdown_stop: float,
    curves: dict[str, pd.DataFrame | None],
) -> list[str]:
    """The five PNGs into ``folder``; ``curves`` are the other models' and the baselines'
    equity frames (``time``, ``equity``). Returns the file names written."""
    time = pd.DatetimeIndex(equity["time"])
    value = equity["equity"].to_numpy(dtype=float)

    fig = _figure(11, 4.6)
    ax = fig.subplots()
    ax.plot(time, value, color=COLOURS.get(model, "#1f5fa8"), lw=2, label=f"{model} (model)")
    for name, frame in curves.items():
        if frame is not None:
            ax.plot(
                pd.DatetimeIndex(frame["time"]), frame["equity"], lw=1.2,
                color=COLOURS.get(name),
                label=f"{name} (model, its own predictions)" if name in MODEL_NAMES
                else name.replace("_", " "),
            )  # fmt: skip
    ax.axhline(capital, color="black", lw=0.6, ls=":")
    ax.set_ylabel("equity, USDT")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    _save(fig, folder / "equity.png")

    fig = _figure(11, 3.2)
    ax = fig.subplots()
    peak = np.maximum.accumulate(np.concatenate([[capital], value]))[1:]
    dd = value / peak - 1.0
    ax.fill_between(time, dd * 100, 0, color="#c0392b", alpha=0.5, lw=0)
    bound = CRITERIA["max_drawdown"] * 100
    ax.axhline(-bound, color="black", lw=0.8, ls="--", label=f"criterion: {bound:g}%")
    ax.axhline(-max_drawdown_stop * 100, color="#c0392b", lw=0.8, ls=":", label="circuit breaker")
    ax.set_ylabel("drawdown, %")
    ax.set_ylim(min(dd.min() * 100, -max_drawdown_stop * 100) * 1.1, 1)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    _save(fig, folder / "drawdown.png")

    table = monthly_returns(equity, capital)
    fig = _figure(11, 1.2 + 0.45 * len(table))
    ax = fig.subplots()
    data = table.to_numpy(dtype=float) * 100
    limit = max(float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else 1.0, 1e-9)
    ax.imshow(np.ma.masked_invalid(data), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
                              "Oct", "Nov", "Dec"])  # fmt: skip
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    for (i, k), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(k, i, f"{v:+.1f}%", ha="center", va="center", fontsize=9)
    _save(fig, folder / "monthly_returns.png")

    fig = _figure(11, 3.4)
    ax = fig.subplots()
    if len(trades):
        pnl = trades["pnl"].to_numpy(dtype=float)
        bins = np.histogram_bin_edges(pnl, bins=min(40, max(5, len(pnl) // 3)))
        for side, colour in (("long", "#2e7d32"), ("short", "#c62828")):
            chosen = pnl[trades["side"].to_numpy() == side]
            if len(chosen):
                ax.hist(chosen, bins=bins, alpha=0.6, color=colour, label=f"{side} ({len(chosen)})")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no trades", ha="center", va="center", transform=ax.transAxes)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("PnL per trade, USDT (after fees and funding)")
    ax.set_ylabel("trades")
    ax.grid(alpha=0.3)
    _save(fig, folder / "trade_pnl.png")

    fig = _figure(11, 3.2)
    ax = fig.subplots()
    ax.step(time, equity["open_positions"], where="post", color="#1f5fa8", lw=1)
    ax.set_ylabel("open positions", color="#1f5fa8")
    twin = ax.twinx()
    twin.plot(time, equity["exposure"] * 100, color="#e08a1e", lw=0.8)
    twin.set_ylabel("exposure, % of equity", color="#e08a1e")
    ax.grid(alpha=0.3)
    _save(fig, folder / "exposure.png")
    return list(CHARTS)


# -- the page ----------------------------------------------------------------------------


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if kind == "pct":
        return f"{value:+.2%}"
    if kind == "share":
        return f"{value:.1%}"
    if kind == "bp":
        return f"{value * 1e4:.1f} bp"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return html.escape(str(value))


def _interval(ci: list[float] | None, kind: str = "num") -> str:
    if not ci:
        return "n/a"
    if kind == "share":
        return f"{ci[0]:.1%} .. {ci[1]:.1%}"
    return f"{ci[0]:.2f} .. {ci[1]:.2f}"


def _table(header: list[str], rows: list[list[str]], cls: str = "", id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return (
        f'<table id="{id}" class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _risk(strategy: dict[str, Any]) -> str:
    risk = f"{strategy['risk_per_trade'] * 100:g}% risk"
    kelly = strategy.get("kelly_fraction") or 0
    return f"{kelly:g} x Kelly, at most {risk}," if kelly else risk


def _rule(key: str, rule: str) -> str:
    """The criterion's rule in the unit its value is shown in."""
    if key in ("win_rate", "max_drawdown") and key in CRITERIA:
        return f"{rule.split()[0]} {CRITERIA[key]:.0%}"
    return rule


def _verdict(v: str) -> str:
    return f'<span class="{v.lower()}">{v}</span>'


def _summary_row(name: str, m: dict[str, Any]) -> list[str]:
    ci = (m.get("confidence_95") or {}).get("sharpe_ratio")
    passed = sum(c["verdict"] == "PASS" for k, c in m["criteria"].items() if k != "significant")
    return [
        html.escape(name),
        html.escape(f"{m['window']['first_bar'][:16]} .. {m['window']['last_bar'][:16]}"),
        str(m["trades"]),
        _fmt(m["total_return"], "pct"),
        f"{_fmt(m['sharpe_ratio'])} [{_interval(ci)}]",
        _fmt(m["max_drawdown"], "share"),
        _fmt(m["win_rate"], "share"),
        _fmt(m["probabilistic_sharpe_ratio"]),
        f"{passed} of {len(m['criteria']) - 1}",
    ]


STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d2330; max-width: 1180px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
     border-bottom: 1px solid #d0d6e0; padding-bottom: 4px; }
.sub { color: #5b6475; } .verdict { font-size: 18px; padding: 10px 14px; border-radius: 6px;
       margin: 14px 0; } .verdict.fail { background: #fdecea; } .verdict.pass { background: #e8f5e9; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d6e0; padding: 4px 8px; text-align: right; }
th { background: #f1f4f8; } td:first-child, th:first-child { text-align: left; }
table.left2 td:nth-child(2), table.left2 th:nth-child(2) { text-align: left; }
span.pass { color: #1b7a2f; font-weight: 600; } span.fail { color: #b3261e; font-weight: 600; }
img { max-width: 100%; border: 1px solid #e3e7ee; margin: 6px 0 14px; }
.note { color: #5b6475; font-size: 13px; } ul { margin: 4px 0; }
"""

#: Runs in the reader's browser: marks the page once every chart has decoded, so a
#: headless browser can prove the page renders whole (``tests/test_backtest.py``).
CHECK = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.body.setAttribute('data-charts', ok + '/' + imgs.length);
});
"""


def _money_sources(src: dict[str, Any] | None) -> list[str]:
    """The section "Where the money came from": by side, by the score's decile (mean and
    median PnL), the biggest winning and losing symbols (``backtest.sources``)."""
    if not src:
        return []

    def row(name: str, g: dict[str, Any], *extra: str) -> list[str]:
        return [
            html.escape(name), *extra, str(g["trades"]), _fmt(g["pnl"]), _fmt(g["mean_pnl"]),
            _fmt(g["median_pnl"]), _fmt(g["win_rate"], "share"),
        ]  # fmt: skip

    money = ["trades", "PnL, USDT", "mean PnL", "median PnL", "win rate"]
    symbols = [
        row(r["symbol"], r, f"{r['long']} / {r['short']}")
        for r in [*src["winners"], *src["losers"]]
    ]
    return [
        "<h2>Where the money came from</h2>",
        '<p class="note">The trades by side, by the decile of their own score (the '
        "probability of the side traded, at the signal), and the symbols that made or cost "
        "the most. A mean far from its median is a tail: a few trades paid (or cost) for "
        "the rest.</p>",
        _table(["side", *money], [row(k, v) for k, v in src["by_side"].items()], "", "sides"),
        _table(
            ["decile", "score", *money],
            [
                row(str(d["decile"]), d, f"{d['score_min']:.3f}-{d['score_max']:.3f}")
                for d in src["by_decile"]
            ],
            "",
            "deciles",
        ),
        _table(["symbol", "long / short", *money], symbols, "", "symbols"),
        *_training_money(src.get("training")),
    ]


def _training_money(tr: dict[str, Any] | None) -> list[str]:
    """The training's own figures on every scored out-of-sample row (before the limits
    on positions): the sentence, and the mean and median net return by score decile."""
    if not tr:
        return []
    rows = [
        [
            str(a["decile"]), str(a["rows"]), _fmt(a["mean"], "pct"), _fmt(a["median"], "pct"),
            _fmt(b["mean"], "pct"), _fmt(b["median"], "pct"),
        ]
        for a, b in zip(tr["deciles"]["long"], tr["deciles"]["short"], strict=False)
    ]  # fmt: skip
    return [
        f'<p class="note">The training, on every scored out-of-sample row: '
        f"{html.escape(tr['earnings'])}. Net of a round trip of "
        f"{tr['round_trip_cost']:.3%}, by score decile (p_long for the long side, p_short "
        "for the short):</p>",
        _table(
            ["decile", "rows", "long mean", "long median", "short mean", "short median"],
            rows, "", "training-deciles",
        ),  # fmt: skip
    ]


def render_html(metrics: dict[str, Any], folder: Path, trades: pd.DataFrame) -> str:
    """``report.html`` from ``metrics.json``'s dict, the charts in ``folder`` and the
    trades; nothing is computed here that the JSON does not hold."""
    m = metrics
    model = m["model"]
    crit = m["criteria"]
    failed = [k for k, c in crit.items() if k != "significant" and c["verdict"] == "FAIL"]
    significant = crit["significant"]["verdict"] == "PASS"
    # as `asterai backtest` and the pipeline grade it: significance is a criterion too
    overall = "PASS" if not failed and significant else "FAIL"
    headline = (
        f"{overall}: "
        + (
            f"{len(failed)} of {len(crit) - 1} criteria fail ({', '.join(failed)})"
            if failed
            else "every criterion passes"
        )  # fmt: skip
        + "; the result is "
        + ("significant" if significant else "not significant")
        + f" (probabilistic Sharpe ratio {_fmt(m['probabilistic_sharpe_ratio'])}, "
        f"{m['trades']} trades, {m['window']['bars']} bars out of sample)."
    )
    rows = []
    for key, c in crit.items():
        kind = "share" if key in ("win_rate", "max_drawdown") else "num"
        rows.append([
            html.escape(key.replace("_", " ")), html.escape(_rule(key, c["rule"])),
            _fmt(c["value"], kind),
            _interval(c.get("interval_95"), kind), _verdict(c["verdict"]),
        ])  # fmt: skip
    parts = [
        f"<h1>AsterAI backtest: {html.escape(model)}</h1>",
        f'<p class="sub">out of sample {html.escape(m["window"]["first_bar"])} .. '
        f"{html.escape(m['window']['last_bar'])}; {m['initial_capital']:g} USDT, "
        f"{_risk(m['settings']['strategy'])} per trade, at most "
        f"{m['settings']['strategy']['max_positions']} positions, full fees, slippage and "
        f"funding; run {html.escape(str(m.get('run_id')))}</p>",
        f'<div class="verdict {overall.lower()}">{html.escape(headline)}</div>',
        _table(
            ["criterion", "rule", "measured", "95% interval", "verdict"], rows, "left2", "criteria"
        ),  # fmt: skip
        '<p class="note">The guide\'s return figures are hypotheses this backtest grades, '
        "not promises. A month or two of out-of-sample bars is a small sample: read the "
        "intervals, not the point values.</p>",
    ]
    models = m.get("models") or {}
    header = ["model", "window", "trades", "return", "Sharpe [95%]", "max drawdown",
              "win rate", "PSR", "criteria passed"]  # fmt: skip
    rows = [_summary_row(model, m)]
    for name, other in models.items():
        if name == model:
            continue
        if isinstance(other, dict):
            rows.append(_summary_row(name, other))
        else:
            rows.append([html.escape(name), html.escape(str(other))] + [""] * 7)
    parts += ["<h2>Models side by side</h2>", _table(header, rows, "left2", "models")]
    if len(rows) > 1:
        parts.append(
            '<p class="note">Each model is traded on its own out-of-sample predictions; '
            "their windows can differ (see the window column).</p>"
        )
    rows = []
    for name, b in m["baselines"].items():
        if name == "note":
            continue
        if not isinstance(b, dict):
            rows.append([html.escape(name), html.escape(str(b))] + [""] * 6)
            continue
        beats = b.get("model_beats_it")
        rows.append([
            html.escape(name.replace("_", " ")), _fmt(b["total_return"], "pct"),
            _fmt(b["sharpe_ratio"]), _fmt(b["max_drawdown"], "share"),
            f"{_fmt(b.get('model_sharpe_minus_baseline'))} "
            f"[{_interval(b.get('difference_interval_95'))}]",
            _fmt(b.get("probability_model_better"), "share"),
            "n/a" if beats is None else ("yes" if beats else "no"),
            "n/a" if beats is None else ("yes" if b.get("by_more_than_the_noise") else "no"),
        ])  # fmt: skip
    parts += [
        "<h2>Baselines</h2>",
        _table(
            [
                "baseline",
                "return",
                "Sharpe",
                "max drawdown",
                "model minus baseline, Sharpe [95%]",
                "P(model better)",
                "model beats it",
                "by more than the noise",
            ],
            rows,
            "",
            "baselines",
        ),  # fmt: skip
        f'<p class="note">{html.escape(m["baselines"].get("note", ""))}</p>',
    ]
    trl = m.get("min_track_record") or {}
    ci = (m.get("confidence_95") or {}).get("sharpe_ratio")
    rows = [
        ["Sharpe ratio, daily returns [95%]", f"{_fmt(m['sharpe_ratio'])} [{_interval(ci)}]"],
        ["Sharpe ratio, per-bar returns (naive)", _fmt(m.get("sharpe_ratio_per_bar"))],
        ["probabilistic Sharpe ratio, daily returns", _fmt(m["probabilistic_sharpe_ratio"])],
        ["probabilistic Sharpe ratio, per-bar returns (naive)",
         _fmt(m.get("probabilistic_sharpe_ratio_per_bar"))],
        ["days observed", _fmt(trl.get("days_observed"))],
        ["days needed for a 95% PSR at this Sharpe", _fmt(trl.get("days_needed"))],
        ["more days needed", _fmt(trl.get("more_days"))],
    ]  # fmt: skip
    more = trl.get("more_days")
    come_back = (
        html.escape(trl.get("note") or "")
        if more is None
        else ("already long enough at this Sharpe" if more <= 0 else
              f"come back in {math.ceil(more)} days: that much more out-of-sample data at "
              "the measured Sharpe would make it significant at 95%")
    )  # fmt: skip
    parts += [
        "<h2>Significance</h2>",
        _table(["figure", "value"], rows, "", "significance"),
        f'<p class="note">{html.escape(m.get("sampling", ""))}. Minimum track record '
        f"length (Bailey and L&oacute;pez de Prado): {come_back}.</p>",
    ]
    cost = m.get("cost_sensitivity") or {}
    rows = [
        [f"{c['multiplier']:g}x", _fmt(c["round_trip_cost"], "bp"), _fmt(c["total_return"], "pct"),
         _fmt(c["sharpe_ratio"]), str(c["trades"])]
        for c in cost.get("table", [])
    ]  # fmt: skip
    parts += [
        "<h2>Costs</h2>",
        _table(
            ["fees and slippage", "round trip", "return", "Sharpe", "trades"], rows, "", "costs"
        ),  # fmt: skip
        f'<p class="note">Break-even: {html.escape(str(cost.get("break_even", "n/a")))}. '
        "Each row is a whole new run with every fee and the slippage scaled; the round trip "
        "is a taker entry and exit with slippage on both; the liquidation fee scales too. "
        "With a small account and stops a few ATRs away, costs decide most results.</p>",
        "<h2>Charts</h2>",
    ]
    for name, caption in CHARTS.items():
        data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(caption)}</h3>")
        parts.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">')
    short = "n/a (window too short)"
    figures = [
        ("final equity, USDT", _fmt(m["final_equity"])),
        ("total return", _fmt(m["total_return"], "pct")),
        ("CAGR", _fmt(m["cagr"], "pct") if m["cagr"] is not None else short),
        ("Sharpe ratio (daily returns)", _fmt(m["sharpe_ratio"])),
        ("Sortino ratio (daily returns)", _fmt(m["sortino_ratio"])),
        ("max drawdown", _fmt(m["max_drawdown"], "share")),
        ("longest drawdown, bars", _fmt(m["max_drawdown_bars"])),
        ("Calmar ratio", _fmt(m["calmar_ratio"]) if m["calmar_ratio"] is not None else short),
        ("win rate", _fmt(m["win_rate"], "share")),
        ("profit factor", _fmt(m["profit_factor"])),
        ("average win, USDT", _fmt(m["average_win"])),
        ("average loss, USDT", _fmt(m["average_loss"])),
        ("time in market (bars with a position)", _fmt(m["time_in_market"], "share")),
        ("turnover (traded notional / capital)", _fmt(m["turnover"])),
        ("fees paid, USDT", _fmt(m["fees_paid"])),
        ("funding paid, USDT", _fmt(m["funding_paid"])),
        ("annualisation", _fmt(m["annualisation"])),
    ]
    parts += [
        "<h2>Figures</h2>",
        _table(["figure", "value"], [[a, b] for a, b in figures], "", "figures"),
    ]
    rej = m["rejected_orders"]
    parts += [
        "<h2>Orders</h2>",
        _table(["exit reason", "trades"], [[html.escape(k), str(v)] for k, v in m["exit_reasons"].items()],
               "", "exits"),
        _table(
            ["rejected order reason", "signals"],
            [[html.escape(k), str(v)] for k, v in rej.items()] or [["none", "0"]], "", "rejected",
        ),
        f'<p class="note">{sum(rej.values())} signals could not become orders; '
        "rejected_orders.csv lists each one.</p>",
    ]  # fmt: skip
    cats = m.get("by_category") or {}
    parts += [
        "<h2>By category</h2>",
        _table(
            ["category", "trades", "win rate", "PnL, USDT", "symbols"],
            [
                [
                    html.escape(k),
                    str(v["trades"]),
                    _fmt(v["win_rate"], "share"),
                    _fmt(v["pnl"]),
                    html.escape(", ".join(v["symbols"])),
                ]
                for k, v in cats.items()
            ],
            "",
            "categories",
        ),  # fmt: skip
        *_money_sources(m.get("money_sources")),
        "<h2>Assumptions and notes</h2>",
        "<ul>"
        + "".join(
            f"<li>{html.escape(n)}</li>" for n in [*m.get("assumptions", []), *m.get("notes", [])]
        )
        + "</ul>",
    ]
    shown = trades.head(200)
    columns = ["symbol", "side", "signal_time", "entry_time", "exit_time", "entry_price",
               "exit_price", "quantity", "fees", "funding", "pnl", "exit_reason"]  # fmt: skip
    rows = [
        [html.escape(str(v)) if not isinstance(v, float) else f"{v:.10g}" for v in r]
        for r in shown[columns].itertuples(index=False)
    ]
    parts += [
        f"<h2>Trades ({len(trades)}{', the first 200' if len(trades) > 200 else ''})</h2>",
        _table(columns, rows, "trades", "trades"),
        '<p class="note">Every trade, every rejected order and the equity per bar are in '
        "trades.csv, rejected_orders.csv and equity.csv beside this page.</p>",
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>AsterAI backtest: {html.escape(model)}</title><style>{STYLE}</style>"
        f"<script>{CHECK}</script></head><body>" + "\n".join(parts) + "</body></html>"
    )
