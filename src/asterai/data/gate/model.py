"""The gate's outcome model: findings, per-series verdicts, and the three outcomes.

A rule returns a :class:`Finding` (``pass``, ``warn``, ``fail`` or ``skip``). A failing
finding also says what the failure means, its *outcome*:

``excluded``
    The data is what the exchange sent but is not fit to train or trade on (a dead
    market, too short or too incomplete a history, outliers beyond the limit, a filter
    inconsistency that is not tampering, a symbol the user leaves out).
    The symbol is left out of features, training and the backtest; the rest go on.
``contaminated``
    Evidence that a file is not what the exchange sent (missing or foreign provenance,
    provenance that does not match the file, schema corruption, impossible values, a
    resampled or duplicated copy of another series, timeframes that disagree, off-grid
    tampering signatures). One such file stops every later stage until it is removed or
    collected again: a folder that holds one forged file cannot be trusted by parts.

A symbol is ``contaminated`` when any of its files is, else ``excluded`` when any rule
excludes it, else ``trainable``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from asterai.intervals import iso_ms

TRAINABLE, EXCLUDED, CONTAMINATED = "trainable", "excluded", "contaminated"
OUTCOMES = (TRAINABLE, EXCLUDED, CONTAMINATED)

RULES = (
    "provenance",
    "schema",
    "completeness",
    "sanity",
    "outliers",
    "tradeability",
    "tick_grid",
    "lot_step",
    "timeframes",
    "duplicate",
    "funding",
    "user",
)

#: What each outcome asks the user to do.
ADVICE = {
    CONTAMINATED: "remove the file or collect it again (`asterai collect`); if it was the "
    "exchange's own data, report it",
    EXCLUDED: "nothing to do: the symbol is left out; collect more history, or `--exclude` it "
    "to say so yourself",
}

MAX_ROWS_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's outcome for one file, with the first offending rows.

    ``outcome`` is set on failures only: ``excluded`` or ``contaminated``. ``regimes``
    lists the grid regimes a tick or lot rule found (start, end, unit, bars).
    """

    rule: str
    status: str  # pass | warn | fail | skip
    message: str
    rows: tuple[int, ...] = ()
    times: tuple[str, ...] = ()
    outcome: str | None = None
    regimes: tuple[dict[str, Any], ...] = ()


def passed(rule: str, message: str = "ok", **extra: Any) -> Finding:
    return Finding(rule, "pass", message, **extra)


def skipped(rule: str, message: str) -> Finding:
    return Finding(rule, "skip", message)


def failed(rule: str, outcome: str, message: str) -> Finding:
    return Finding(rule, "fail", message, outcome=outcome)


def at_rows(
    rule: str,
    status: str,
    message: str,
    mask: np.ndarray,
    times_ms: np.ndarray | None,
    outcome: str | None = None,
    regimes: tuple[dict[str, Any], ...] = (),
) -> Finding:
    """A finding naming the first rows of ``mask`` (and their open times) in its message."""
    if status == "fail" and outcome is None:
        raise ValueError(f"a failing {rule} finding needs an outcome")  # a programming error
    rows = np.flatnonzero(mask)[:MAX_ROWS_SHOWN]
    shown = tuple(int(r) for r in rows)
    stamps: tuple[str, ...] = ()
    if times_ms is not None and len(times_ms):
        stamps = tuple(iso_ms(int(times_ms[r])) or "" for r in rows if r < len(times_ms))
    where = f"; first rows {list(shown)}" + (f" ({', '.join(stamps)})" if stamps else "")
    return Finding(rule, status, message + where, shown, stamps, outcome, regimes)


@dataclass(slots=True)
class SeriesVerdict:
    symbol: str
    interval: str  # kline interval or "funding"
    file: str
    rows: int = 0
    first_time: str | None = None
    last_time: str | None = None
    missing_share: float | None = None
    longest_gap_bars: int | None = None
    invalid_share: float = 0.0
    outlier_share: float = 0.0
    quality_score: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return any(f.status == "fail" for f in self.findings)

    @property
    def outcome(self) -> str:
        outcomes = {f.outcome for f in self.findings if f.status == "fail"}
        if CONTAMINATED in outcomes:
            return CONTAMINATED
        return EXCLUDED if outcomes else TRAINABLE

    @property
    def failed_rules(self) -> list[str]:
        return sorted({f.rule for f in self.findings if f.status == "fail"}, key=RULES.index)

    def add(self, finding: Finding) -> None:
        if finding.status == "fail" and finding.outcome not in (EXCLUDED, CONTAMINATED):
            raise ValueError(f"failing finding without an outcome: {finding}")
        self.findings.append(finding)

    def score(self) -> None:
        """0 when refused, else 100 x (1 - missing) x (1 - invalid bars) x (1 - outliers)."""
        if self.refused:
            self.quality_score = 0.0
            return
        missing = self.missing_share or 0.0
        self.quality_score = round(
            100 * (1 - missing) * (1 - self.invalid_share) * (1 - self.outlier_share), 3
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome
        data["verdict"] = "refused" if self.refused else "accepted"
        data["failed_rules"] = self.failed_rules
        data["findings"] = [asdict(f) for f in self.findings]
        return data
