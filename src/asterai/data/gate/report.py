"""The gate's report: the verdict, the three groups of symbols, JSON and the terminal table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asterai import __version__
from asterai.config import Settings
from asterai.data.gate import cross, funding, grids, values
from asterai.data.gate.model import ADVICE, CONTAMINATED, EXCLUDED, RULES, TRAINABLE, SeriesVerdict
from asterai.intervals import iso_ms
from asterai.paths import DataPaths

OUTCOME_STYLE = {TRAINABLE: "green", EXCLUDED: "yellow", CONTAMINATED: "red"}


@dataclass(slots=True)
class GateReport:
    settings: Settings
    series: list[SeriesVerdict] = field(default_factory=list)
    symbols: dict[str, dict[str, Any]] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    user_excluded: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    universe: dict[str, Any] | None = None

    def _with(self, outcome: str) -> list[str]:
        return sorted(s for s, v in self.symbols.items() if v["outcome"] == outcome)

    @property
    def trainable(self) -> list[str]:
        return self._with(TRAINABLE)

    @property
    def excluded(self) -> list[str]:
        return self._with(EXCLUDED)

    @property
    def contaminated(self) -> list[str]:
        return self._with(CONTAMINATED)

    @property
    def contaminated_files(self) -> list[dict[str, Any]]:
        return [
            {
                "file": v.file,
                "rules": [f.rule for f in v.findings if f.outcome == CONTAMINATED],
                "message": next(f.message for f in v.findings if f.outcome == CONTAMINATED),
            }
            for v in self.series
            if v.outcome == CONTAMINATED
        ]

    @property
    def ok(self) -> bool:
        return not self.reasons()

    def refused(self, symbol: str) -> bool:
        return self.symbols.get(symbol, {}).get("outcome") != TRAINABLE

    def why(self, symbol: str) -> str:
        """One line: the symbol's outcome and its failed rules."""
        info = self.symbols.get(symbol)
        if info is None:
            return f"{symbol}: not collected"
        return f"{symbol}: {info['outcome']} ({', '.join(info['failed_rules'])})"

    def reasons(self) -> list[str]:
        """Why the verdict is NOT READY (empty when ready)."""
        out = list(self.problems)
        for item in self.contaminated_files:
            out.append(
                f"contaminated: {Path(item['file']).name} ({', '.join(item['rules'])}): "
                f"{item['message']}"
            )
        for symbol in self.required:
            if not self.refused(symbol):
                continue
            if symbol in self.user_excluded:
                out.append(
                    f"{symbol} is required but you excluded it (--exclude / exclude_symbols)"
                )
            else:
                refusals = self.symbols.get(symbol, {}).get("refusals") or []
                first = f": {refusals[0]['message']}" if refusals else ""
                out.append(f"{symbol} is required but {self.why(symbol).split(': ', 1)[1]}{first}")
        minimum = self.settings.quality.min_trainable_symbols
        if self.symbols and len(self.trainable) < minimum:
            out.append(
                f"{len(self.trainable)} trainable symbol(s), fewer than "
                f"quality.min_trainable_symbols = {minimum}: collect more symbols or lower it"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": iso_ms(int(time.time() * 1000)),
            "asterai_version": __version__,
            "data_root": str(self.settings.data_root),
            "ok": self.ok,
            "verdict": "ready" if self.ok else "not ready",
            "reasons": self.reasons(),
            "required_symbols": self.required,
            "trainable_symbols": self.trainable,
            "excluded_symbols": self.excluded,
            "contaminated_symbols": self.contaminated,
            "contaminated_files": self.contaminated_files,
            "user_excluded_symbols": self.user_excluded,
            "problems": self.problems,
            "outcomes": {
                TRAINABLE: "passes every rule",
                EXCLUDED: "real but unfit (quality, tradeability, or your choice): left out; "
                + ADVICE[EXCLUDED],
                CONTAMINATED: "not what the exchange sent: stops every later stage; "
                + ADVICE[CONTAMINATED],
            },
            "rules": list(RULES),
            "thresholds": {
                "max_missing_share": self.settings.quality.max_missing_share,
                "min_trainable_symbols": self.settings.quality.min_trainable_symbols,
                "outlier_z": values.OUTLIER_Z,
                "outlier_max_share": values.OUTLIER_MAX_SHARE,
                "outlier_min_count": values.OUTLIER_MIN_COUNT,
                "dead_zero_volume_share": values.DEAD_ZERO_VOLUME_SHARE,
                "open_outside_max_share": values.OPEN_OUTSIDE_MAX_SHARE,
                "high_low_tolerance": cross.HIGH_LOW_TOLERANCE,
                "grid_density": grids.DENSITY,
                "grid_min_off_bars": grids.MIN_OFF_BARS,
                "grid_min_regime_bars": grids.MIN_REGIME_BARS,
                "default_funding_cap": funding.DEFAULT_FUNDING_CAP,
            },
            "quality_score_formula": "0 if refused, else 100 x (1 - missing share) x "
            "(1 - invalid-bar share) x (1 - outlier share)",
            "symbols": self.symbols,
            "series": [v.to_json() for v in self.series],
            "universe": self.universe,
            "environment": self.environment,
        }


def render(report: GateReport, console: Any) -> None:
    """The terminal table: every symbol, grouped trainable / excluded / contaminated."""
    from rich.table import Table

    table = Table(title="training readiness", show_lines=False)
    for col in ("symbol", "outcome", "quality", "rule", "finding (file, rule, first rows)"):
        table.add_column(col, overflow="fold")
    for outcome in (CONTAMINATED, EXCLUDED, TRAINABLE):
        names = [s for s, v in report.symbols.items() if v["outcome"] == outcome]
        for symbol in sorted(names):
            info = report.symbols[symbol]
            style = OUTCOME_STYLE[outcome]
            # every refusal on its own line, contaminating ones first, never cut short
            refusals = sorted(info["refusals"], key=lambda r: r["outcome"] != CONTAMINATED)
            first = True
            for r in refusals or [None]:
                table.add_row(
                    symbol if first else "",
                    (
                        f"[{style}]{outcome}[/]"
                        + (" (required)" if symbol in report.required else "")
                    )
                    if first
                    else "",
                    f"{info['quality_score']:.1f}" if first else "",
                    "" if r is None else f"[{OUTCOME_STYLE[r['outcome']]}]{r['rule']}[/]",
                    "" if r is None else r["message"],
                )
                first = False
        if names and outcome != TRAINABLE:
            table.add_section()
    console.print(table)
    env = report.environment
    if env:
        gpu = env.get("gpu", {})
        disk = env.get("disk", {})
        console.print(
            f"python {env.get('python')}; {gpu.get('note')}; free disk "
            f"{disk.get('free_bytes', 0) / 1e9:.1f} GB (collection needs about "
            f"{disk.get('estimated_collection_bytes', 0) / 1e9:.2f} GB)"
        )
    counts = (
        f"{len(report.trainable)} trainable, {len(report.excluded)} excluded"
        f"{f' ({len(report.user_excluded)} by you)' if report.user_excluded else ''}, "
        f"{len(report.contaminated)} contaminated"
    )
    console.print(f"{counts}; verdict: {'READY' if report.ok else 'NOT READY'}")
    if report.excluded:
        console.print(
            f"[yellow]excluded (left out of features, training and backtest):[/] "
            f"{', '.join(report.excluded)}. {ADVICE[EXCLUDED]}"
        )
    if report.contaminated:
        console.print(
            f"[red]contaminated files stop every later stage:[/] "
            f"{', '.join(Path(f['file']).name for f in report.contaminated_files)}. "
            f"{ADVICE[CONTAMINATED]}"
        )
    if report.universe:
        console.print(
            f"universe: {report.universe['path']} ({report.universe['rows']} rows, "
            f"{report.universe['tradeable_share']:.0%} tradeable)"
        )
    console.print(f"report: {DataPaths.at(report.settings.data_root).validation}")
