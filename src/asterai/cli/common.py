"""What every step of the command line shares, in one place: the common options
(--data-root, --base-url, --exclude, -v), loading the settings (asterai.toml in the
data root), the console and progress choices, and turning errors into the exit status.

Exit status: 0 on success, 1 when the step ran but failed (bad data, an
unreachable exchange, a failed series), 2 for wrong usage. The last lines on
stderr say why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from asterai.config import REAL_EXCHANGE_URL, ConfigError, Settings, load_settings
from asterai.intervals import IntervalError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class StepFailed(Exception):
    """The step ran and failed; exit 1 with this message."""


def fail(message: str, code: int) -> None:
    click.echo(f"asterai: error: {message}", err=True)
    sys.exit(code)


def configure_logging(verbose: int) -> None:
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
        configure_logging(verbose)
        overrides = kwargs.pop("_overrides", {})
        if kwargs.get("ws_url") is not None:
            overrides["ws_url"] = kwargs.pop("ws_url")
        else:
            kwargs.pop("ws_url", None)
        params = kwargs.pop("params", None)
        if params is not None:
            overrides = with_params(overrides, params, kwargs.get("model"))
        try:
            if exclude is not None:
                from asterai.config import parse_symbols

                try:
                    named = parse_symbols(exclude)
                except ValueError as err:
                    fail(f"--exclude: {err}", EXIT_USAGE)
                overrides["exclude_symbols"] = load_settings(data_root).exclude_symbols + named
            settings = load_settings(data_root, base_url=base_url, **overrides)
        except (ConfigError, IntervalError) as err:
            fail(str(err), EXIT_USAGE)
        return _run_step(func, settings, *args, **kwargs)

    return wrapper


def section_overrides(settings: Settings, section: str, **given: Any) -> Settings:
    """``settings`` with the command line's options for one section (``optimize``,
    ``paper``) applied over asterai.toml's, validated by that section's model; a bad
    value is a usage error (exit 2). Options left out (None) keep the file's values."""
    values = {k: v for k, v in given.items() if v is not None}
    if not values:
        return settings
    current = getattr(settings, section)
    raw = current.model_dump(exclude_unset=True)
    raw.update(values)
    try:
        return settings.model_copy(update={section: type(current).model_validate(raw)})
    except ValueError as err:
        raise click.UsageError(str(err)) from err


def ws_url_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--ws-url URL: the exchange's websocket streams (put it outside ``common_options``;
    that wrapper applies it)."""
    return click.option(
        "--ws-url",
        default=None,
        help="The exchange's websocket streams, for closed bars pushed at their close "
        "(default: ASTERAI_WS_URL, asterai.toml's ws_url, the real exchange's with the real "
        "--base-url, none with another: then REST polling only; 'off': REST only).",
    )(func)


def with_params(overrides: dict[str, Any], path: Path, model: str | None = None) -> dict[str, Any]:
    """``overrides`` plus the settings of a search's ``best_params.json`` (``--params``);
    ``model``: the command's model, which must be the one the search tuned."""
    from asterai.optimize.run import read_params
    from asterai.optimize.space import merge_settings
    from asterai.optimize.workspace import OptimizeError

    try:
        doc = read_params(path)
    except OptimizeError as err:
        fail(f"--params: {err}", EXIT_USAGE)
    if model is not None and model.replace("-", "_") != doc.get("model"):
        fail(
            f"--params: {path} holds the {doc.get('model')} model's parameters (study "
            f"{doc.get('study')}), not the {model.replace('-', '_')} model's",
            EXIT_USAGE,
        )
    merged = merge_settings(overrides, doc["settings"])
    merged["params_from"] = (
        f"{Path(path).resolve()} (study {doc['study']}, trial {doc['best_trial']})"
    )
    return merged


def params_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--params FILE: a search's best_params.json over asterai.toml (put it outside
    ``common_options``; that wrapper applies it)."""
    return click.option(
        "--params",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Settings from `asterai optimize`'s best_params.json (over asterai.toml; the "
        "model config records the file). Changed barriers or horizon need the features "
        "rebuilt with the same --params.",
    )(func)


def _run_step(func: Callable[..., Any], settings: Settings, *args: Any, **kwargs: Any) -> Any:
    from asterai.data.collector import CollectionUsageError
    from asterai.data.gate import GateUsageError
    from asterai.data.store import StoreError
    from asterai.exchange.errors import ExchangeError

    try:
        return func(settings, *args, **kwargs)
    except (CollectionUsageError, IntervalError, ConfigError, GateUsageError) as err:
        fail(str(err), EXIT_USAGE)
    except (ExchangeError, StoreError, StepFailed) as err:
        fail(str(err), EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted; files already written are complete, run the step again to resume", 130)


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM or SIGINT sets (said once on stderr): a trader's graceful stop,
    the bar being traded finished, never the kill switch. Call inside the running loop."""
    stop = asyncio.Event()

    def stopping(name: str) -> None:
        if not stop.is_set():
            click.echo(f"{name}: stopping after the bar being traded", err=True)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig.name)
    return stop


def rich_console():
    """A rich console; wide enough for the tables when output goes to a file or a pipe."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)


def progress_wanted() -> bool:
    return sys.stderr.isatty()


#: addresses a service may be bound to without a token
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def bearer_token(variable: str, *, insecure_local: bool = False, host: str = "127.0.0.1",
                 flag: str = "--insecure-local") -> str | None:  # fmt: skip
    """The bearer token a served API asks for, from ``variable``; a usage error (exit 2)
    when it is unset or under ``MIN_TOKEN_CHARS`` characters, unless ``insecure_local``
    (then None, and ``host`` must be loopback)."""
    import os

    from asterai.deploy.api_models import MIN_TOKEN_CHARS

    if insecure_local:
        if host not in LOOPBACK:
            raise click.UsageError(f"{flag} binds to 127.0.0.1 only, not {host}")
        return None
    token = os.environ.get(variable) or None
    if token is None:
        raise click.UsageError(
            f"{variable} is not set: set it to the bearer token clients must send"
            + (f", or pass {flag} to serve on 127.0.0.1 without one" if flag else "")
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise click.UsageError(
            f"{variable} has {len(token)} characters: use a token of at least "
            f"{MIN_TOKEN_CHARS} (openssl rand -hex 32 makes one of 64)"
        )
    return token


def watch_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--watch-port / --watch-host: the trader's own dashboard and /metrics."""
    func = click.option(
        "--watch-host", default="127.0.0.1", show_default=True,
        help="The address --watch-port binds to.",
    )(func)  # fmt: skip
    return click.option(
        "--watch-port", type=click.IntRange(1, 65535), default=None,
        help="Serve this account's dashboard, its REST API (/api/v1) and its Prometheus "
        "metrics (/metrics) from this process on this port; every request but the page "
        "needs `Authorization: Bearer $ASTERAI_DASHBOARD_TOKEN`.",
    )(func)  # fmt: skip


def ask_control(journal: Path, kill: Path, pause: Path, kind: str, which: str) -> None:
    """``asterai paper|live --kill`` or ``--pause``: the file a running trader finds at its
    next poll (a stopped one at its next start), written by ``watch.controls``."""
    from asterai.watch.controls import AlreadyFinal, ControlRefused, ask

    try:
        done = ask(which, journal, kill, pause, kind, f"asterai {kind} --{which}")
    except AlreadyFinal as err:  # nothing left to do: not a failure
        click.echo(str(err))
        return
    except ControlRefused as err:
        raise StepFailed(str(err)) from err
    click.echo(done.message)
