"""Charts of a trained model: feature importance and calibration (reliability)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asterai import atomic

DPI = 110


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def importance_chart(
    path: Path, gain: dict[str, float], shap: dict[str, float], title: str
) -> None:
    """Top features by XGBoost gain and by mean |SHAP| (both directions summed)."""
    fig = _figure(11, 7)
    for ax, (what, values) in zip(
        fig.subplots(1, 2),
        (("gain (XGBoost)", gain), ("mean |SHAP| (pred_contribs)", shap)),
        strict=True,
    ):
        top = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:20][::-1]
        ax.barh([k for k, _ in top], [v for _, v in top], color="#3b6ea5")
        ax.set_title(what, fontsize=10)
        ax.tick_params(labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def calibration_chart(
    path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str
) -> None:
    """Mean predicted probability against the observed rate, per model, in 10 bins."""
    fig = _figure(11, 5)
    axes = fig.subplots(1, 2)
    for ax, direction in zip(axes, ("long", "short"), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
        for name, (p, y) in curves.items():
            ok = np.isfinite(p[:, 0 if direction == "long" else 1]) & np.isfinite(
                y[:, 0 if direction == "long" else 1]
            )
            pj = p[ok, 0 if direction == "long" else 1]
            yj = y[ok, 0 if direction == "long" else 1]
            if len(pj) < 20:
                continue
            edges = np.unique(np.quantile(pj, np.linspace(0, 1, 11)))
            idx = np.clip(np.searchsorted(edges, pj, side="right") - 1, 0, len(edges) - 2)
            xs = [pj[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()]
            ys = [yj[idx == b].mean() for b in range(len(edges) - 1) if (idx == b).any()]
            ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("predicted probability (out of sample)")
        ax.set_ylabel("observed rate of the target first")
        ax.set_title(direction)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
