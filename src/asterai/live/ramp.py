"""The ramp from paper to real money: what ``asterai live`` checks before it starts.

Live trading starts only behind a paper record of the same export: the paper journal
(``data/paper/journal.sqlite``) must trade the model about to go live (the same
``model_config_sha256``), cover at least ``live.min_paper_days``, and its report
(``asterai paper --report``, ``data/paper/report/reconciliation.json``) must be of the
journal as it stands (its last bar) and reconcile with the backtest: the engine
equal on the journal's own inputs, and the backtest's inputs compared (every
difference then carries its cause). ``--override-ramp`` skips the check; the journal
records that it was skipped.
"""

from __future__ import annotations

import json
import sqlite3

from asterai.intervals import DAY_MS, iso_ms
from asterai.paper.plan import PaperSettingsError, Plan
from asterai.paths import DataPaths


class RampError(PaperSettingsError):
    """No paper record live trading may start from (exit 2, nothing sent)."""


def paper_record(plan: Plan) -> str:
    """What the paper record shows, as the live journal notes it; ``RampError`` when it
    does not allow live trading."""
    paths = DataPaths.at(plan.settings.data_root)
    need = plan.settings.live.min_paper_days
    journal = paths.paper_journal
    if not journal.exists():
        raise RampError(
            f"{journal} does not exist: live trading starts after paper trading the same "
            f"export for {need:g} days (`asterai paper`, then `asterai paper --report`), "
            "or with --override-ramp"
        )
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        n, last = conn.execute("SELECT COUNT(*), MAX(open_ms) FROM bars").fetchone()
    finally:
        conn.close()
    want = plan.account.facts.get("model_config_sha256")
    have = meta.get("facts", {}).get("model_config_sha256")
    if have != want:
        raise RampError(
            f"{journal} paper-traded another export (model_config_sha256 {str(have)[:12]}, "
            f"the one about to go live is {str(want)[:12]}): paper-trade this one first"
        )
    days = n * int(meta["step_ms"]) / DAY_MS
    if days < need:
        raise RampError(
            f"{journal} covers {days:.1f} days; live.min_paper_days is {need:g}: paper-trade "
            "longer, or start with --override-ramp"
        )
    report = paths.paper / "report" / "reconciliation.json"
    if not report.exists():
        raise RampError(f"{report} does not exist: run `asterai paper --report` first")
    rec = json.loads(report.read_text())
    if rec.get("window", [None, None])[1] != iso_ms(int(last)):
        raise RampError(
            f"{report} reports up to {rec.get('window', [None, None])[1]}, the journal goes "
            f"on to {iso_ms(int(last))}: run `asterai paper --report` again"
        )
    if not rec.get("engine_equal"):
        raise RampError(
            f"{report}: the engine did not reproduce the paper journal "
            f"(largest difference {rec.get('engine_max_diff')}): a defect to report, not "
            "a record to trade on"
        )
    if str(rec.get("batch", "")).startswith("not compared"):
        raise RampError(
            f"{report}: the paper period was not compared with the backtest "
            f"({rec['batch']}): collect, validate and build features over it, then run "
            "`asterai paper --report` again"
        )
    return (f"paper record: {days:.1f} days to {iso_ms(int(last))}, engine equal, "
            f"backtest {rec['batch']}")  # fmt: skip
