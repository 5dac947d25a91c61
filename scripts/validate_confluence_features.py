#!/usr/bin/env python
"""The seed guide's `python scripts/validate_confluence_features.py`: the same as `asterai features`.

Every option of `asterai features --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["features", *sys.argv[1:]], prog_name="validate_confluence_features.py")
