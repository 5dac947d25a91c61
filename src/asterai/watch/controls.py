"""The controls a person may work from outside a running trader: the kill switch and the
daily pause, asked for by writing a file the trader looks for at each poll (a stopped
trader at its next start), so they work the same from ``asterai paper --kill``, ``asterai
live --kill`` and the dashboard's buttons, and outlive a crash of either side.

- **Kill** (``KILL``): paper trading exits every position at the next bar's open and
  stops for good; live trading cancels the bot's orders, closes its positions at market
  and stops for good.
- **Pause** (``PAUSE``): no new entry until the next UTC day (exits, stops and targets
  go on); the trader takes it at its next close, journals it (``pause requested``,
  ``paused``) and removes the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from asterai.atomic import write_text
from asterai.intervals import iso_ms
from asterai.paper.journal import read_only


class ControlRefused(RuntimeError):
    """The control cannot apply: no account there, or its journal is final."""


class AlreadyFinal(ControlRefused):
    """The kill switch has already ended the account: nothing is left to kill or pause."""


@dataclass(frozen=True, slots=True)
class Asked:
    file: Path
    message: str


#: the event that makes a journal final: paper's kill switch bar; for live, the
#: positions closed on the exchange (its shadow's kill switch bar comes before that, and
#: a crash between the two leaves the kill switch still to finish)
FINAL = {"paper": "kill switch", "live": "live killed"}


def final(journal: Path, kind: str) -> bool:
    """Whether the kill switch already ended the account whose journal is ``journal``."""
    with read_only(journal) as conn:
        return conn.execute("SELECT 1 FROM events WHERE kind = ? LIMIT 1",
                            (FINAL[kind],)).fetchone() is not None  # fmt: skip


def _check(journal: Path, kind: str) -> None:
    if not journal.exists():
        raise ControlRefused(f"{journal} does not exist: no {kind} account here")
    if final(journal, kind):
        raise AlreadyFinal(f"{journal}: the kill switch has already stopped this account")


def ask_kill(journal: Path, kill: Path, kind: str, who: str) -> Asked:
    """The kill switch for the account of ``journal`` (``kind``: paper or live), asked by
    ``who``: its KILL file written."""
    _check(journal, kind)
    write_text(kill, f"{who} at {iso_ms(int(time.time() * 1000))}\n")
    what = ("exits every position at the next bar's open" if kind == "paper" else
            "cancels the bot's orders, closes its positions at market")  # fmt: skip
    return Asked(kill, f"kill switch asked ({kill}): a running `asterai {kind}` {what} and "
                       "stops; with none running, the next start does")  # fmt: skip


def ask_pause(journal: Path, pause: Path, kind: str, who: str) -> Asked:
    """No new entry until the next UTC day, asked by ``who``: the PAUSE file written."""
    _check(journal, kind)
    write_text(pause, f"{who} at {iso_ms(int(time.time() * 1000))}\n")
    return Asked(pause, f"pause asked ({pause}): a running `asterai {kind}` opens nothing "
                        "more until the next UTC day from its next close; exits go on")  # fmt: skip


def ask(which: str, journal: Path, kill: Path, pause: Path, kind: str, who: str) -> Asked:
    """``which`` (``kill`` or ``pause``) for the account of ``journal``."""
    if which == "kill":
        return ask_kill(journal, kill, kind, who)
    return ask_pause(journal, pause, kind, who)
