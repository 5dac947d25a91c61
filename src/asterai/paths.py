"""Every artifact path of DESIGN.md, relative to one data root. One place for each path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DataPaths:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> DataPaths:
        return cls(Path(root).expanduser().resolve())

    # -- data ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def discovery(self) -> Path:
        return self.data_dir / "aster_assets_discovery.json"

    @property
    def rate_limit_test(self) -> Path:
        return self.data_dir / "aster_rate_limit_test.json"

    @property
    def historical(self) -> Path:
        return self.data_dir / "historical" / "real_aster_only"

    def klines(self, symbol: str, interval: str) -> Path:
        return self.historical / f"{symbol}_{interval}.parquet"

    def funding(self, symbol: str) -> Path:
        return self.historical / f"{symbol}_funding.parquet"

    @property
    def collection_report(self) -> Path:
        return self.historical / "collection_report.json"

    @property
    def collection_summary(self) -> Path:
        return self.historical / "collection_summary.csv"

    @property
    def validation(self) -> Path:
        return self.data_dir / "training_readiness_validation.json"

    @property
    def universe(self) -> Path:
        return self.data_dir / "universe.parquet"

    @property
    def features_dir(self) -> Path:
        return self.data_dir / "features"

    def features(self, interval: str) -> Path:
        return self.features_dir / f"{interval}.parquet"

    @property
    def visualizations(self) -> Path:
        return self.data_dir / "historical" / "aster_dex" / "visualizations"

    @property
    def predictions_dir(self) -> Path:
        return self.data_dir / "predictions"

    def predictions(self, model: str) -> Path:
        return self.predictions_dir / f"{model}.parquet"

    @property
    def backtest_results(self) -> Path:
        return self.data_dir / "backtest_results"

    @property
    def optimization(self) -> Path:
        return self.data_dir / "optimization"

    def study(self, name: str) -> Path:
        """``data/optimization/{study}/``: best_params.json, trials.csv, report.html and
        the default storage, Optuna's journal file ``journal.log``."""
        return self.optimization / name

    @property
    def paper(self) -> Path:
        """``data/paper/``: the paper account's journal and its kill switch file."""
        return self.data_dir / "paper"

    @property
    def paper_journal(self) -> Path:
        return self.paper / "journal.sqlite"

    @property
    def paper_kill(self) -> Path:
        """A file here is the kill switch: flatten at the next open and stop."""
        return self.paper / "KILL"

    @property
    def paper_pause(self) -> Path:
        """A file here pauses new entries until the next UTC day (exits go on)."""
        return self.paper / "PAUSE"

    @property
    def live(self) -> Path:
        """``data/live/``: the live account's journal (its shadow's bars, the intents, the
        fills ledger) and its kill switch file."""
        return self.data_dir / "live"

    @property
    def live_journal(self) -> Path:
        return self.live / "journal.sqlite"

    @property
    def live_kill(self) -> Path:
        """A file here is the live kill switch: cancel, flatten at market and stop."""
        return self.live / "KILL"

    @property
    def live_pause(self) -> Path:
        """A file here pauses the live account's new entries until the next UTC day."""
        return self.live / "PAUSE"

    # -- models -------------------------------------------------------------
    @property
    def confluence_models(self) -> Path:
        return self.root / "models" / "confluence"

    @property
    def aster_native_models(self) -> Path:
        return self.root / "models" / "aster_native"

    def models(self, name: str) -> Path:
        """``confluence`` or ``aster_native``."""
        return {"confluence": self.confluence_models, "aster_native": self.aster_native_models}[
            name
        ]

    @property
    def config_file(self) -> Path:
        return self.root / "asterai.toml"
