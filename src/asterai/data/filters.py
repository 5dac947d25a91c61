"""The exchange's order filters per symbol, as discovery recorded them (light: the
features and the backtest read them without importing the exchange client)."""

from __future__ import annotations

import json
from pathlib import Path


def read_filters(discovery_path: Path) -> dict[str, dict[str, float | None]]:
    """Each discovered symbol's exchange filters (``tick_size``, ``step_size``,
    ``min_notional``, ``liquidation_fee``; None where the exchange stated none), from
    ``data/aster_assets_discovery.json``; empty when there is no discovery yet."""
    if not discovery_path.exists():
        return {}
    doc = json.loads(discovery_path.read_text())
    return {
        e["symbol"]: dict(e.get("filters") or {})
        for e in doc.get("symbols", [])
        if isinstance(e, dict) and isinstance(e.get("symbol"), str)
    }
