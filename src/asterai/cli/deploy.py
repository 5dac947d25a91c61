"""``asterai export-onnx``: the trained models as ONNX graphs and a manifest."""

from __future__ import annotations

import click

from asterai.cli.common import StepFailed, common_options, rich_console
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


COMMANDS = (export_onnx,)
