"""The exchange's order filters per symbol, as discovery recorded them (light: the
features and the backtest read them without importing the exchange client)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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


def ticks_of(exchange_info: Any) -> dict[str, float | None]:
    """Each symbol's ``PRICE_FILTER.tickSize`` in an exchangeInfo answer (None where it
    states none): the tick in force when the exchange was asked."""
    out: dict[str, float | None] = {}
    entries = exchange_info.get("symbols") if isinstance(exchange_info, dict) else None
    for entry in entries or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("symbol"), str):
            continue
        tick = None
        for f in entry.get("filters") or []:
            if isinstance(f, dict) and f.get("filterType") == "PRICE_FILTER":
                try:
                    tick = float(f.get("tickSize"))
                except (TypeError, ValueError):
                    tick = None
        out[entry["symbol"]] = tick
    return out
