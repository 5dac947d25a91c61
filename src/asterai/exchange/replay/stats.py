"""What the replay server did, counted (:class:`ReplayStats`)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class ReplayStats:
    """Thread-safe counters of what the server did."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._weight = 0
        self._sent_429 = 0
        self._sent_418 = 0
        self._faults: Counter[str] = Counter()
        self._paths: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()

    def _request(self, path: str) -> None:
        with self._lock:
            self._requests += 1
            self._paths[path] += 1

    def _served(self, weight: int) -> None:
        with self._lock:
            self._weight += weight

    def _status(self, status: int) -> None:
        with self._lock:
            self._statuses[status] += 1
            if status == 429:
                self._sent_429 += 1
            elif status == 418:
                self._sent_418 += 1

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] += 1

    @property
    def requests(self) -> int:
        """Requests received (every method, every outcome)."""
        with self._lock:
            return self._requests

    @property
    def weight(self) -> int:
        """Request weight counted against the limit (refused requests are not counted)."""
        with self._lock:
            return self._weight

    @property
    def sent_429(self) -> int:
        """429 responses sent (limit breaches and injected 429 faults)."""
        with self._lock:
            return self._sent_429

    @property
    def sent_418(self) -> int:
        with self._lock:
            return self._sent_418

    @property
    def faults(self) -> dict[str, int]:
        """Injected faults by kind (``5xx``, ``429``, ``slow``, ``truncate``, ``drop``)."""
        with self._lock:
            return dict(self._faults)

    @property
    def paths(self) -> dict[str, int]:
        with self._lock:
            return dict(self._paths)

    @property
    def statuses(self) -> dict[int, int]:
        with self._lock:
            return dict(self._statuses)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self._requests,
                "weight": self._weight,
                "sent_429": self._sent_429,
                "sent_418": self._sent_418,
                "faults": dict(self._faults),
                "paths": dict(self._paths),
                "statuses": dict(self._statuses),
            }
