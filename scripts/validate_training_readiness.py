#!/usr/bin/env python
"""The seed guide's `python scripts/validate_training_readiness.py`: the same as `asterai validate`.

Every option of `asterai validate --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["validate", *sys.argv[1:]], prog_name="validate_training_readiness.py")
