"""``asterai train``, plus the training options and progress bars the pipeline
shares with it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import click

from asterai.cli.common import (
    StepFailed,
    common_options,
    params_option,
    progress_wanted,
    rich_console,
)
from asterai.config import Settings


class TrainBars:
    """Progress bars for `asterai train`: one over the folds, one over the epochs."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self.folds = self.epochs = None

    def start(self, name: str, folds: int, epochs: int | None, summary: str) -> None:
        self.bars.console.print(summary)
        self.folds = self.bars.add_task("folds", total=folds)
        if epochs:
            self.epochs = self.bars.add_task("LSTM epochs", total=epochs)

    def fold(self, label: str) -> None:
        if self.folds is not None:
            done = self.bars.tasks[self.folds].completed
            started = getattr(self, "_started", False)
            self.bars.update(self.folds, completed=done + (1 if started else 0), description=label)
            self._started = True
        if self.epochs is not None:
            self.bars.reset(self.epochs)

    def epoch(self, label: str, epoch: int, epochs: int, metric: str, score: float) -> None:
        if self.epochs is not None:
            self.bars.update(
                self.epochs,
                completed=epoch + 1,
                description=f"LSTM epochs (valid {metric} {score:.4f})",
            )

    def note(self, message: str) -> None:
        self.bars.console.print(f"  {message}", highlight=False)


# the training options, declared once: `asterai train` takes them all, the pipeline
# passes all but --scheme through (training_options below)
_DEVICE = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="Where to train (default auto: CUDA when both XGBoost and PyTorch can use it).",
)
_FOLDS = click.option(
    "--folds", type=click.IntRange(1, 50), default=None, help="Walk-forward folds (default 4)."
)
_SCHEME = click.option(
    "--scheme", type=click.Choice(["expanding", "rolling"]), default=None, help="Training windows."
)
_BATCH_SIZE = click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="LSTM batch; lower it on GPU out-of-memory.",
)
_EPOCHS = click.option(
    "--epochs", type=click.IntRange(1), default=None, help="Most LSTM epochs per fold."
)


@click.command()
@click.argument("model", type=click.Choice(["confluence", "aster-native"]))
@_DEVICE
@_FOLDS
@_SCHEME
@_BATCH_SIZE
@_EPOCHS
@params_option
@common_options
def train(
    settings: Settings,
    model: str,
    device: str | None,
    folds: int | None,
    scheme: str | None,
    batch_size: int | None,
    epochs: int | None,
) -> None:
    """Train and evaluate a model out of sample, then train the shipped model like one
    more fold whose test window is the future.

    \b
    confluence    XGBoost + LSTM ensemble (0.6 / 0.4) on symbols with enough history
    aster-native  one conservative XGBoost over every trainable symbol, new listings
                  included, with listing age, category and funding

    Reads data/features/1h.parquet and data/universe.parquet after running the quality
    gate (a contaminated file or a NOT READY verdict stops it). Walk-forward folds over
    time, purged by the label horizon plus an embargo; every member calibrated on
    validation rows only; two baselines (class prior, logistic regression) on the same
    rows. Writes models/confluence/ or models/aster_native/ (replaced as a set: a
    failure leaves the previous models in place) and data/predictions/{model}.parquet
    (out-of-sample test rows only). Settings: [train] and [aster_native] in asterai.toml.
    """
    from asterai.data.gate import GateRefused
    from asterai.models.data import TrainingDataError
    from asterai.models.errors import TrainingError
    from asterai.models.splits import SplitError
    from asterai.models.train import walk_forward

    settings = train_overrides(settings, device, folds, scheme, batch_size, epochs)
    console = rich_console()
    bars = TrainBars(console)
    name = model.replace("-", "_")
    try:
        with bars.bars if progress_wanted() else contextlib.nullcontext():
            result = walk_forward(name, settings, progress=bars)
    except (GateRefused, TrainingDataError, TrainingError) as err:
        raise StepFailed(str(err)) from err
    except SplitError as err:
        raise click.UsageError(str(err)) from err
    _print_training(console, result)


def _print_training(console: Any, result: Any) -> None:
    from rich.table import Table

    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    summary = result.config["training_summary"]
    table = Table(
        title=f"{result.name}: out-of-sample walk-forward (target {summary['target']}, "
        f"stopped on {summary['stopping_metric']})"
    )
    for col in (
        "fold", "test window", "rows", "trees", "LSTM epochs", "AUC long (logistic)",
        "AUC short (logistic)", "IC long (t)", "IC short (t)", "time",
    ):  # fmt: skip
        table.add_column(col, no_wrap=col != "LSTM epochs")
    baselines = Table(title="the same rows: the logistic baseline's IC, the class prior's log loss")
    for col in ("fold", "IC long / short", "logistic IC", "log loss long / short", "prior"):
        baselines.add_column(col, no_wrap=True)

    def ic(m: dict[str, Any]) -> str:
        t = "n/a" if m["ic_t"] is None else f"{m['ic_t']:.1f}"
        return f"{f(m['ic'])} ({t})"

    def pair(m: dict[str, Any], key: str) -> str:
        return f"{f(m['long'][key])} / {f(m['short'][key])}"

    lg_pooled, pr_pooled = summary["pooled"]["logistic"], summary["pooled"]["prior"]
    for r in result.folds:
        m, lg = r.metrics["model"], r.metrics["logistic"]
        epochs = r.members["lstm_epochs"]
        lstm = (
            "-"
            if epochs is None
            else f"{epochs} ({'in' if r.members['lstm_in_ensemble'] else 'out'})"
        )
        table.add_row(
            str(r.fold.fold + 1),
            f"{r.fold.to_json()['test_start'][:10]}..{r.fold.to_json()['test_end'][5:10]}",
            f"{r.rows['scored']:,}", str(r.members["xgboost_trees"]), lstm,
            f"{f(m['long']['auc'])} ({f(lg['long']['auc'])})",
            f"{f(m['short']['auc'])} ({f(lg['short']['auc'])})",
            ic(m["long"]), ic(m["short"]), f"{r.seconds:.1f} s",
        )  # fmt: skip
        baselines.add_row(
            str(r.fold.fold + 1), pair(m, "ic"), pair(lg, "ic"), pair(m, "log_loss"),
            pair(r.metrics["prior"], "log_loss"),
        )  # fmt: skip
    pooled = summary["pooled"]["model"]
    table.add_row(
        "all", "pooled", f"{sum(r.rows['scored'] for r in result.folds):,}",
        f"median {summary['median_trees']:g}",
        "-" if summary["median_lstm_epochs"] is None
        else f"median {summary['median_lstm_epochs']:g}, in {summary['lstm_in_ensemble_folds']}",
        f"{f(pooled['long']['auc'])} ({f(lg_pooled['long']['auc'])})",
        f"{f(pooled['short']['auc'])} ({f(lg_pooled['short']['auc'])})",
        ic(pooled["long"]), ic(pooled["short"]), "",
    )  # fmt: skip
    baselines.add_row(
        "all", pair(pooled, "ic"), pair(lg_pooled, "ic"), pair(pooled, "log_loss"),
        pair(pr_pooled, "log_loss"),
    )  # fmt: skip
    console.print(table)
    console.print(baselines)
    console.print(_money_table(result))
    console.print(_decile_table(summary))
    for line in result.verdict:
        console.print(line, highlight=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    leak = result.config["leakage_checks"]
    console.print(
        f"leakage checks: purge {leak['min_gap_bars']} bars (needs {leak['required_gap_bars']}), "
        f"predictions only in test windows: {leak['predictions_only_in_test_windows']}, "
        f"shuffled-label control AUC {f(leak['shuffled_label_control_auc'].get('long'))} / "
        f"{f(leak['shuffled_label_control_auc'].get('short'))}",
        highlight=False,
    )
    final = result.config["final_model"]
    v = final["validation"]["model"]
    epoch = (
        ""
        if final["lstm_best_epoch"] is None
        else f", LSTM {final['lstm_epochs']} epochs "
        + ("(in the ensemble)" if final["lstm_in_ensemble"] else "(left out: XGBoost alone)")
    )
    console.print(
        f"final model (shipped): {final['xgboost_trees']} trees{epoch}; on its own "
        f"calibration tail ({final['rows']['calibration']:,} rows from "
        f"{final['windows']['calib_start'][:16]}): AUC long {f(v['long']['auc'])}, short "
        f"{f(v['short']['auc'])}",
        highlight=False,
    )
    console.print(
        f"models: {result.folder}; predictions: {result.predictions_path}; {result.seconds:.1f} s"
    )


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x:+.2%}"


def _money_table(result: Any) -> Any:
    """Per fold and pooled: the rows the entry rule trades, per side, their mean net
    return after the round-trip cost (t), the Pearson IC and the decile spread."""
    from rich.table import Table

    summary = result.config["training_summary"]
    table = Table(
        title=f"what the trades are paid (sides {summary['sides']}, after a round trip of "
        f"{summary['round_trip_cost']:.3%}; mean net return, t clustered by bar and overlap)"
    )
    for col in (
        "fold", "long rows", "long mean (t)", "short rows", "short mean (t)", "all mean (t)",
        "Pearson IC long / short", "decile spread long / short",
    ):  # fmt: skip
        table.add_column(col, no_wrap=True)

    def t(x: Any) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    def add(label: str, m: dict[str, Any]) -> None:
        tr = m["traded"]
        table.add_row(
            label, f"{tr['long']['rows']:,}", f"{_pct(tr['long']['mean'])} ({t(tr['long']['t'])})",
            f"{tr['short']['rows']:,}", f"{_pct(tr['short']['mean'])} ({t(tr['short']['t'])})",
            f"{_pct(tr['all']['mean'])} ({t(tr['all']['t'])})",
            f"{_f3(m['long']['pearson_ic'])} / {_f3(m['short']['pearson_ic'])}",
            f"{_pct(m['long']['decile_spread'])} / {_pct(m['short']['decile_spread'])}",
        )  # fmt: skip

    for f in summary["folds"]:
        add(str(f["fold"] + 1), f["model"])
    add("all", summary["pooled"]["model"])
    return table


def _f3(x: Any) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _decile_table(summary: dict[str, Any]) -> Any:
    """The pooled out-of-sample rows by score decile: mean and median net return."""
    from rich.table import Table

    table = Table(title="by score decile (pooled out of sample): mean / median net return")
    for col in ("decile", "long rows", "long mean / median", "short rows", "short mean / median"):
        table.add_column(col, no_wrap=True)
    long, short = summary["deciles"]["long"], summary["deciles"]["short"]
    for a, b in zip(long, short, strict=False):
        table.add_row(
            str(a["decile"]), f"{a['rows']:,}", f"{_pct(a['mean'])} / {_pct(a['median'])}",
            f"{b['rows']:,}", f"{_pct(b['mean'])} / {_pct(b['median'])}",
        )  # fmt: skip
    return table


def train_overrides(
    settings: Settings,
    device: str | None = None,
    folds: int | None = None,
    scheme: str | None = None,
    batch_size: int | None = None,
    epochs: int | None = None,
) -> Settings:
    """Settings with the training options given on the command line applied."""
    overrides: dict[str, Any] = {
        k: v for k, v in (("device", device), ("folds", folds), ("scheme", scheme)) if v is not None
    }
    lstm = {k: v for k, v in (("batch_size", batch_size), ("epochs", epochs)) if v is not None}
    if not (overrides or lstm):
        return settings
    from asterai.config import TrainSettings

    # only what was set (in asterai.toml or here) counts as set: an option must not
    # turn the default fold count into an explicit one
    raw = settings.train.model_dump(exclude_unset=True)
    raw.update(overrides)
    raw["lstm"] = {**settings.train.lstm.model_dump(exclude_unset=True), **lstm}
    try:
        return settings.model_copy(update={"train": TrainSettings.model_validate(raw)})
    except ValueError as err:
        raise click.UsageError(str(err)) from err


def training_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--device, --folds, --batch-size and --epochs, as `asterai train` has them."""
    return _DEVICE(_FOLDS(_BATCH_SIZE(_EPOCHS(func))))


COMMANDS = (train,)
