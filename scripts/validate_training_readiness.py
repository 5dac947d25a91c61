#!/usr/bin/env python
"""The seed guide's `python scripts/validate_training_readiness.py`: the same as `asterai validate`.

Every option of `asterai validate --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("validate", "validate_training_readiness.py")
