#!/usr/bin/env python
"""The seed guide's `scripts/export_models_to_onnx.py` (phase 7): the same as `asterai export-onnx`.

Every option of `asterai export-onnx --help` works here too (--model, --data-root, ...).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from asterai.cli import run_script  # noqa: E402

if __name__ == "__main__":
    run_script("export-onnx", "export_models_to_onnx.py")
