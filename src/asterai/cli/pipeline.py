"""``asterai pipeline`` (the whole flow, with its live panel) and ``asterai runs``."""

from __future__ import annotations

import sys
import time
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
from asterai.cli.data import collect_options
from asterai.cli.models import TrainBars, train_overrides, training_options
from asterai.config import Settings
from asterai.paths import DataPaths


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
    if "trials" in n and "search_score" in n:
        parts.append(
            f"{n['trials']['total']} trials; best {f(n['search_score'], '.2f')} searched, "
            f"{f(n['final_window_score'], '.2f')} on the final window; DSR "
            f"{f(n['deflated_sharpe_ratio'], '.2f')}"
        )
    if "confluence_max_abs_diff" in n:
        parts.append(
            f"parity {n['confluence_max_abs_diff']:.1e} confluence, "
            f"{n['aster_native_max_abs_diff']:.1e} aster_native"
        )
    return "; ".join(parts)


@click.command()
@click.option("--start-from", default=None, metavar="STAGE", help="First stage to run.")
@click.option("--stop-at", default=None, metavar="STAGE", help="Last stage to run.")
@click.option(
    "--validate-only",
    is_flag=True,
    help="Discovery, the rate-limit probe and the gate over what is stored: no collection, "
    "no training.",
)
@click.option(
    "--optimize",
    is_flag=True,
    help="Also run the optional strategy search after the backtest (stage optimization: "
    "`asterai optimize` with [optimize] from asterai.toml).",
)
@click.option(
    "--export-onnx",
    "export",
    is_flag=True,
    help="Also export the trained models to ONNX (stage onnx_export: `asterai export-onnx`).",
)
@click.option("--force", is_flag=True, help="Run the selected stages even when they are current.")
@click.option(
    "--require-pass",
    is_flag=True,
    help="Exit 1 when the backtest's criteria fail (by default the run succeeds when every "
    "stage ran, and the verdict is reported).",
)
@training_options
@collect_options
@params_option
@common_options
def pipeline(
    settings: Settings,
    symbols: list[str] | None,
    start_from: str | None,
    stop_at: str | None,
    validate_only: bool,
    optimize: bool,
    export: bool,
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
      backtesting, then optimization (only with --optimize, or when named) and
      onnx_export (only with --export-onnx, or when named)

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

    settings = train_overrides(settings, device=device, folds=folds, batch_size=batch_size,
                                epochs=epochs)  # fmt: skip
    console = rich_console()
    display = _PipelineDisplay(console)
    try:
        outcome = run_pipeline(
            settings,
            start_from=start_from,
            stop_at=stop_at,
            validate_only=validate_only,
            optimize=optimize,
            export=export,
            force=force,
            symbols=symbols,
            progress=progress_wanted(),
            display=display,
            train_bars=(lambda: TrainBars(console)) if progress_wanted() else None,
            argv=sys.argv[1:],
        )
    except PipelineUsageError as err:
        fail(str(err), EXIT_USAGE)
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


@click.command()
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
    rich_console().print(table)


COMMANDS = (pipeline, runs)
