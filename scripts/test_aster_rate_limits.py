#!/usr/bin/env python
"""The seed guide's `python scripts/test_aster_rate_limits.py`: the same as `asterai ratelimit`.

Every option of `asterai ratelimit --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["ratelimit", *sys.argv[1:]], prog_name="test_aster_rate_limits.py")
