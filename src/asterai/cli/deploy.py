"""``asterai export-onnx``: the trained models as ONNX graphs and a manifest."""

from __future__ import annotations

import click

from asterai.cli.common import (
    StepFailed,
    bearer_token,
    common_options,
    rich_console,
    ws_url_option,
)
from asterai.config import Settings

MODELS = {"confluence": "confluence", "aster-native": "aster_native"}


@click.command("export-onnx")
@click.option(
    "--model",
    "models",
    type=click.Choice(["confluence", "aster-native", "all"]),
    default="all",
    show_default=True,
    help="Which trained model to export.",
)
@common_options
def export_onnx(settings: Settings, models: str) -> None:
    """Export trained models to ONNX for the CPU signal service.

    \b
    Writes models/{model}/onnx/: xgboost.onnx (the booster at its best iteration,
    both directions), lstm.onnx (the confluence model's LSTM, batch and window
    length dynamic) and manifest.json (the feature order, fill values, scaling,
    window, calibration, ensemble weights, threshold, the model config's sha256,
    library versions and the parity figure).

    The export is written only when, on every real row of the model's feature table
    and on rows moved onto the booster's split thresholds, the ONNX path's calibrated
    probabilities equal the native models' within 1e-5 (maximum absolute difference,
    printed). Otherwise the previous export stays in place and the exit status is 1.
    """
    from asterai.deploy.export import TOLERANCE, ParityError
    from asterai.deploy.export import export_onnx as run
    from asterai.deploy.onnx_xgb import ExportError
    from asterai.models.registry import ModelNotFound

    console = rich_console()
    names = list(MODELS.values()) if models == "all" else [MODELS[models]]
    for name in names:
        try:
            result = run(settings, name)
        except ModelNotFound as err:
            raise StepFailed(str(err)) from err
        except (ParityError, ExportError) as err:
            raise StepFailed(f"{name}: {err}") from err
        p = result.manifest["parity"]
        console.print(
            f"{name}: {result.folder} ({', '.join(result.manifest['members'])}); parity on "
            f"{p['rows']:,} feature rows and {p['threshold_probes']} threshold probes: "
            f"max |ONNX - native| = {p['max_abs_diff']:.2e} (tolerance {TOLERANCE:g})",
            highlight=False,
        )


TOKEN_ENV = "ASTERAI_SERVE_TOKEN"


@click.command("serve")
@click.option(
    "--model",
    type=click.Choice(["confluence", "aster-native"]),
    default="confluence",
    show_default=True,
    help="Which exported model to serve (models/{model}/onnx).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--symbols",
    default=None,
    metavar="A,B",
    help="Serve only these symbols (default: every symbol the model was trained on); "
    "the model's inputs still follow every symbol it was trained on, as in the batch.",
)
@click.option(
    "--insecure-local",
    is_flag=True,
    help=f"Run without a token ({TOKEN_ENV} unset), bound to 127.0.0.1 only.",
)
@click.option(
    "--no-follow",
    is_flag=True,
    help="Do not follow the market: only POST /v1/predict answers (no exchange needed).",
)
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True,
              help="onnxruntime threads per prediction.")  # fmt: skip
@ws_url_option
@common_options
def serve(
    settings: Settings,
    model: str,
    host: str,
    port: int,
    symbols: str | None,
    insecure_local: bool,
    no_follow: bool,
    threads: int,
) -> None:
    """Serve the exported model's signals over HTTP (FastAPI under uvicorn, CPU only).

    \b
    It follows the market itself: at start it fetches each symbol's last bars from
    the exchange (--base-url; the collector's client and rate limiter), then takes
    each bar's closed klines as the exchange's websocket streams push them (--ws-url;
    REST for what they lack) or, without streams, polls them after every close,
    computes the newest bar's features and publishes the signals. Endpoints: GET /health (no token), GET /v1/models,
    GET /v1/signals, POST /v1/predict, GET /v1/openapi.json.

    \b
    Every endpoint but /health needs `Authorization: Bearer $ASTERAI_SERVE_TOKEN`
    (/health answers anyone its status, and the detail with the token); without the
    variable, or with a token under 32 characters, the service refuses to start, unless
    --insecure-local, which binds it to 127.0.0.1. /health is 503 unless the data is
    fresh (starting, stale, or the follower has stopped).
    """

    import uvicorn

    from asterai.deploy.follow import Follower
    from asterai.deploy.runtime import ExportMissing, OnnxModel
    from asterai.deploy.service import create_app

    token = bearer_token(TOKEN_ENV, insecure_local=insecure_local, host=host)
    name = MODELS[model]
    folder = settings.data_root / "models" / name / "onnx"
    try:
        onnx = OnnxModel(folder, threads=threads)
    except ExportMissing as err:
        raise StepFailed(str(err)) from err
    wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else None
    follower = None
    if not no_follow:
        try:
            follower = Follower(settings, onnx, symbols=wanted)
        except ValueError as err:
            raise click.UsageError(str(err)) from err
    app = create_app(onnx, follower, token=token, name=name)
    click.echo(
        f"asterai serve: {name} ({folder}) on http://{host}:{port}, "
        f"{'following ' + settings.base_url if follower else 'predict only'}"
        f"{' and ' + settings.streams_url() if follower and settings.streams_url() else ''}"
        f"{'' if token else ', NO TOKEN (loopback only)'}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)


COMMANDS = (export_onnx, serve)
