#!/usr/bin/env python
"""The seed guide's `python local_training/train_aster_native_model.py`: the same as `asterai train aster-native`.

Every option of `asterai train aster-native --help` works here too (--device, --folds,
--batch-size, --epochs, --data-root, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["train", "aster-native", *sys.argv[1:]], prog_name="train_aster_native_model.py")
