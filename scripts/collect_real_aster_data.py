#!/usr/bin/env python
"""The seed guide's `python scripts/collect_real_aster_data.py`: the same as `asterai collect`.

Every option of `asterai collect --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("collect", "collect_real_aster_data.py")
