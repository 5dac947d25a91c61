#!/usr/bin/env python
"""The seed guide's `python scripts/run_complete_pipeline.py`: the same as `asterai pipeline`.

Every option of `asterai pipeline --help` works here too.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["pipeline", *sys.argv[1:]], prog_name="run_complete_pipeline.py")
