"""The newest bar's signals: live features through the exported model.

``newest_signals`` is the one path from held bars to probabilities that the service
and paper trading share: the live features of the newest bar (``deploy.live``), the
feature rows of the bars before it as the LSTM's window, and the ONNX model
(``deploy.runtime``) on the newest rows only.
"""

from __future__ import annotations

import pandas as pd

from asterai.data.store import to_epoch_ms
from asterai.deploy.live import LiveFeatures
from asterai.deploy.runtime import OnnxModel


def newest_signals(live: LiveFeatures, model: OnnxModel) -> pd.DataFrame:
    """One row per symbol with the newest bar: ``symbol``, ``open_time``, ``p_long``,
    ``p_short`` and each member's calibrated output."""
    if model.sequence_length > live.history:
        raise ValueError(
            f"the model reads {model.sequence_length} bars of features; the live features "
            f"keep {live.history} (LiveFeatures(history=...))"
        )
    rows = live.newest()
    frame = live.recent() if live.history else rows.frame()
    targets = to_epoch_ms(frame["open_time"]) == rows.open_time
    preds = model.predict(frame, targets=targets)
    out = frame.loc[targets, ["symbol", "open_time"]].join(preds)
    return out.reset_index(drop=True)


__all__ = ["newest_signals"]
