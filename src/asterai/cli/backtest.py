"""``asterai backtest``: trade the out-of-sample predictions and grade the criteria."""

from __future__ import annotations

import math

import click

from asterai.cli.common import StepFailed, common_options, params_option, rich_console
from asterai.config import Settings


@click.command()
@click.option(
    "--model",
    type=click.Choice(["confluence", "aster-native"]),
    default="confluence",
    show_default=True,
    help="Whose out-of-sample predictions to trade.",
)
@params_option
@common_options
def backtest(settings: Settings, model: str) -> None:
    """Trade the out-of-sample predictions with 50 USDT, 1% risk and full costs.

    A signal at a bar's close fills at the next open plus slippage; stops and targets
    (the labels' barriers) against each bar's high and low, the stop when both are
    touched; taker and maker fees, funding, lot step, tick and minimum notional on every
    order (rejected orders counted by reason); at most 5 positions; a liquidation check
    and a drawdown circuit breaker. Writes data/backtest_results/ (metrics.json with the
    guide's criteria graded PASS or FAIL, trades.csv, rejected_orders.csv, equity.csv,
    five PNG charts and report.html); the other model, when trained, is backtested
    beside it (its files in a subfolder named after it). Exits 1 when a criterion fails.
    """
    from asterai.backtest.engine import BacktestInputError, run_backtest
    from asterai.data.gate import GateRefused

    try:
        out = run_backtest(settings, model.replace("-", "_"))
    except (BacktestInputError, GateRefused) as err:
        raise StepFailed(str(err)) from err
    m = out["metrics"]
    console = rich_console()
    from rich.table import Table

    table = Table(
        title=f"{model}: out of sample, {m['window']['first_bar'][:10]} .. {m['window']['last_bar'][:10]}, {m['trades']} trades"
    )
    for col in ("criterion", "rule", "measured", "95% interval", "verdict"):
        table.add_column(col)
    for key, c in m["criteria"].items():
        interval = c.get("interval_95")
        table.add_row(
            key, c["rule"], "n/a" if c["value"] is None else f"{c['value']:.3f}",
            "" if not interval else f"{interval[0]:.3f} .. {interval[1]:.3f}",
            f"[{'green' if c['verdict'] == 'PASS' else 'red'}]{c['verdict']}[/]",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"final equity {m['final_equity']:.2f} USDT ({m['total_return']:+.1%}), fees "
        f"{m['fees_paid']:.2f}, funding {m['funding_paid']:.2f}; rejected orders: "
        + ", ".join(f"{k} {v}" for k, v in m["rejected_orders"].items()),
        highlight=False,
    )
    for name, b in m["baselines"].items():
        if isinstance(b, dict):
            verdict = "beats" if b.get("model_beats_it") else "does NOT beat"
            noise = " (by more than the noise)" if b.get("by_more_than_the_noise") else ""
            better = b.get("probability_model_better")
            odds = "" if better is None else f", P(model better) {better:.0%}"
            console.print(
                f"baseline {name}: {b['total_return']:+.1%}, Sharpe "
                f"{'n/a' if b['sharpe_ratio'] is None else format(b['sharpe_ratio'], '.2f')}; "
                f"the model {verdict} it{noise}{odds}",
                highlight=False,
            )
    naive, daily = m.get("probabilistic_sharpe_ratio_per_bar"), m["probabilistic_sharpe_ratio"]
    trl = m.get("min_track_record") or {}
    more = trl.get("more_days")
    console.print(
        "significance: PSR "
        + ("n/a" if daily is None else f"{daily:.3f}")
        + " from daily returns (per bar, naive: "
        + ("n/a" if naive is None else f"{naive:.3f}")
        + "); "
        + (trl.get("note") or "" if more is None else
           "long enough at this Sharpe" if more <= 0 else
           f"{math.ceil(more)} more days at this Sharpe would make it significant at 95%"),
        highlight=False,
    )  # fmt: skip
    cost = m.get("cost_sensitivity") or {}
    if cost.get("table"):
        console.print(
            "costs: return "
            + ", ".join(f"{c['total_return']:+.1%} at {c['multiplier']:g}x" for c in cost["table"])
            + f"; break-even {cost.get('break_even')}",
            highlight=False,
        )
    for name, other in m["models"].items():
        if name == m["model"]:
            continue
        if isinstance(other, dict):
            sr = other["sharpe_ratio"]
            console.print(
                f"beside it, {name}: {other['total_return']:+.1%}, Sharpe "
                f"{'n/a' if sr is None else format(sr, '.2f')}, {other['trades']} trades "
                f"({out['folder']}/{name}/)",
                highlight=False,
            )
        else:
            console.print(f"beside it, {name}: {other}", highlight=False)
    for note in m["notes"][:5]:
        console.print(f"note: {note}", highlight=False)
    console.print(f"results: {out['folder']}; read {out['folder']}/report.html", highlight=False)
    failed = [k for k, c in m["criteria"].items() if c["verdict"] != "PASS"]
    if failed:
        raise StepFailed(
            f"criteria not met: {', '.join(failed)} (see {out['folder']}/metrics.json)"
        )


COMMANDS = (backtest,)
