"""``asterai optimize``: the strategy search, graded on a final window it never saw."""

from __future__ import annotations

import contextlib
from typing import Any

import click

from asterai.cli.common import (
    StepFailed,
    common_options,
    progress_wanted,
    rich_console,
    section_overrides,
)
from asterai.config import OBJECTIVES, Settings


@click.command()
@click.option(
    "--model", type=click.Choice(["confluence", "aster-native"]), default=None,
    help="The model searched (default confluence).",
)  # fmt: skip
@click.option(
    "--trials", type=click.IntRange(1), default=None, help="Trials this run adds (default 20)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=None,
    help="Stop starting trials after this many seconds.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes working on the study (default 1).",
)
@click.option(
    "--study",
    default=None,
    help="Study name (default confluence): its folder is data/optimization/{study}/.",
)
@click.option(
    "--storage", default=None, metavar="URL",
    help="postgresql://user:pass@host/db to share the study between machines (default: "
    "Optuna's journal file in the study's folder).",
)  # fmt: skip
@click.option(
    "--objective", type=click.Choice(OBJECTIVES), default=None,
    help="What a trial maximises, out of sample after every cost (default sharpe).",
)  # fmt: skip
@click.option(
    "--min-trades",
    type=click.IntRange(0),
    default=None,
    help="A trial with fewer out-of-sample trades fails (default 10).",
)
@common_options
def optimize(
    settings: Settings,
    model: str | None,
    trials: int | None,
    timeout: float | None,
    workers: int | None,
    study: str | None,
    storage: str | None,
    objective: str | None,
    min_trades: int | None,
) -> None:
    """Search the models' and the strategy's parameters with Optuna, then grade the best
    on a final window no trial saw.

    \b
    Each trial trains the walk-forward on the history before the final window (the
    newest 20%, after a purge of the longest label horizon searched) and backtests its
    out-of-sample predictions after every cost; its score is the daily Sharpe of that
    equity by default. TPE sampler (seeded), median pruner on per-fold scores; a trial
    with fewer than --min-trades trades fails. Then the best parameters and the defaults
    are each trained and backtested once on the final window, the best Sharpe is deflated
    by the number of trials (Bailey and López de Prado), and the probability of backtest
    overfitting is computed (CSCV over the trials' returns).

    \b
    The study is persistent: Ctrl-C stops cleanly and a rerun continues it. Several
    processes (--workers) or machines (--storage postgresql://...) can share one study.
    Writes data/optimization/{study}/best_params.json (read by `asterai train --params`),
    trials.csv, summary.json and report.html. Settings: [optimize] in asterai.toml (the
    ranges under [optimize.space]).
    """
    from asterai.data.gate import GateRefused
    from asterai.models.data import TrainingDataError
    from asterai.models.errors import TrainingError
    from asterai.models.splits import SplitError
    from asterai.optimize.run import run_optimize
    from asterai.optimize.space import SpaceError
    from asterai.optimize.workspace import OptimizeError, OptimizeUsageError

    settings = section_overrides(
        settings, "optimize",
        model=None if model is None else model.replace("-", "_"),
        study=study if study is not None else (model.replace("-", "_") if model else None),
        trials=trials, timeout_s=timeout, workers=workers, storage=storage,
        objective=objective, min_trades=min_trades,
    )  # fmt: skip
    console = rich_console()
    opt = settings.optimize
    console.print(
        f"study {opt.study} ({opt.model}, objective {opt.objective}): {opt.trials} trial(s) "
        f"on {opt.workers} worker(s), storage "
        f"{'journal file' if opt.storage is None else 'postgresql'}",
        highlight=False,
    )
    progress, bars = _bars(console)
    try:
        with bars if bars is not None else contextlib.nullcontext():
            result = run_optimize(settings, progress=progress)
    except (SpaceError, OptimizeUsageError) as err:
        raise click.UsageError(str(err)) from err
    except OptimizeError as err:
        raise StepFailed(str(err)) from err
    except (GateRefused, TrainingDataError, TrainingError) as err:
        raise StepFailed(str(err)) from err
    except SplitError as err:
        raise click.UsageError(str(err)) from err
    _print(console, result)


def _bars(console: Any):
    if not progress_wanted():
        return None, None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    )  # fmt: skip
    task = bars.add_task("trials", total=None)

    def progress(done: int, total: int, best: float | None) -> None:
        label = "trials" if best is None else f"trials (best {best:.3f})"
        bars.update(task, completed=done, total=total, description=label)

    return progress, bars


def _print(console: Any, result: Any) -> None:
    from rich.table import Table

    s = result.summary

    def f(x: Any, pct: bool = False) -> str:
        if x is None:
            return "n/a"
        return f"{x:+.1%}" if pct else f"{x:.3f}"

    t = s["trials"]
    console.print(
        f"{t['total']} trials in the study: {t['complete']} complete, {t['pruned']} pruned, "
        f"{t['fail']} failed" + (" (interrupted: a rerun continues)" if s["interrupted"] else ""),
        highlight=False,
    )
    table = Table(title=f"study {s['study']}: the search against the final window")
    for col in ("", "score", "Sharpe", "return", "trades", "days"):
        table.add_column(col)
    fw = s["final_window"]
    for label, row in (
        (f"search best (trial {s['best_trial']})", s["search_best"]),
        ("final window, best parameters", fw["best_params"]),
        ("final window, default parameters", fw["default_params"]),
    ):
        table.add_row(
            label, f(row.get("score")), f(row.get("sharpe")), f(row.get("total_return"), True),
            str(row.get("trades")), f"{row.get('days', 0):g}",
        )  # fmt: skip
    console.print(table)
    console.print(s["deflated_sharpe_sentence"], highlight=False)
    pbo = s["pbo"]
    if pbo.get("pbo") is not None:
        console.print(
            f"probability of backtest overfitting (CSCV, {pbo['blocks']} blocks): {pbo['pbo']:.2f}",
            highlight=False,
        )
    console.print(f"wrote {result.folder} (best_params.json, trials.csv, report.html)")


COMMANDS = (optimize,)
