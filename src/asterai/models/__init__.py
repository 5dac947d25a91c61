"""Models: walk-forward XGBoost + LSTM confluence ensemble and the Aster-native model.

``walk_forward(name, settings)`` trains and evaluates (see ``train``); ``load(settings,
name)`` returns the predictor every later step uses (see ``registry``).
"""

from asterai.models.registry import ModelNotFound, Predictor, load

__all__ = ["ModelNotFound", "Predictor", "load"]
