#!/usr/bin/env python
"""The seed guide's `python scripts/discover_aster_assets.py`: the same as `asterai discover`.

Every option of `asterai discover --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["discover", *sys.argv[1:]], prog_name="discover_aster_assets.py")
