"""Outcomes as data: exit reasons and order rejections, declared once (vectorbt's
``OrderStatus`` habit), counted in the report."""

from __future__ import annotations

#: Why a position closed.
(
    EXIT_STOP,
    EXIT_TARGET,
    EXIT_TIME,
    EXIT_SIGNAL,
    EXIT_GAP,
    EXIT_BREAKER,
    EXIT_LIQUIDATION,
    EXIT_END,
    EXIT_KILL,
) = range(9)
EXIT_REASONS = (
    "stop",
    "target",
    "time limit",
    "opposite signal",
    "gap through stop",
    "drawdown circuit breaker",
    "liquidation",
    "end of data",
    "kill switch",
)

#: Why a signal did not become a position (the exchange would reject it, or the
#: strategy's limits leave no room).
(
    REJECT_MIN_NOTIONAL,
    REJECT_LOT_STEP,
    REJECT_MAX_POSITIONS,
    REJECT_LEVERAGE,
    REJECT_NO_NEXT_BAR,
    REJECT_STOPPED,
    REJECT_MARKET_CLOSED,
    REJECT_NO_EDGE,
    REJECT_PAUSED,
    REJECT_KILLED,
) = range(10)
REJECT_REASONS = (
    "below the minimum notional",
    "quantity below one lot step",
    "no free position slot",
    "over the leverage limit",
    "no next bar to fill at",
    "trading stopped by the circuit breaker",
    "market closed (no trade in the fill bar)",
    "no edge at the labels' odds (Kelly sizing)",
    "new entries paused (daily loss limit)",
    "cancelled by the kill switch",
)
