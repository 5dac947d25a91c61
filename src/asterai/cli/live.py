"""``asterai live``: the paper trader's loop with signed orders on the exchange."""

from __future__ import annotations

import asyncio
import contextlib

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
from asterai.config import REAL_EXCHANGE_URL, Settings


@click.command("live")
@click.option("--capital", type=click.FloatRange(min=0, min_open=True), default=None,
              help="USDT the bot may use (live.capital; default strategy.capital). Sizing "
              "never uses more than it plus the bot's realised PnL.")  # fmt: skip
@click.option("--confirm", is_flag=True,
              help="Needed at the first start against the real exchange, after reading the "
              "account, the allotment and the model it prints.")  # fmt: skip
@click.option("--override-ramp", is_flag=True,
              help="Start without the paper record live.min_paper_days asks for (recorded "
              "in the journal).")  # fmt: skip
@click.option(
    "--status",
    "show_status",
    is_flag=True,
    help="Print the live account against its shadow, and the scale-up line; exit.",
)
@click.option("--report", is_flag=True,
              help="Print the fill-by-fill comparison with the shadow and write "
              "data/live/report.txt; exit.")  # fmt: skip
@click.option("--kill", is_flag=True,
              help="The kill switch: write data/live/KILL and exit. A running `asterai "
              "live` cancels the bot's orders, closes its positions at market and stops for "
              "good; with none running, the next start does.")  # fmt: skip
@click.option("--pause", is_flag=True,
              help="Pause new entries until the next UTC day: write data/live/PAUSE and exit; "
              "a running `asterai live` takes it at its next close (exits go on).")  # fmt: skip
@click.option("--acknowledge", "acknowledge", multiple=True, metavar="SYMBOL",
              help="A position or order on SYMBOL that is not the bot's is known to you: "
              "still reported and never touched, it no longer stops entries on other "
              "symbols (repeatable); then exit.")  # fmt: skip
@click.option(
    "--clock-rate",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Against `asterai replay --play-from ... --speed X`: the same X.",
)
@watch_options
@ws_url_option
@params_option
@common_options
def live(settings: Settings, capital: float | None, confirm: bool, override_ramp: bool,
         show_status: bool, report: bool, kill: bool, pause: bool, acknowledge: tuple[str, ...],
         clock_rate: float, watch_port: int | None, watch_host: str) -> None:  # fmt: skip
    """Trade the exported model on the exchange with signed orders.

    \b
    The loop, the features, the model and the per-bar step are paper trading's
    (`asterai paper --help`; the [paper] settings apply); every bar also goes
    through the simulated broker, journaled as the shadow account. What differs is
    the broker: at each close the account is read back from the exchange, the kernel
    decides on it, and the orders go to the exchange, entries at market with their
    stop (STOP_MARKET, close-position) and target (reduce-only LIMIT) resting on the
    exchange from the entry's own fill, so a dead process leaves every position
    protected. Every order is journaled before it is sent, with a client id derived
    from the account, the bar, the symbol and the leg; an unknown outcome is settled
    by asking the exchange, never by sending again. Journal: data/live/journal.sqlite.

    \b
    Before the first order: the keys from the environment (ASTERAI_USER,
    ASTERAI_SIGNER, ASTERAI_SIGNER_KEY for V3; ASTERAI_API_KEY and ASTERAI_API_SECRET
    for V1), checked against the exchange; one-way mode, cross margin and
    live.leverage set and read back; a paper record of this export over
    live.min_paper_days reconciled with the backtest (`asterai paper --report`),
    unless --override-ramp; and, at the first start against the real exchange,
    --confirm. Any of them missing: exit 2, nothing sent.

    \b
    Controls: a difference between the journal and the exchange (a position opened
    by hand, an order the bot does not know) stops new entries and is never "fixed"
    by touching what the bot did not open; the daily loss limit and the drawdown
    breaker on the live equity; the circuit breaker after live.max_rejections
    refusals in a row; the kill switch (--kill). SIGTERM or Ctrl-C stops after the
    bar being traded; the positions stay protected on the exchange.

    \b
    Watching: --watch-port serves the account's dashboard (the live account beside
    its shadow, the reconciliation, the ramp line) and Prometheus metrics from this
    process; alerts go to the apprise URLs in ASTERAI_ALERT_URLS.
    """
    import os

    from asterai.paths import DataPaths
    from asterai.watch.app import TOKEN_ENV

    token = bearer_token(TOKEN_ENV, flag="") if watch_port else None

    settings = section_overrides(settings, "live", capital=capital)
    paths = DataPaths.at(settings.data_root)
    console = rich_console()
    if kill or pause:
        ask_control(paths.live_journal, paths.live_kill, paths.live_pause, "live",
                    "kill" if kill else "pause")
        return
    if acknowledge:
        import time

        from asterai.live.trader import LiveTrader

        if not paths.live_journal.exists():
            raise StepFailed(f"{paths.live_journal} does not exist: no live account here")
        for symbol in acknowledge:
            LiveTrader.acknowledge(paths.live_journal, symbol.upper(), int(time.time() * 1000))
            click.echo(f"{symbol.upper()}: acknowledged as not the bot's; left alone")
        return
    if show_status or report:
        from asterai.live.report import report as live_report

        if not paths.live_journal.exists():
            raise StepFailed(f"{paths.live_journal} does not exist: no live account here")
        r = live_report(paths.live_journal, settings.live.min_paper_days,
                        settings.live.tracking_tolerance)  # fmt: skip
        lines = r.lines()
        if report:
            from asterai.atomic import write_text

            lines += [""] + _pairs(r)
            write_text(paths.live / "report.txt", "\n".join(lines) + "\n")
        for line in lines:
            console.print(line, highlight=False)
        return
    from asterai.live.keys import LiveKeyError, from_environment
    from asterai.live.ramp import paper_record
    from asterai.live.trader import LiveTrader
    from asterai.paper.journal import JournalError
    from asterai.paper.plan import PaperSettingsError, PaperStopped, prepare

    try:
        keys = from_environment(os.environ)
    except LiveKeyError as err:
        fail(str(err), EXIT_USAGE)
    for w in keys.warnings:
        click.echo(f"warning: {w}", err=True)
    allotment = settings.live.capital or settings.strategy.capital
    settings = section_overrides(settings, "strategy", capital=allotment)
    try:
        plan = prepare(settings)
        if override_ramp:
            note = "ramp overridden by the user (--override-ramp)"
        else:
            note = paper_record(plan)
        real = settings.base_url == REAL_EXCHANGE_URL  # (the settings strip a trailing /)
        first = not paths.live_journal.exists()
        facts = (f"account {keys.account}, allotment {allotment:g} USDT, model "
                 f"{plan.settings.paper.model} ({str(plan.account.facts.get('model_config_sha256'))[:12]}), "
                 f"{len(plan.symbols)} symbols, exchange {settings.base_url}")  # fmt: skip
        if real and first and not confirm:
            fail(f"the first start against the real exchange needs --confirm: {facts}",
                 EXIT_USAGE)  # fmt: skip
        if confirm:
            note += "; confirmed by the user (--confirm)"
        trader = LiveTrader(plan, keys, note=note, clock_rate=clock_rate,
                            retry_s=0.2 if clock_rate == 0 else 15.0)  # fmt: skip
    except (PaperSettingsError, PaperStopped) as err:
        fail(str(err), EXIT_USAGE)
    except JournalError as err:
        raise StepFailed(str(err)) from err
    click.echo(f"asterai live: {facts}; {note}; journal {paths.live_journal}", err=True)
    try:
        asyncio.run(_run(trader, (watch_host, watch_port, token)))
    except PaperSettingsError as err:  # the preflight: a refused key, an account it
        fail(str(err), EXIT_USAGE)  # cannot set up
    except JournalError as err:
        raise StepFailed(str(err)) from err
    finally:
        trader.close()
    if trader.live.killed:
        click.echo("the kill switch closed the bot's positions; live trading has stopped",
                   err=True)  # fmt: skip
    else:
        click.echo("stopped; the positions rest protected on the exchange: `asterai live` "
                   "continues", err=True)  # fmt: skip


async def _run(trader, watch=(None, None, None)) -> None:
    from asterai.watch.serve import attach_metrics, watch_while

    stop = stop_on_signals()  # a stop, not the kill switch (`--kill`)
    host, port, token = watch
    if port is not None:
        attach_metrics(trader, "live")
    work = asyncio.create_task(trader.run(stop))
    watching = asyncio.create_task(watch_while(trader, "live", work, host=host, port=port,
                                               token=token))  # fmt: skip
    seen = 0
    while not work.done():
        await asyncio.wait([work], timeout=1.0)
        if trader.live.bars != seen and trader.live.last is not None:
            seen = trader.live.bars
            last = trader.live.last
            click.echo(
                f"bar {last['t']} live equity {last['equity']:.4f} open "
                f"{last['open_positions']} orders {last['orders']}"
                + (f" ENTRIES STOPPED: {last['reduce_only']}" if last["reduce_only"] else ""),
                err=True,
            )
    with contextlib.suppress(asyncio.CancelledError):
        await work
    await watching


def _pairs(r) -> list[str]:
    """Every trade of the report ``r``, live beside shadow."""
    out = ["symbol entry_t | live: exit_t entry exit qty pnl | shadow: exit_t entry exit qty "
           "pnl reason | slippage bps entry exit"]  # fmt: skip
    for p in r.pairs:
        x, s = p.live, p.shadow
        live = (
            "-"
            if x is None
            else f"{x.exit_t} {x.entry_price} {x.exit_price} {x.quantity} {float(x.pnl):+.6f}"
        )
        shadow = ("-" if s is None else
                  f"{s['exit_t']} {s['entry_price']} {s['exit_price']} {s['quantity']} "
                  f"{s['pnl']:+.6f} {s['exit_reason']}")  # fmt: skip
        e, q = p.slippage_bps("entry"), p.slippage_bps("exit")
        slip = " ".join("-" if v is None else f"{v:+.2f}" for v in (e, q))
        out.append(f"{p.symbol} {p.entry_t} | {live} | {shadow} | {slip}")
    return out


COMMANDS = (live,)
