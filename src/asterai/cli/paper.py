"""``asterai paper``: paper trading on the live market with the backtest's own engine."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

from asterai.cli.common import (
    EXIT_USAGE,
    StepFailed,
    ask_control,
    bearer_token,
    common_options,
    fail,
    params_option,
    rich_console,
    section_overrides,
    stop_on_signals,
    watch_options,
    ws_url_option,
)
from asterai.config import Settings


@click.command("paper")
@click.option(
    "--model", type=click.Choice(["confluence", "aster-native"]), default=None,
    help="Which exported model trades (models/{model}/onnx; default confluence).",
)  # fmt: skip
@click.option("--symbols", default=None, metavar="A,B",
              help="Trade only these symbols (default: every symbol of the export).")  # fmt: skip
@click.option(
    "--daily-loss-limit", type=click.FloatRange(0, 1, max_open=True), default=None,
    help="Pause new entries for the rest of a UTC day once a close is this share below "
    "the previous day's last equity (default 0.05; 0: off).",
)  # fmt: skip
@click.option(
    "--max-delay", "max_delay_s", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Seconds after a bar's close within which its signals are acted on (default 120).",
)  # fmt: skip
@click.option("--status", "show_status", is_flag=True,
              help="Print the account's status from the journal and exit.")  # fmt: skip
@click.option(
    "--kill", is_flag=True,
    help="The kill switch: write data/paper/KILL and exit. A running `asterai paper` "
    "exits every position at the next bar's open and stops for good; with none running, "
    "the next start does.",
)  # fmt: skip
@click.option(
    "--pause", is_flag=True,
    help="Pause new entries until the next UTC day: write data/paper/PAUSE and exit. A "
    "running `asterai paper` takes it at its next close (exits go on).",
)  # fmt: skip
@click.option(
    "--report", is_flag=True,
    help="Write data/paper/report/: the paper period's metrics, trades and equity, and the "
    "reconciliation with the backtest engine over the same bars; then exit.",
)  # fmt: skip
@click.option(
    "--clock-rate", type=click.FloatRange(min=0), default=1.0, show_default=True,
    help="Against `asterai replay --play-from ... --speed X`: the same X. 0: a replay "
    "whose clock is stepped by hand (poll every 0.2 s).",
)  # fmt: skip
@watch_options
@ws_url_option
@params_option
@common_options
def paper(
    settings: Settings,
    model: str | None,
    symbols: str | None,
    daily_loss_limit: float | None,
    max_delay_s: float | None,
    show_status: bool,
    kill: bool,
    pause: bool,
    report: bool,
    clock_rate: float,
    watch_port: int | None,
    watch_host: str,
) -> None:
    """Paper-trade the exported model's signals on a simulated account.

    \b
    The account (strategy.capital, risk, positions limit, fees, slippage, funding,
    stops, targets, time limit, liquidation, the drawdown breaker) is the backtest's:
    every closed bar goes through the backtest's own per-bar step. It follows the
    market as `asterai serve` does: each closed bar as the exchange's websocket kline
    streams push it (the real exchange's by default; --ws-url for a replay's), REST
    (through the rate limiter) for what they lack, or REST polling after each close
    without streams. It journals every bar, signal, order, fill, rejection, position,
    funding payment and equity point in data/paper/journal.sqlite, one transaction
    per bar. Run it again after a stop or a crash: the account is rebuilt from the
    journal and the bars missed meanwhile are fetched and traded in order, as late
    bars (their exits and stops apply, their signals open nothing).

    \b
    The strategy is the model's: the threshold, the sides, the barriers and the
    horizon come from the export (as `asterai serve` decides by them), each one that
    differs from the settings named at the start.

    \b
    Risk controls: the drawdown breaker; a daily loss limit; stale data (a bar
    overdue) opens nothing; the kill switch, a file data/paper/KILL (`asterai paper
    --kill` writes it), exits every position at the next bar's open, cancels the
    entries decided for it, and stops once that bar is journaled (the journal is
    then final). SIGTERM or Ctrl-C is a stop, not the kill switch: the bar being
    traded is finished, the positions stay open in the journal, and the next start
    continues the account. Errors are retried (exchange errors every 15 s, others
    with a backoff from 1 s to 5 min), counted and journaled; they never end it.

    \b
    Watching: --watch-port serves the account's dashboard and Prometheus metrics from
    this process (`asterai dashboard` shows journals from any process); alerts go to
    the apprise URLs in ASTERAI_ALERT_URLS (fills, stops, targets, the kill switch,
    the daily pause, stale data, an error streak, a start after a crash).

    No API key is needed or read: no order reaches the exchange.
    """
    from asterai.paths import DataPaths
    from asterai.watch.app import TOKEN_ENV

    token = bearer_token(TOKEN_ENV, flag="") if watch_port else None
    settings = section_overrides(
        settings, "paper", model=model.replace("-", "_") if model else None, symbols=symbols,
        daily_loss_limit=daily_loss_limit, max_delay_s=max_delay_s,
    )  # fmt: skip
    paths = DataPaths.at(settings.data_root)
    console = rich_console()
    if kill or pause:
        ask_control(paths.paper_journal, paths.paper_kill, paths.paper_pause, "paper",
                    "kill" if kill else "pause")
        return
    if show_status:
        _print_status(paths, console)
        return
    if report:
        from asterai.paper.reconcile import ReconcileError, write_report

        if not paths.paper_journal.exists():
            raise StepFailed(f"{paths.paper_journal} does not exist: no paper account here")
        try:
            out = write_report(settings)
        except ReconcileError as err:
            raise StepFailed(str(err)) from err
        for line in out.lines():
            console.print(line, highlight=False)
        return
    from asterai.paper.journal import JournalError
    from asterai.paper.trader import PaperSettingsError, PaperStopped, PaperTrader, prepare

    try:
        plan = prepare(settings)
        trader = PaperTrader(plan, clock_rate=clock_rate, retry_s=0.2 if clock_rate == 0 else 15.0)
    except PaperSettingsError as err:
        fail(str(err), EXIT_USAGE)
    except PaperStopped as err:
        console.print(str(err), highlight=False)
        _print_status(paths, console)
        return
    except JournalError as err:
        raise StepFailed(str(err)) from err
    click.echo(
        f"asterai paper: {plan.settings.paper.model} on {len(plan.symbols)} symbols, "
        f"journal {paths.paper_journal}",
        err=True,
    )
    try:
        asyncio.run(_run(trader, paths, (watch_host, watch_port, token)))
    except JournalError as err:
        raise StepFailed(str(err)) from err
    finally:
        trader.close()
    if trader.state.stopped:
        click.echo("the kill switch flattened the account; trading has stopped", err=True)
    else:
        click.echo(
            "stopped; the account is kept in the journal: `asterai paper` continues it",
            err=True,
        )


async def _run(trader, paths, watch=(None, None, None)) -> None:
    from asterai.intervals import iso_ms
    from asterai.paper.status import status
    from asterai.watch.serve import attach_metrics, watch_while

    stop = stop_on_signals()  # a stop, not the kill switch (`--kill`)
    host, port, token = watch
    if port is not None:
        attach_metrics(trader, "paper")
    work = asyncio.create_task(trader.run(stop))
    watching = asyncio.create_task(watch_while(trader, "paper", work, host=host, port=port,
                                               token=token))  # fmt: skip

    def render() -> str:
        if not paths.paper_journal.exists():
            return "starting: fetching the market's history"
        now = trader.follower.clock.now_ms()
        lines = status(paths.paper_journal, now).lines()
        if trader.state.kill_requested_ms is not None and not trader.state.stopped:
            lines.insert(
                0, f"KILL SWITCH ({trader.state.kill_source}): flattening at the next open"
            )
        streams = trader.follower.streams
        if streams is not None:
            st = streams.state
            lines.append(
                f"market: kline streams {st.connected}/{st.connections} open, "
                f"{st.pushed} bars pushed, {st.reconnects} reconnects; REST for the rest"
            )
        else:
            lines.append("market: REST polling after each close")
        errors = trader.state.errors
        if errors.count or trader.state.exchange_errors:
            last = f", last {errors.last_type} at {iso_ms(errors.last_ms)}" if errors.count else ""
            lines.append(f"errors: {errors.count} unexpected{last}; "
                         f"{trader.state.exchange_errors} from the exchange")  # fmt: skip
        if trader.state.last_error:
            lines.append(f"last error: {trader.state.last_error}")
        return "\n".join(lines)

    if sys.stderr.isatty():
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        with Live(Text(render()), console=Console(stderr=True), refresh_per_second=1) as live:
            while not work.done():
                await asyncio.wait([work], timeout=1.0)
                live.update(Text(render()))
    else:
        seen = 0
        while not work.done():
            await asyncio.wait([work], timeout=1.0)
            if trader.state.bars != seen and trader.state.last is not None:
                seen = trader.state.bars
                last = trader.state.last
                click.echo(
                    f"bar {last['t']} equity {last['equity']:.4f} open {last['open_positions']}"
                    f"{' late' if last['late'] else ''}",
                    err=True,
                )
    with contextlib.suppress(asyncio.CancelledError):
        await work
    await watching


def _print_status(paths, console) -> None:
    import time

    from asterai.paper.status import status

    if not paths.paper_journal.exists():
        raise StepFailed(f"{paths.paper_journal} does not exist: no paper account here")
    for line in status(paths.paper_journal, int(time.time() * 1000)).lines():
        console.print(line, highlight=False)


COMMANDS = (paper,)
