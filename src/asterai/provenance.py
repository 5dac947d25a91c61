"""Where a parquet file keeps its provenance record, and how to read it back.

Ground floor: both the store (which writes the record) and the exchange
layer's replay (which reads its clock from it) import this, so neither has to
import the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["PROVENANCE_KEY", "decode_provenance"]

#: Schema-metadata key of the JSON provenance record (DESIGN.md, "Provenance").
PROVENANCE_KEY = b"asterai.provenance"


def decode_provenance(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any] | None:
    """The provenance record held in parquet schema ``metadata``.

    ``None`` when there is no record or it is not a JSON object; a record that
    is not valid JSON raises ``ValueError`` (callers decide whether that is
    corruption or merely "unverified").
    """
    raw = (metadata or {}).get(PROVENANCE_KEY)
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None
