"""The feature stage's value types, shared by the builder and the plots.

They live here, below both, so that ``features.plots`` reads what
``features.build`` produces without importing the stage itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

__all__ = ["FeatureResult", "SymbolInput"]


@dataclass(frozen=True, slots=True)
class SymbolInput:
    """One symbol's verified bars: the base interval, the higher ones, funding."""

    symbol: str
    bars: dict[str, pd.DataFrame]
    funding: pd.DataFrame | None
    listing_ms: int | None  # None: listed before the available history began (unknown)
    tick: float = 0.0  # the price tick from discovery (0: unknown); the labels' barriers


@dataclass(slots=True)
class FeatureResult:
    frame: pd.DataFrame
    symbols: list[str]
    features: list[str]
    labels: list[str]
    inputs: dict[str, str] = field(default_factory=dict)
