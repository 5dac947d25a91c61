"""The errors a paper trader survives: counted, logged, retried with backoff.

A step that raises something unexpected (a malformed field from the exchange, an
onnxruntime error, a full disk) does not end the trader: ``ErrorCount.record`` counts
it, logs it (with its traceback the first time an error of that type is seen, one line
after that) and says how long to wait before the next try: ``first_s`` doubled with
each error in a row, at most ``max_s``; a good cycle starts the doubling over. What the
trader exposes (``asterai paper --status``, the panel) is the count, the last error's
type and time and its message cut short; the message goes through ``redact`` (a URL's
password masked, a query string dropped), so no secret is shown or journaled.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from asterai.config import redact_url

log = logging.getLogger(__name__)

#: what is kept of an error's message
MESSAGE_CHARS = 200
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def redact(message: str) -> str:
    """``message``'s first line, cut short, each URL with its password masked and its
    query string dropped."""
    line = (message.strip().splitlines() or [""])[0]
    line = _URL.sub(lambda m: redact_url(m.group(0).split("?", 1)[0]), line)
    return line[:MESSAGE_CHARS]


@dataclass(slots=True)
class ErrorCount:
    """The unexpected errors one trader caught, and the backoff before each retry."""

    first_s: float = 1.0
    max_s: float = 300.0
    count: int = 0  # every error caught since the trader started
    streak: int = 0  # in a row, since the last good cycle
    last_type: str | None = None
    last_message: str | None = None
    last_ms: int | None = None
    _logged: set[str] = field(default_factory=set)

    def record(self, err: BaseException, now_ms: int) -> float:
        """Count ``err`` and log it; the seconds to wait before trying again."""
        self.count += 1
        self.streak += 1
        kind = type(err).__name__
        self.last_type, self.last_message, self.last_ms = kind, redact(str(err)), now_ms
        wait = self.delay()
        if kind not in self._logged:
            self._logged.add(kind)
            log.error("paper trading: unexpected %s (retrying in %.3g s)", kind, wait,
                      exc_info=err)  # fmt: skip
        else:
            log.warning("paper trading: %s again (%d errors so far): %s; retrying in %.3g s",
                        kind, self.count, self.last_message, wait)  # fmt: skip
        return wait

    def delay(self) -> float:
        """``first_s`` doubled for each error in a row after the first, at most ``max_s``."""
        if self.streak == 0:
            return 0.0
        return min(self.max_s, self.first_s * 2.0 ** min(self.streak - 1, 60))

    def ok(self) -> None:
        """A cycle went through: the next error waits ``first_s`` again."""
        self.streak = 0

    def describe(self) -> str | None:
        if self.last_type is None:
            return None
        return f"{self.last_type}: {self.last_message}"
