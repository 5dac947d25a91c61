#!/usr/bin/env python
"""The seed guide's `python scripts/backtest_confluence_strategy.py`: the same as `asterai backtest`.

Every option of `asterai backtest --help` works here too (--model, --data-root, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("backtest", "backtest_confluence_strategy.py")
