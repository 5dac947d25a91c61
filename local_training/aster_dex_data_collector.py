"""The seed guide's collector object, over the package:

    python -c "from local_training.aster_dex_data_collector import AsterDEXDataCollector; \
import asyncio; c = AsterDEXDataCollector(); asyncio.run(c.initialize()); print('API: Connected')"

``initialize()`` checks connectivity and real-data access (``asterai.data.access``):
a ping, the exchange's clock, exchangeInfo and the last closed bars of BTCUSDT, which
must look like real bars. It raises ``AccessError`` (with the offline command) when the
exchange cannot be used. ``collect()`` is ``asterai collect``. The exchange is
``ASTERAI_BASE_URL`` or the real one; the data root ``ASTERAI_DATA_ROOT`` or the
current folder, as for every command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.config import load_settings  # noqa: E402
from asterai.data.access import AccessError, check_access  # noqa: E402

__all__ = ["AccessError", "AsterDEXDataCollector"]


class AsterDEXDataCollector:
    """Real Aster DEX market data, collected with provenance (``asterai collect``)."""

    def __init__(self, data_root: str | Path | None = None, base_url: str | None = None) -> None:
        self.settings = load_settings(data_root, base_url=base_url)
        self.status: dict[str, Any] | None = None

    async def initialize(self) -> dict[str, Any]:
        """Check connectivity and real-data access; returns what was seen."""
        self.status = await check_access(self.settings)
        return self.status

    async def collect(self, symbols: list[str] | None = None) -> Any:
        """Collect klines and funding into data/historical/real_aster_only/ (needs
        ``asterai discover`` first, as the command does)."""
        from asterai.data.collector import collect

        return await collect(self.settings, symbols=symbols)
