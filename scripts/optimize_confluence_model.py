#!/usr/bin/env python
"""The seed guide's `scripts/optimize_confluence_model.py` (phase 6): the same as `asterai optimize`.

Every option of `asterai optimize --help` works here too (--trials, --workers, --storage, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("optimize", "optimize_confluence_model.py")
