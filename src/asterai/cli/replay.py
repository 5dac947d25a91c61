"""``asterai replay``: the offline exchange on loopback."""

from __future__ import annotations

from pathlib import Path

import click

from asterai.cli.common import EXIT_FAILED, EXIT_USAGE, configure_logging, fail


@click.command()
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
@click.option(
    "--play-from",
    default=None,
    help="Play the recording forward as if live from this UTC time (ISO, e.g. "
    "2025-10-01T00:00): the clock runs from there, bars close on it, only closed bars "
    "are served.",
)
@click.option(
    "--speed",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="With --play-from: exchange seconds per real second (3600: an hour a second; default 1).",
)
@click.option(
    "--accounts",
    default=None,
    type=click.IntRange(min=0),
    help="Also an exchange to trade against: create this many funded throwaway accounts "
    "and print each one's user address and key, API wallet address and key, and V1 key "
    "and secret (replay only: never real keys). Orders are matched over the recording as "
    "the clock plays; with --play-from, the user-data stream too.",
)
@click.option(
    "--balance",
    default="1000",
    show_default=True,
    help="USDT in each account made by --accounts.",
)
@click.option(
    "--event-faults",
    default=None,
    help="Faults of the user-data stream, e.g. 'dup=0.05,reorder=0.05,drop=0.02'.",
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
    play_from: str | None,
    speed: float | None,
    accounts: int | None,
    balance: str,
    event_faults: str | None,
    verbose: int,
) -> None:
    """Serve a recorded folder as an Aster-compatible exchange on loopback.

    Same paths, parameters, JSON shapes, weights, used-weight header, 429 and 418 rules as
    the real API, with the clock frozen at the moment of the recording. Point any step at
    it with --base-url http://HOST:PORT. With --accounts, signed orders too (V3 and V1),
    matched over the recording, and (playing forward) the user-data stream.
    """
    configure_logging(verbose)
    from asterai.exchange.replay import FaultSpec, serve
    from asterai.exchange.replay.events import EventFaults
    from asterai.exchange.weights import DEFAULT_WEIGHT_LIMIT

    try:
        spec = FaultSpec.parse(faults) if faults else None
    except ValueError as err:
        fail(f"--faults: {err}", EXIT_USAGE)
    try:
        event_spec = EventFaults.parse(event_faults)
    except ValueError as err:
        fail(f"--event-faults: {err}", EXIT_USAGE)
    if event_faults and accounts is None:
        fail("--event-faults needs --accounts", EXIT_USAGE)
    from decimal import Decimal, InvalidOperation

    try:
        funds = Decimal(balance)
        if not funds.is_finite() or funds <= 0:
            raise InvalidOperation
    except InvalidOperation:
        fail(f"--balance: not a positive amount of USDT: {balance!r}", EXIT_USAGE)
    play_from_ms = None
    if play_from is not None:
        import pandas as pd

        try:
            stamp = pd.Timestamp(play_from)
        except ValueError as err:
            fail(f"--play-from: not a time: {play_from!r} ({err})", EXIT_USAGE)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        play_from_ms = int(stamp.value // 1_000_000)
    elif speed is not None:
        fail("--speed needs --play-from", EXIT_USAGE)
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
            play_from_ms=play_from_ms,
            speed=speed,
            accounts=accounts,
            balance=funds,
            event_faults=event_spec,
        )
    except (OSError, ValueError) as err:
        fail(str(err), EXIT_FAILED)


COMMANDS = (replay,)
