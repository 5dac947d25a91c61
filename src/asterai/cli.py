"""``asterai <command>``: a thin command line over the library.

Exit status: 0 on success, 1 when the step ran but failed (bad data, an
unreachable exchange, a failed series), 2 for wrong usage. The last lines on
stderr say why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from asterai import __version__
from asterai.config import REAL_EXCHANGE_URL, ConfigError, Settings, load_settings
from asterai.intervals import IntervalError, parse_intervals
from asterai.paths import DataPaths

log = logging.getLogger("asterai")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class StepFailed(Exception):
    """The step ran and failed; exit 1 with this message."""


def _fail(message: str, code: int) -> None:
    click.echo(f"asterai: error: {message}", err=True)
    sys.exit(code)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    if verbose < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--data-root, --base-url and -v, understood by every step."""

    @click.option(
        "--data-root",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Project folder holding data/ and models/ (default: ASTERAI_DATA_ROOT or the current folder).",
    )
    @click.option(
        "--base-url",
        default=None,
        help=f"Exchange REST base URL (default: ASTERAI_BASE_URL, asterai.toml, or {REAL_EXCHANGE_URL}). "
        "Point it at `asterai replay` to work offline on a recording.",
    )
    @click.option(
        "--exclude",
        default=None,
        metavar="A,B",
        help="Leave these symbols out of this step and the ones after it (added to "
        "exclude_symbols in asterai.toml). The gate reports them as excluded by you.",
    )
    @click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        data_root: Path | None,
        base_url: str | None,
        exclude: str | None,
        verbose: int,
        **kwargs: Any,
    ) -> Any:
        _configure_logging(verbose)
        overrides = kwargs.pop("_overrides", {})
        try:
            if exclude is not None:
                from asterai.config import parse_symbols

                try:
                    named = parse_symbols(exclude)
                except ValueError as err:
                    _fail(f"--exclude: {err}", EXIT_USAGE)
                overrides["exclude_symbols"] = load_settings(data_root).exclude_symbols + named
            settings = load_settings(data_root, base_url=base_url, **overrides)
        except (ConfigError, IntervalError) as err:
            _fail(str(err), EXIT_USAGE)
        return _run_step(func, settings, *args, **kwargs)

    return wrapper


def _run_step(func: Callable[..., Any], settings: Settings, *args: Any, **kwargs: Any) -> Any:
    from asterai.data.collector import CollectionUsageError
    from asterai.data.gate import GateUsageError
    from asterai.data.store import StoreError
    from asterai.exchange.errors import ExchangeError

    try:
        return func(settings, *args, **kwargs)
    except (CollectionUsageError, IntervalError, ConfigError, GateUsageError) as err:
        _fail(str(err), EXIT_USAGE)
    except (ExchangeError, StoreError, StepFailed) as err:
        _fail(str(err), EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted; files already written are complete, run the step again to resume", 130)


def _console():
    """A rich console; wide enough for the tables when output goes to a file or a pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def _progress_wanted() -> bool:
    return sys.stderr.isatty()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="asterai")
def main() -> None:
    """AsterAI: real Aster DEX perpetual-futures data in, confluence models and an honest backtest out.

    Every step reads and writes artifacts under a data root (--data-root, default the
    current folder) and talks to the real exchange unless --base-url points elsewhere,
    for example at `asterai replay` serving a recorded folder offline.
    """


# -- discover ---------------------------------------------------------------------


@main.command()
@common_options
def discover(settings: Settings) -> None:
    """List every Aster symbol and decide which are trainable.

    Writes data/aster_assets_discovery.json: status, contract, filters (tick, step, min
    notional), 24h volume, history length, a category (major, alt, new_listing,
    stock_perpetual, dead) and a trainable flag with the reason when false.
    """
    from asterai.data.discovery import run_discovery
    from asterai.paths import DataPaths

    result = run_discovery(settings, progress=_progress_wanted())
    counts = result.get("counts", {})
    click.echo(
        "discovered {total} symbols: {trainable} trainable; ".format(
            total=counts.get("total", 0), trainable=counts.get("trainable", 0)
        )
        + ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("total", "trainable"))
    )
    click.echo(f"wrote {DataPaths.at(settings.data_root).discovery}")


# -- ratelimit --------------------------------------------------------------------


@main.command()
@click.option(
    "--samples",
    default=20,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Light requests to time (weight 1 each; capped to 5% of the limit).",
)
@common_options
def ratelimit(settings: Settings, samples: int) -> None:
    """Read the declared rate limits and probe the API safely.

    A few weight-1 requests (never near the limit, never provoking a 429) measure
    latency and confirm the server's used-weight header. Writes
    data/aster_rate_limit_test.json with the weight-optimal page size, concurrency
    and the estimated time of the configured collection.
    """
    from asterai.data.ratelimit_probe import run_ratelimit_probe
    from asterai.paths import DataPaths

    result = run_ratelimit_probe(settings, samples=samples, progress=_progress_wanted())
    declared = result.get("declared", {}).get("request_weight") or {}
    probe = result.get("probe", {})
    latency = probe.get("latency") or {}
    rec = result.get("recommendations", {})
    page = rec.get("kline_page", {})
    estimate = rec.get("collection_estimate", {})
    click.echo(
        f"declared limit: {declared.get('limit')} weight per {declared.get('window_seconds')} s "
        f"(header {declared.get('header')})"
    )
    click.echo(
        f"probe: {probe.get('samples_sent')} requests, weight {probe.get('weight_used')}, latency p50 "
        f"{latency.get('p50_ms')} ms / p99 {latency.get('p99_ms')} ms, header confirmed: "
        f"{(probe.get('header') or {}).get('confirmed')}"
    )
    click.echo(
        f"recommended: {page.get('limit')}-bar kline pages (weight {page.get('weight')}, "
        f"{page.get('weight_per_bar')} per bar), concurrency {(rec.get('concurrency') or {}).get('value')}"
    )
    if estimate:
        click.echo(
            f"configured collection: {estimate.get('symbols')} symbols x {estimate.get('intervals')} "
            f"over {estimate.get('days')} days = {estimate.get('requests')} requests, weight "
            f"{estimate.get('weight')}, about {estimate.get('seconds_at_declared_limit')} s at the limit"
        )
    click.echo(f"wrote {DataPaths.at(settings.data_root).rate_limit_test}")
    if not result.get("ok", True):
        raise StepFailed(
            "rate-limit probe found problems: " + "; ".join(result.get("problems", []))
        )


# -- collect ----------------------------------------------------------------------


def _collect_overrides(func: Callable[..., Any]) -> Callable[..., Any]:
    @click.option(
        "--symbols",
        default=None,
        help="Comma-separated symbols (default: discovery's trainable ones).",
    )
    @click.option("--intervals", default=None, help="Comma-separated intervals (default 1h,4h,1d).")
    @click.option(
        "--days",
        type=click.IntRange(1, 3650),
        default=None,
        help="History to collect (default 180, or since listing).",
    )
    @click.option(
        "--concurrency",
        type=click.IntRange(1, 64),
        default=None,
        help="Requests in flight at once (default 4).",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        symbols: str | None,
        intervals: str | None,
        days: int | None,
        concurrency: int | None,
        **kwargs: Any,
    ) -> Any:
        try:
            parsed = parse_intervals(intervals) if intervals else None
        except IntervalError as err:
            _fail(str(err), EXIT_USAGE)
        kwargs["_overrides"] = {
            "collect": {"intervals": parsed, "days": days},
            "exchange": {"concurrency": concurrency},
        }
        names = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
        return func(*args, symbols=names, **kwargs)

    return wrapper


@main.command()
@_collect_overrides
@common_options
def collect(settings: Settings, symbols: list[str] | None) -> None:
    """Collect real klines and funding rates into data/historical/real_aster_only/.

    Incremental and resumable: a second run fetches only new bars, and a run killed at
    any moment resumes to exactly the data of an uninterrupted run. The bar still open
    at the exchange's clock is never stored. Writes collection_report.json and
    collection_summary.csv beside the data; exits 1 if any series failed.
    """
    from asterai.data.collector import collect as run_collect

    report = asyncio.run(run_collect(settings, symbols=symbols, progress=_progress_wanted()))
    _print_collection(report)
    if report.aborted:
        raise StepFailed(f"collection aborted: {report.aborted}")
    if report.failures:
        lines = [
            f"{r.symbol} {r.interval}: {r.errors[-1] if r.errors else 'failed'}"
            for r in report.failures
        ]
        raise StepFailed(
            f"{len(report.failures)} series failed (the others were stored):\n  "
            + "\n  ".join(lines)
        )


def _print_collection(report: Any) -> None:
    from rich.table import Table

    from asterai.paths import DataPaths

    table = Table(title="collection", show_lines=False)
    for col in ("symbol", "interval", "status", "rows", "new", "missing", "quality"):
        table.add_column(
            col, justify="right" if col in ("rows", "new", "missing", "quality") else "left"
        )
    for r in report.series:
        table.add_row(
            r.symbol,
            r.interval,
            r.status,
            str(r.rows),
            str(r.new_rows),
            f"{100 * r.missing_share:.2f}%",
            "" if r.quality_score is None else f"{r.quality_score:.1f}",
        )
    console = _console()
    console.print(table)
    data = report.to_json()["totals"]
    console.print(
        f"{data['bars_collected']} new bars in {data['elapsed_s']:.1f} s; {data['requests']} requests, "
        f"weight {data['weight']} (limit {data['weight_limit']} per {data['weight_window_s']:g} s), "
        f"{data['retries']} retries, {data['rate_limited_429']} rate-limited"
    )
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    console.print(f"report: {DataPaths.at(report.settings['data_root']).collection_report}")


# -- validate ---------------------------------------------------------------------


@main.command()
@click.option("--no-environment", is_flag=True, help="Skip the Python/GPU/disk readiness checks.")
@click.option(
    "--symbols",
    default=None,
    metavar="A,B",
    help="Symbols that must be trainable (on top of quality.required_symbols); one that is "
    "excluded or contaminated makes the verdict NOT READY.",
)
@common_options
def validate(settings: Settings, no_environment: bool, symbols: str | None) -> None:
    """Gate the collected data: real, complete, sane. Nothing else reaches training.

    \b
    Checks every file in data/historical/real_aster_only/ against named rules
    (provenance, schema, completeness, sanity, outliers, tradeability, tick grid, lot
    step, timeframe consistency, duplicates, funding) and gives each symbol one outcome:
      trainable     passes every rule;
      excluded      real data unfit to trade or train on (a dead market, too short or
                    gappy a history, too many outliers, a filter that no longer fits,
                    your --exclude): left out of features, training and the
                    backtest; the rest go on. Nothing to do, or collect again.
      contaminated  evidence the file is not what the exchange sent (no or forged
                    provenance, schema corruption, impossible values, a copy of another
                    market, timeframes that disagree, off-grid edits): every later stage
                    stops until you remove the file or collect it again.

    The verdict is READY when nothing is contaminated, BTCUSDT and ETHUSDT (the
    cross-asset features need them) and any --symbols are trainable, and at least
    quality.min_trainable_symbols symbols are. Writes
    data/training_readiness_validation.json (every finding, file and first rows) and,
    when nothing is contaminated, data/universe.parquet: which symbols were tradeable at
    each bar, from trailing data only. Exits 1 when NOT READY.
    """
    from asterai.config import parse_symbols
    from asterai.data.gate import render
    from asterai.data.gate import validate as run_gate

    try:
        named = parse_symbols(symbols)
    except ValueError as err:
        raise click.UsageError(f"--symbols: {err}") from err
    report = run_gate(settings, environment=not no_environment, required=named)
    render(report, _console())
    if not report.ok:
        raise StepFailed("the data is not ready for training:\n  " + "\n  ".join(report.reasons()))


# -- features ---------------------------------------------------------------------


@main.command()
@click.option(
    "--symbols", default=None, help="Also chart these symbols (default: the majors in settings)."
)
@click.option("--no-plots", is_flag=True, help="Skip the charts.")
@common_options
def features(settings: Settings, symbols: str | None, no_plots: bool) -> None:
    """Build the confluence features and labels from verified data.

    Reads only what the quality gate accepts, computes the documented features (per-asset
    TA-Lib indicators, cross-asset confluence, regime, 4h/1d indicators joined after their
    bar closes) and triple-barrier labels, and writes data/features/1h.parquet (one row per
    symbol and bar) plus charts in data/historical/aster_dex/visualizations/.
    """
    from asterai.data.gate import GateRefused
    from asterai.features.build import run_features

    names = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    try:
        summary = run_features(settings, symbols=names, plots=not no_plots)
    except GateRefused as err:
        raise StepFailed(str(err)) from err
    click.echo(
        f"{summary['features']} features and {len(summary['labels'])} labels for "
        f"{len(summary['symbols'])} symbols, {summary['rows']} rows in {summary['seconds']:.1f} s"
    )
    click.echo(f"wrote {summary['path']}")
    for chart in summary["charts"]:
        click.echo(f"chart {chart}")


# -- train ------------------------------------------------------------------------


class _TrainBars:
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

    def epoch(self, label: str, epoch: int, epochs: int, valid_loss: float) -> None:
        if self.epochs is not None:
            self.bars.update(
                self.epochs,
                completed=epoch + 1,
                description=f"LSTM epochs (valid loss {valid_loss:.4f})",
            )

    def note(self, message: str) -> None:
        self.bars.console.print(f"  {message}", highlight=False)


@main.command()
@click.argument("model", type=click.Choice(["confluence", "aster-native"]))
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="Where to train (default auto: CUDA when both XGBoost and PyTorch can use it).",
)
@click.option(
    "--folds", type=click.IntRange(1, 50), default=None, help="Walk-forward folds (default 4)."
)
@click.option(
    "--scheme", type=click.Choice(["expanding", "rolling"]), default=None, help="Training windows."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="LSTM batch; lower it on GPU out-of-memory.",
)
@click.option("--epochs", type=click.IntRange(1), default=None, help="Most LSTM epochs per fold.")
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
    """Train and evaluate a model out of sample, then fit it on all data.

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

    settings = _train_overrides(settings, device, folds, scheme, batch_size, epochs)
    console = _console()
    bars = _TrainBars(console)
    name = model.replace("-", "_")
    try:
        with bars.bars if _progress_wanted() else _nullcontext():
            result = walk_forward(name, settings, progress=bars)
    except (GateRefused, TrainingDataError, TrainingError) as err:
        raise StepFailed(str(err)) from err
    except SplitError as err:
        raise click.UsageError(str(err)) from err
    _print_training(console, result)


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def _print_training(console: Any, result: Any) -> None:
    from rich.table import Table

    def f(x: Any) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    table = Table(title=f"{result.name}: out-of-sample walk-forward")
    for col in (
        "fold",
        "test window",
        "rows",
        "AUC long",
        "logistic",
        "AUC short",
        "logistic",
        "IC long",
        "IC short",
        "time",
    ):
        table.add_column(col)
    for r in result.folds:
        m, lg = r.metrics["model"], r.metrics["logistic"]
        table.add_row(
            str(r.fold.fold + 1),
            f"{r.fold.to_json()['test_start'][:10]} .. {r.fold.to_json()['test_end'][:10]}",
            f"{r.rows['scored']:,}",
            f(m["long"]["auc"]), f(lg["long"]["auc"]), f(m["short"]["auc"]), f(lg["short"]["auc"]),
            f(m["long"]["ic"]), f(m["short"]["ic"]), f"{r.seconds:.1f} s",
        )  # fmt: skip
    console.print(table)
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
    console.print(
        f"models: {result.folder}; predictions: {result.predictions_path}; {result.seconds:.1f} s"
    )


# -- backtest -----------------------------------------------------------------------


@main.command()
@click.option(
    "--model",
    type=click.Choice(["confluence", "aster-native"]),
    default="confluence",
    show_default=True,
    help="Whose out-of-sample predictions to trade.",
)
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
    console = _console()
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
            console.print(
                f"baseline {name}: {b['total_return']:+.1%}, Sharpe "
                f"{'n/a' if b['sharpe_ratio'] is None else format(b['sharpe_ratio'], '.2f')}; "
                f"the model {verdict} it{noise}",
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


# -- replay -----------------------------------------------------------------------


@main.command()
@click.option(
    "--data",
    "folder",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Recorded folder: ../shared/aster-real, or a data root / data/historical/real_aster_only.",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (loopback)."
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free port).",
)
@click.option(
    "--window-seconds",
    default=60,
    show_default=True,
    type=click.IntRange(min=1),
    help="Length of the weight window in whole seconds; shorten it for fast tests.",
)
@click.option(
    "--weight-limit",
    default=None,
    type=click.IntRange(min=1),
    help="REQUEST_WEIGHT limit per window (default 2400).",
)
@click.option(
    "--faults",
    default=None,
    help="Fault injection, e.g. '5xx=0.1,429=0.05,slow=0.05:0.5,truncate=0.05,drop=0.05'.",
)
@click.option("--seed", default=None, type=int, help="Seed for fault injection.")
@click.option(
    "--now", "now_ms", default=None, type=int, help="Freeze the server clock at this epoch-ms time."
)
@click.option("-v", "--verbose", count=True, help="Log every request (-v).")
def replay(
    folder: Path,
    host: str,
    port: int,
    window_seconds: float,
    weight_limit: int | None,
    faults: str | None,
    seed: int | None,
    now_ms: int | None,
    verbose: int,
) -> None:
    """Serve a recorded folder as an Aster-compatible exchange on loopback.

    Same paths, parameters, JSON shapes, weights, used-weight header, 429 and 418 rules as
    the real API, with the clock frozen at the moment of the recording. Point any step at
    it with --base-url http://HOST:PORT.
    """
    _configure_logging(verbose)
    from asterai.exchange.replay import FaultSpec, serve
    from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT

    try:
        spec = FaultSpec.parse(faults) if faults else None
    except ValueError as err:
        _fail(f"--faults: {err}", EXIT_USAGE)
    try:
        serve(
            folder,
            host=host,
            port=port,
            window_seconds=window_seconds,
            weight_limit=weight_limit or DEFAULT_WEIGHT_LIMIT,
            faults=spec,
            seed=seed,
            now_ms=now_ms,
        )
    except (OSError, ValueError) as err:
        _fail(str(err), EXIT_FAILED)


# -- pipeline ---------------------------------------------------------------------


class _PipelineDisplay:
    """The run as it goes: the plan, each stage's start (why it runs, elapsed and the
    estimate left from the last run's times), its end, then a summary table.

    On a terminal a live panel stays below the log: every stage with its status and
    time, the running stage's own progress bars nested under it, the time elapsed and
    the time left by the last run's figures. Elsewhere (a pipe, a file, a test) the log
    lines alone."""

    MARKS = {"pending": "[dim]·[/]", "running": "[cyan]>[/]", "ran": "[green]ok[/]",
             "skipped": "[dim]current[/]", "failed": "[red]FAILED[/]",
             "interrupted": "[red]interrupted[/]"}  # fmt: skip

    def __init__(self, console: Any, live: bool | None = None) -> None:
        self.console = console
        self.started_at = time.perf_counter()
        self.names: list[str] = []
        self.status: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self.estimates: dict[str, float | None] = {}
        self.running: tuple[str, float] | None = None
        self.use_live = console.is_terminal if live is None else live
        self.live: Any = None

    def _panel(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False, padding=(0, 1))
        for name in self.names:
            state = self.status.get(name, "pending")
            took = self.seconds.get(name)
            if state == "running" and self.running:
                took = time.perf_counter() - self.running[1]
            table.add_row(self.MARKS[state], name, "" if took is None else f"{took:.1f} s")
        elapsed = time.perf_counter() - self.started_at
        left: list[float | None] = []
        for n in self.names:
            state, estimate = self.status.get(n, "pending"), self.estimates.get(n)
            if state == "pending":
                left.append(estimate)
            elif state == "running" and self.running:
                spent = time.perf_counter() - self.running[1]
                left.append(None if estimate is None else max(estimate - spent, 0.0))
        eta = (
            f", about {self._clock(sum(x for x in left if x))} left"
            if left and all(x is not None for x in left)
            else ""
        )
        table.caption = f"elapsed {self._clock(elapsed)}{eta}"
        return table

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _clock(self, seconds: float | None) -> str:
        if seconds is None:
            return "?"
        m, s = divmod(int(seconds + 0.5), 60)
        return f"{m}:{s:02d}"

    def plan(self, run_id: str, names: list[str], estimates: dict[str, float | None]) -> None:
        self.names = names
        self.estimates = estimates
        known = [v for v in estimates.values() if v]
        total = (
            f", about {self._clock(sum(known))} by the last runs"
            if len(known) == len(names)
            else ""
        )
        self.console.print(
            f"[bold]pipeline run {run_id}[/]: {len(names)} stage(s){total}", highlight=False
        )
        self.console.print("  " + " -> ".join(names), highlight=False)
        if self.use_live:
            from rich.live import Live

            self.live = Live(
                get_renderable=self._panel, console=self.console, refresh_per_second=4,
                transient=True,
            )  # fmt: skip
            self.live.start()

    def started(self, name: str, index: int, reason: str, eta_s: float | None) -> None:
        self.status[name] = "running"
        self.running = (name, time.perf_counter())
        elapsed = time.perf_counter() - self.started_at
        left = f", about {self._clock(eta_s)} left" if eta_s is not None else ""
        self.console.print(
            f"[bold cyan]> \\[{index + 1}/{len(self.names)}] {name}[/] ({reason}; elapsed "
            f"{self._clock(elapsed)}{left})",
            highlight=False,
        )

    def finished(self, record: dict[str, Any]) -> None:
        from rich.markup import escape

        name, status = record["name"], record["status"]
        self.status[name] = status
        self.seconds[name] = record.get("seconds", 0.0)
        if status == "skipped":
            self.console.print(
                f"[dim]\\[{name}] skipped, current: {escape(record.get('summary', ''))}[/]",
                highlight=False,
            )
            return
        mark = "[green]ok[/]" if status == "ran" else "[red]FAILED[/]"
        self.console.print(
            f"\\[{name}] {mark} in {record.get('seconds', 0):.1f} s: "
            f"{escape(record.get('summary', ''))}",
            highlight=False,
        )
        for line in record.get("details") or []:
            self.console.print(line, highlight=False, markup=False)

    def summary(self, outcome: Any) -> None:
        from rich.table import Table

        self.close()
        table = Table(title=f"pipeline run {outcome.run_id}")
        for col in ("stage", "status", "time", "key numbers"):
            table.add_column(col)
        colours = {"ran": "green", "skipped": "dim", "failed": "red"}
        for s in outcome.stages:
            table.add_row(
                s["name"], f"[{colours.get(s['status'], 'white')}]{s['status']}[/]",
                f"{s.get('seconds', 0):.1f} s", _key_numbers(s.get("numbers") or {}),
            )  # fmt: skip
        done = {s["name"] for s in outcome.stages}
        for name in self.names:
            if name not in done:
                table.add_row(name, "not run", "", "")
        self.console.print(table)
        self.console.print(f"manifest: {outcome.manifest}", highlight=False)


def _key_numbers(n: dict[str, Any]) -> str:
    def f(x: Any, spec: str = ".3f") -> str:
        return "n/a" if x is None else format(x, spec)

    parts = []
    if "symbols" in n and "trainable" in n:
        parts.append(f"{n['symbols']} symbols, {n['trainable']} trainable")
    elif "trainable" in n:
        parts.append(
            f"{n['trainable']} trainable, {n['excluded']} excluded, {n['contaminated']} contaminated"
        )
    if "series" in n:
        parts.append(f"{n['series_ok']}/{n['series']} series, {n['new_bars']} new bars")
    if "features" in n:
        parts.append(f"{n['features']} features, {n['symbols']} symbols, {n['rows']} rows")
    if "auc_long" in n:
        parts.append(
            f"AUC long {f(n['auc_long'])} (logistic {f(n['logistic_auc_long'])}), short "
            f"{f(n['auc_short'])} (logistic {f(n['logistic_auc_short'])})"
        )
    if "criteria" in n:
        ci = n.get("sharpe_interval_95")
        interval = f" [{ci[0]:.2f} .. {ci[1]:.2f}]" if ci else ""
        verdicts = ", ".join(f"{k} {v}" for k, v in n["criteria"].items())
        parts.append(
            f"{n['trades']} trades, {f(n['total_return'], '+.1%')}, Sharpe "
            f"{f(n['sharpe_ratio'], '.2f')}{interval}; {verdicts}"
        )
    return "; ".join(parts)


def _train_overrides(
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


def _training_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.option(
                "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                help="Where to train (default auto: CUDA when both XGBoost and PyTorch can use it).",
            ),
            click.option(
                "--folds", type=click.IntRange(1, 50), default=None,
                help="Walk-forward folds (default 4).",
            ),
            click.option(
                "--batch-size", type=click.IntRange(1), default=None,
                help="LSTM batch; lower it on GPU out-of-memory.",
            ),
            click.option(
                "--epochs", type=click.IntRange(1), default=None, help="Most LSTM epochs per fold."
            ),
        )
    ):  # fmt: skip
        func = option(func)
    return func


@main.command()
@click.option("--start-from", default=None, metavar="STAGE", help="First stage to run.")
@click.option("--stop-at", default=None, metavar="STAGE", help="Last stage to run.")
@click.option(
    "--validate-only",
    is_flag=True,
    help="Discovery, the rate-limit probe and the gate over what is stored: no collection, "
    "no training.",
)
@click.option("--force", is_flag=True, help="Run the selected stages even when they are current.")
@click.option(
    "--require-pass",
    is_flag=True,
    help="Exit 1 when the backtest's criteria fail (by default the run succeeds when every "
    "stage ran, and the verdict is reported).",
)
@_training_options
@_collect_overrides
@common_options
def pipeline(
    settings: Settings,
    symbols: list[str] | None,
    start_from: str | None,
    stop_at: str | None,
    validate_only: bool,
    force: bool,
    require_pass: bool,
    device: str | None,
    folds: int | None,
    batch_size: int | None,
    epochs: int | None,
) -> None:
    """Run the whole flow in one command, resuming where it stands.

    \b
    Stages, in order:
      asset_discovery, rate_limit_testing, data_collection, data_validation,
      feature_engineering, model_training_confluence, model_training_aster_native,
      backtesting

    A stage is skipped when its outputs exist and its inputs and settings are unchanged
    since it last ran (hashes in data/pipeline_runs/state.json); --force runs it anyway.
    A failing stage (contaminated data, NOT READY, training aborted) stops the run with
    exit 1 and the reason; run again after the fix and it resumes there. Every run
    writes data/pipeline_runs/{run_id}/manifest.json (settings, versions, device, each
    stage's inputs and outputs with hashes, times and key numbers); `asterai runs`
    lists them. The options of the steps (--symbols, --days, --exclude, --device,
    --folds, ...) pass through to them.
    """
    from asterai.pipeline.runner import ExchangeUnreachable, PipelineUsageError, run_pipeline

    settings = _train_overrides(settings, device=device, folds=folds, batch_size=batch_size,
                                epochs=epochs)  # fmt: skip
    console = _console()
    display = _PipelineDisplay(console)
    try:
        outcome = run_pipeline(
            settings,
            start_from=start_from,
            stop_at=stop_at,
            validate_only=validate_only,
            force=force,
            symbols=symbols,
            progress=_progress_wanted(),
            display=display,
            train_bars=(lambda: _TrainBars(console)) if _progress_wanted() else None,
            argv=sys.argv[1:],
        )
    except PipelineUsageError as err:
        _fail(str(err), EXIT_USAGE)
    except ExchangeUnreachable as err:
        raise StepFailed(str(err)) from err
    finally:
        display.close()
    display.summary(outcome)
    if not outcome.ok:
        raise StepFailed(outcome.failure or "a pipeline stage failed")
    backtest = next((s for s in outcome.stages if s["name"] == "backtesting"), None)
    if backtest is not None:
        numbers = backtest.get("numbers") or {}
        if numbers.get("criteria_passed") is False:
            failed = [k for k, v in (numbers.get("criteria") or {}).items() if v != "PASS"]
            message = (
                f"the strategy FAILS the guide's criteria ({', '.join(failed)}): "
                f"read {DataPaths.at(settings.data_root).backtest_results}/report.html"
            )
            if require_pass:
                raise StepFailed(message)
            console.print(f"[bold red]verdict:[/] {message}", highlight=False)
        elif numbers.get("criteria_passed"):
            console.print("[bold green]verdict:[/] every criterion passes", highlight=False)


@main.command()
@common_options
def runs(settings: Settings) -> None:
    """List past pipeline runs (data/pipeline_runs/) with their headline numbers."""
    from rich.table import Table

    from asterai.pipeline.runner import headline, list_runs

    found = list_runs(DataPaths.at(settings.data_root))
    if not found:
        click.echo(
            f"no pipeline runs under {DataPaths.at(settings.data_root).data_dir}/pipeline_runs"
        )
        return

    def f(x: Any, spec: str = ".3f") -> str:
        return "n/a" if x is None else format(x, spec)

    table = Table(title="pipeline runs (AUC: mean per fold, long / short)")
    for col in ("run", "started (UTC)", "status", "ran / skipped", "trainable / excluded",
                "AUC confluence", "AUC aster-native", "Sharpe [95%]", "return",
                "criteria"):  # fmt: skip
        table.add_column(col, no_wrap=col in ("run", "started (UTC)"))
    short = {"sharpe_ratio": "Sharpe", "win_rate": "win rate", "max_drawdown": "drawdown",
             "significant": "significance"}  # fmt: skip
    for m in found:
        h = headline(m)
        stages = m.get("stages") or []
        ran = sum(s.get("status") == "ran" for s in stages)
        skipped = sum(s.get("status") == "skipped" for s in stages)
        ci = h["sharpe_interval_95"]
        crit = h["criteria"] or {}
        table.add_row(
            m.get("run_id", "?"), (m.get("started_at") or "")[:16].replace("T", " "),
            str(m.get("status")),
            f"{ran} / {skipped}", f"{h['trainable'] if h['trainable'] is not None else 'n/a'} / "
            f"{h['excluded'] if h['excluded'] is not None else 'n/a'}",
            f"{f(h['confluence_auc'][0])} / {f(h['confluence_auc'][1])}",
            f"{f(h['aster_native_auc'][0])} / {f(h['aster_native_auc'][1])}",
            f"{f(h['sharpe'], '.2f')}" + (f" [{ci[0]:.2f} .. {ci[1]:.2f}]" if ci else ""),
            f(h["total_return"], "+.1%"),
            "n/a" if not crit else ("PASS" if all(v == "PASS" for v in crit.values())
                                    else "FAIL: " + ", ".join(short.get(k, k) for k, v in crit.items() if v != "PASS")),
        )  # fmt: skip
    _console().print(table)


if __name__ == "__main__":  # pragma: no cover
    main()


def run_script(command: str, prog_name: str, fixed: tuple[str, ...] = ()) -> None:
    """The seed guide's script names (``scripts/*.py``, ``local_training/*.py``): one
    subcommand under the script's own name, with every option of the command."""
    cmd = main.commands[command]
    cmd.main(
        [*fixed, *sys.argv[1:]],
        prog_name=prog_name,
        help_option_names=["-h", "--help"],
        max_content_width=100,
    )
