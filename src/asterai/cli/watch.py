"""``asterai dashboard``: the accounts' journals on one page, with their REST API."""

from __future__ import annotations

from pathlib import Path

import click

from asterai.cli.common import bearer_token, common_options
from asterai.config import Settings


@click.command("dashboard")
@click.option(
    "--also", "also", multiple=True, metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Another data root whose accounts to show beside the data root's (repeatable).",
)  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8050, show_default=True)
@click.option("--insecure-local", is_flag=True,
              help="Run without a token (ASTERAI_DASHBOARD_TOKEN unset), bound to "
              "127.0.0.1 only.")  # fmt: skip
@common_options
def dashboard(settings: Settings, also: tuple[Path, ...], host: str, port: int,
              insecure_local: bool) -> None:  # fmt: skip
    """Watch the paper and live accounts: a web page and its REST API.

    \b
    It reads each account's journal (data/paper/journal.sqlite, data/live/journal.sqlite
    under the data root and every --also root) read-only, from any process: the
    equity curve beside its shadow (live) or the backtest over the same bars and the
    baselines (paper, as of its last `asterai paper --report`), the unrealised PnL,
    the open positions with their stop and target, the trades, the refused orders
    with their reasons, the events, the feed's age, the controls in force, and for
    live the reconciliation and the scale-up line. The page updates itself when a
    bar is journaled; it holds no data and works offline.

    \b
    Endpoints: GET / (the page), GET /api/v1/{accounts,status,positions,trades,
    equity,events,rejections}?account=ID, POST /api/v1/kill and /api/v1/pause
    ({"account": ID, "confirm": true}: the same KILL and PAUSE files `asterai paper
    --kill` writes), GET /api/v1/openapi.json. All but the page need
    `Authorization: Bearer $ASTERAI_DASHBOARD_TOKEN` (at least 32 characters); open
    the page as http://HOST:PORT/#token=... or type the token in.
    """
    import uvicorn

    from asterai.watch.app import TOKEN_ENV, create_app
    from asterai.watch.views import sources

    token = bearer_token(TOKEN_ENV, insecure_local=insecure_local, host=host)
    roots = [settings.data_root, *also]
    for root in roots:
        if not Path(root).is_dir():
            raise click.UsageError(f"{root} is not a folder")
    found = sources(roots)
    app = create_app(roots, token=token, live_settings=(
        settings.live.min_paper_days, settings.live.tracking_tolerance))  # fmt: skip
    click.echo(
        f"asterai dashboard: {len(found)} account(s) ({', '.join(s.id for s in found) or 'none yet'})"
        f" on http://{host}:{port}/{'' if token else ', NO TOKEN (loopback only)'}",
        err=True,
    )  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)


COMMANDS = (dashboard,)
