#!/usr/bin/env python
"""The seed guide's `python scripts/discover_aster_assets.py`: the same as `asterai discover`.

Every option of `asterai discover --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("discover", "discover_aster_assets.py")
