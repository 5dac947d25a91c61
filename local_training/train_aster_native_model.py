#!/usr/bin/env python
"""The seed guide's `python local_training/train_aster_native_model.py`: the same as `asterai train aster-native`.

Every option of `asterai train aster-native --help` works here too (--device, --folds,
--batch-size, --epochs, --data-root, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("train", "train_aster_native_model.py", fixed=("aster-native",))
