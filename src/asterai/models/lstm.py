"""The LSTM member: the last ``sequence_length`` bars of one symbol's features.

Windows are built lazily: the panel's rows are sorted by (symbol, time), so the window
ending at row ``i`` is rows ``i - L + 1 .. i`` of ONE float32 array per fold, gathered per
batch (never a materialised copy per window). A row has a window when its symbol's
previous ``L - 1`` bars are all there (no gap); other rows get no LSTM output and the
ensemble uses XGBoost alone for them.

Missing values: each column's median over the fitting rows fills it (fitted on those
rows only, like the standardisation), and a column missing on at least
``missing_indicator_share`` of the fitting rows gets a 0/1 indicator input. A column with
no value at all in the fitting rows is dropped for the fold, and the drop is recorded.

A plain, seeded training loop: Adam, binary cross-entropy on both directions (with
``train.target = "r_multiple"``: the Huber loss, ``SmoothL1Loss`` with a slope change
at 1 R, of the linear output against the net R-multiple, and ``sigmoid(predicted R)``
as the raw output, as the XGBoost member's regression; ``models/target.py``), early
stopping on the windows of the validation window's early-stopping part by the same
score as XGBoost (``scoring.Scorer``: AUC, per-bar IC or log loss), the best epoch's
weights kept. The history records each epoch's fitting loss, validation loss and
validation score.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from asterai.config import LSTMSettings
from asterai.models.errors import TrainingError
from asterai.models.inputs import Prep
from asterai.models.scoring import Scorer
from asterai.models.target import HUBER_SLOPE

log = logging.getLogger(__name__)


class Network(nn.Module):
    def __init__(self, width: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            width, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


class LSTMMember:
    name = "lstm"

    def __init__(self, settings: LSTMSettings, device: str, seed: int) -> None:
        self.settings = settings
        self.device = device
        self.seed = seed
        self.prep: Prep | None = None
        self.net: Network | None = None
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0
        self.Z: np.ndarray | None = None

    def release(self) -> None:
        """Drop the fold's transformed panel (the largest array the member holds)."""
        self.Z = None

    # -- windows --------------------------------------------------------------

    def has_window(self, runs: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return runs[rows] >= self.settings.sequence_length

    def _batch(self, Z: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        offsets = np.arange(-self.settings.sequence_length + 1, 1)
        return torch.from_numpy(Z[rows[:, None] + offsets]).to(self.device)

    # -- fit and predict -----------------------------------------------------------

    def fit(
        self,
        X: np.ndarray,
        features: list[str],
        runs: np.ndarray,
        y: np.ndarray,
        fit_rows: np.ndarray,
        valid_rows: np.ndarray,
        scorer_for: Callable[[np.ndarray], Scorer],
        progress: Any = None,
        regression: bool = False,
    ) -> LSTMMember:
        """``X``: the whole panel; ``y``: 0/1 labels, or with ``regression`` the net
        R-multiples; ``fit_rows``: labelled rows to fit on; ``valid_rows``:
        labelled rows whose score stops training early (the best epoch's weights are
        kept); ``scorer_for(rows)``: the score of those of them that have a window.

        The transformed panel is kept (``self.Z``) for this fold's predictions; call
        ``release()`` when the fold is done.
        """
        s = self.settings
        started = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.prep = Prep.fit(X[fit_rows], features, s.missing_indicator_share)
        self.Z = Z = self.prep.transform(X)
        fit_rows = fit_rows[self.has_window(runs, fit_rows)][:: s.window_stride]
        valid_rows = valid_rows[self.has_window(runs, valid_rows)]
        if len(fit_rows) == 0 or len(valid_rows) == 0:
            raise TrainingError(
                f"no {s.sequence_length}-bar window to fit or validate the LSTM on: lower "
                "train.lstm.sequence_length or collect more history"
            )
        self.net = Network(self.prep.width, s.hidden_size, s.num_layers, s.dropout).to(self.device)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=s.learning_rate)
        loss_fn = nn.SmoothL1Loss(beta=HUBER_SLOPE) if regression else nn.BCEWithLogitsLoss()
        y_t = torch.from_numpy(np.nan_to_num(y).astype(np.float32))
        scorer = scorer_for(valid_rows)
        best, best_state, stale = -np.inf, None, 0
        for epoch in range(s.epochs):
            self.net.train()
            order = fit_rows[rng.permutation(len(fit_rows))]
            total = 0.0
            for start in range(0, len(order), s.batch_size):
                rows = order[start : start + s.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(self.net(self._batch(Z, rows)), y_t[rows].to(self.device))
                loss.backward()
                optimiser.step()
                total += loss.item() * len(rows)
            p_valid = self.predict(X, runs, valid_rows, Z)
            valid_loss = (
                _huber(p_valid, y[valid_rows]) if regression else _bce(p_valid, y[valid_rows])
            )
            score = scorer(p_valid)
            self.history.append(
                {
                    "epoch": epoch,
                    "fit_loss": total / len(order),
                    "valid_loss": valid_loss,
                    f"valid_{scorer.name}": score,
                }
            )
            if progress is not None:
                progress(epoch, scorer.name, score)
            if score > best + 1e-9:
                best, stale, self.best_epoch = score, 0, epoch
                self.best_score = score
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                stale += 1
                if stale >= s.patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.seconds = time.perf_counter() - started
        return self

    @torch.no_grad()
    def predict(
        self, X: np.ndarray, runs: np.ndarray, rows: np.ndarray, Z: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw probabilities (len(rows), 2); NaN where a row has no full window."""
        if self.net is None or self.prep is None:
            raise RuntimeError("the LSTM member is not fitted")
        out = np.full((len(rows), 2), np.nan)
        ok = self.has_window(runs, rows)
        if not ok.any():
            return out
        if Z is None:
            Z = self.Z if self.Z is not None else self.prep.transform(X)
        self.net.eval()
        wanted = rows[ok]
        parts = []
        for start in range(0, len(wanted), self.settings.batch_size * 4):
            logits = self.net(self._batch(Z, wanted[start : start + self.settings.batch_size * 4]))
            parts.append(torch.sigmoid(logits).float().cpu().numpy())
        out[ok] = np.concatenate(parts)
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.net is None:
            raise RuntimeError("the LSTM member is not fitted")
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    @classmethod
    def load(
        cls, state: dict[str, torch.Tensor], prep: dict[str, Any], settings: LSTMSettings
    ) -> LSTMMember:
        member = cls(settings, "cpu", 0)
        member.prep = Prep(**prep)
        member.net = Network(
            member.prep.width, settings.hidden_size, settings.num_layers, settings.dropout
        )
        member.net.load_state_dict(state)
        member.net.eval()
        return member


def _bce(p: np.ndarray, y: np.ndarray) -> float:
    """The mean binary cross-entropy of probabilities ``p`` against 0/1 ``y`` (both (rows, 2))."""
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _huber(p: np.ndarray, value: np.ndarray) -> float:
    """The mean Huber loss (slope change at ``HUBER_SLOPE``) of the predicted R, read
    back from the raw output ``p = sigmoid(R)``, against the net R ``value``."""
    q = np.clip(p.astype(float), 1e-7, 1 - 1e-7)
    diff = np.abs(np.log(q / (1 - q)) - value)
    quad = 0.5 * diff**2 / HUBER_SLOPE
    return float(np.mean(np.where(diff < HUBER_SLOPE, quad, diff - 0.5 * HUBER_SLOPE)))
