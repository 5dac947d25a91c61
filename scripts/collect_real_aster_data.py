#!/usr/bin/env python
"""The seed guide's `python scripts/collect_real_aster_data.py`: the same as `asterai collect`.

Every option of `asterai collect --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["collect", *sys.argv[1:]], prog_name="collect_real_aster_data.py")
