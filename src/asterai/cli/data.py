"""The data steps: ``asterai discover``, ``ratelimit``, ``collect``, ``validate``
and ``features``, plus the collection options the pipeline passes through."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import click

from asterai.cli.common import (
    EXIT_USAGE,
    StepFailed,
    common_options,
    fail,
    params_option,
    progress_wanted,
    rich_console,
)
from asterai.config import Settings
from asterai.intervals import IntervalError, parse_intervals

# -- discover ---------------------------------------------------------------------


@click.command()
@common_options
def discover(settings: Settings) -> None:
    """List every Aster symbol and decide which are trainable.

    Writes data/aster_assets_discovery.json: status, contract, filters (tick, step, min
    notional), 24h volume, history length, a category (major, alt, new_listing,
    stock_perpetual, dead) and a trainable flag with the reason when false.
    """
    from asterai.data.discovery import run_discovery
    from asterai.paths import DataPaths

    result = run_discovery(settings, progress=progress_wanted())
    counts = result.get("counts", {})
    click.echo(
        "discovered {total} symbols: {trainable} trainable; ".format(
            total=counts.get("total", 0), trainable=counts.get("trainable", 0)
        )
        + ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("total", "trainable"))
    )
    click.echo(f"wrote {DataPaths.at(settings.data_root).discovery}")


# -- ratelimit --------------------------------------------------------------------


@click.command()
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

    result = run_ratelimit_probe(settings, samples=samples, progress=progress_wanted())
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
    for note in result.get("notes") or []:
        click.echo(f"note: {note}")
    met = result.get("met_limit")
    if met:
        client = rec.get("client") or {}
        click.echo(
            f"met the limit at {met['at']} ({met['requests_per_minute']} requests a minute); "
            f"waited {met['waited_s']:g} s; the collection will use weight share "
            f"{client.get('weight_safety')} and {client.get('concurrency')} request(s) at once"
        )
    click.echo(f"wrote {DataPaths.at(settings.data_root).rate_limit_test}")
    if not result.get("ok", True):
        raise StepFailed(
            "rate-limit probe found problems: " + "; ".join(result.get("problems", []))
        )


# -- collect ----------------------------------------------------------------------


def collect_options(func: Callable[..., Any]) -> Callable[..., Any]:
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
            fail(str(err), EXIT_USAGE)
        kwargs["_overrides"] = {
            "collect": {"intervals": parsed, "days": days},
            "exchange": {"concurrency": concurrency},
        }
        names = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
        return func(*args, symbols=names, **kwargs)

    return wrapper


@click.command()
@collect_options
@common_options
def collect(settings: Settings, symbols: list[str] | None) -> None:
    """Collect real klines and funding rates into data/historical/real_aster_only/.

    Incremental and resumable: a second run fetches only new bars, and a run killed at
    any moment resumes to exactly the data of an uninterrupted run. The bar still open
    at the exchange's clock is never stored. Writes collection_report.json and
    collection_summary.csv beside the data; exits 1 if any series failed.
    """
    from asterai.data.collector import collect as run_collect

    report = asyncio.run(run_collect(settings, symbols=symbols, progress=progress_wanted()))
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
    console = rich_console()
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


@click.command()
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
    render(report, rich_console())
    if not report.ok:
        raise StepFailed("the data is not ready for training:\n  " + "\n  ".join(report.reasons()))


# -- features ---------------------------------------------------------------------


@click.command()
@click.option(
    "--symbols", default=None, help="Also chart these symbols (default: the majors in settings)."
)
@click.option("--no-plots", is_flag=True, help="Skip the charts.")
@params_option
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


COMMANDS = (discover, ratelimit, collect, validate, features)
