"""Models: walk-forward XGBoost + LSTM confluence ensemble and the Aster-native model.

``walk_forward(name, settings)`` trains and evaluates (see ``train``); ``load(settings,
name)`` returns the predictor every later step uses (see ``registry``).

The loader is imported on first use (PEP 562): the backtest and the pipeline read
``models.data`` without paying for PyTorch and scikit-learn at import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ModelNotFound", "Predictor", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from asterai.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'asterai.models' has no attribute {name!r}")
