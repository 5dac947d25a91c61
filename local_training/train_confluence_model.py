#!/usr/bin/env python
"""The seed guide's `python local_training/train_confluence_model.py`: the same as `asterai train confluence`.

Every option of `asterai train confluence --help` works here too (--device, --folds,
--batch-size, --epochs, --data-root, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["train", "confluence", *sys.argv[1:]], prog_name="train_confluence_model.py")
