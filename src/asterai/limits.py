"""Request-size facts of the exchange that settings need as defaults.

Ground floor: imports nothing from asterai, so ``config`` can take its
defaults from here without reaching up into ``exchange``;
``exchange.weights`` re-exports them beside the weight table they follow from.
"""

from __future__ import annotations

__all__ = ["OPTIMAL_KLINE_PAGE"]

#: Weight-optimal kline page: 499 bars for weight 2 (0.004 weight per bar).
OPTIMAL_KLINE_PAGE = 499
