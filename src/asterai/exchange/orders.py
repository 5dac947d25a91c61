"""An order's states and the moves between them, as data.

The exchange's statuses (``NEW``, ``PARTIALLY_FILLED``, ``FILLED``, ``CANCELED``,
``EXPIRED``, ``REJECTED``) and what may follow each: every change an exchange event or
a reply makes goes through ``advance``, and a move the table does not allow is an
error, never applied (NautilusTrader's ``OrderStatus::transition``, Hummingbot's
``InFlightOrder``). The stand-in exchange's matching engine and the live broker use
the same table, so neither can put an order where the other could not follow it.
"""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


#: the statuses that may follow each one (a final status has none)
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.NEW: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED,
         OrderStatus.EXPIRED, OrderStatus.REJECTED}
    ),  # fmt: skip
    OrderStatus.PARTIALLY_FILLED: frozenset(
        {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELED,
         OrderStatus.EXPIRED}
    ),  # fmt: skip
    OrderStatus.FILLED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
    OrderStatus.EXPIRED: frozenset(),
    OrderStatus.REJECTED: frozenset(),
}


class IllegalTransition(ValueError):
    """A move the table does not allow (a fill after a cancel, say)."""


def advance(current: OrderStatus, new: OrderStatus, what: str = "order") -> OrderStatus:
    """``new`` if it may follow ``current``; IllegalTransition naming both otherwise."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{what}: {current.value} cannot become {new.value}")
    return new
