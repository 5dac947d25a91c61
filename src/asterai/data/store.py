"""The parquet store: klines and funding series with their provenance record.

``write_series`` validates on the way in and writes atomically; ``read_series``
validates on the way out and casts dtypes. Timestamps are epoch-ms UTC on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from asterai import atomic
from asterai.provenance import PROVENANCE_KEY, decode_provenance

Kind = Literal["klines", "funding"]

_TS = pa.timestamp("ms", tz="UTC")

KLINE_SCHEMA = pa.schema(
    [
        pa.field("open_time", _TS, nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("quote_volume", pa.float64(), nullable=False),
        pa.field("trades", pa.int64(), nullable=True),
        pa.field("taker_buy_base", pa.float64(), nullable=True),
        pa.field("taker_buy_quote", pa.float64(), nullable=True),
        pa.field("close_time", _TS, nullable=False),
    ]
)

FUNDING_SCHEMA = pa.schema(
    [
        pa.field("funding_time", _TS, nullable=False),
        pa.field("funding_rate", pa.float64(), nullable=False),
        pa.field("mark_price", pa.float64(), nullable=True),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {"klines": KLINE_SCHEMA, "funding": FUNDING_SCHEMA}
TIME_COLUMN: dict[str, str] = {"klines": "open_time", "funding": "funding_time"}
KLINE_COLUMNS = tuple(KLINE_SCHEMA.names)
FUNDING_COLUMNS = tuple(FUNDING_SCHEMA.names)


class StoreError(Exception):
    """A series that cannot be stored or loaded; names the file, the rule and the row."""

    def __init__(self, path: str | Path, rule: str, detail: str, row: int | None = None) -> None:
        where = f" (row {row})" if row is not None else ""
        super().__init__(f"{path}: {rule}{where}: {detail}")
        self.path = Path(path)
        self.rule = rule
        self.row = row


class CorruptFile(StoreError):
    """An existing file that cannot be read as a parquet series."""


@dataclass(frozen=True, slots=True)
class Series:
    frame: pd.DataFrame
    provenance: dict[str, Any] | None


def _types_mapper(kind: Kind):
    def mapper(pa_type: pa.DataType):
        if pa_type == pa.int64():
            return pd.Int64Dtype()
        return None

    return mapper


def _to_table(frame: pd.DataFrame, kind: Kind, path: Path) -> pa.Table:
    schema = SCHEMAS[kind]
    missing = [c for c in schema.names if c not in frame.columns]
    extra = [c for c in frame.columns if c not in schema.names]
    if missing or extra:
        raise StoreError(path, "schema", f"missing columns {missing}, unexpected columns {extra}")
    try:
        table = pa.Table.from_pandas(frame[list(schema.names)], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        raise StoreError(path, "schema", f"columns do not match the {kind} schema: {err}") from err
    _check_time_column(table.column(TIME_COLUMN[kind]).to_numpy(), path, kind)
    return table


def _check_time_column(times: np.ndarray, path: Path, kind: Kind) -> None:
    ints = times.astype("datetime64[ms]").astype(np.int64)
    if len(ints) > 1:
        diffs = np.diff(ints)
        bad = np.flatnonzero(diffs <= 0)
        if len(bad):
            row = int(bad[0]) + 1
            rule = "duplicate timestamp" if diffs[bad[0]] == 0 else "timestamps not sorted"
            raise StoreError(
                path, rule, f"{TIME_COLUMN[kind]} at row {row} is not after row {row - 1}", row
            )


def write_series(
    path: str | Path, frame: pd.DataFrame, provenance: dict[str, Any], kind: Kind
) -> None:
    """Validate ``frame`` against the ``kind`` schema and write it atomically with ``provenance``."""
    path = Path(path)
    table = _to_table(frame, kind, path)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode("utf-8")
    table = table.replace_schema_metadata(meta)
    atomic.write_with(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def read_provenance(path: str | Path, schema: pa.Schema | None = None) -> dict[str, Any] | None:
    """The provenance record of a stored file (or of its already-read ``schema``), or ``None``."""
    path = Path(path)
    if schema is None:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as err:
            raise CorruptFile(path, "unreadable parquet", str(err)) from err
    try:
        return decode_provenance(schema.metadata)
    except ValueError as err:
        raise CorruptFile(path, "provenance", f"not valid JSON: {err}") from err


def read_series(path: str | Path, kind: Kind) -> Series:
    """Load a stored series, validated and cast to the documented dtypes."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise CorruptFile(
            path, "unreadable parquet", f"{err}. Move the file aside and collect again."
        ) from err
    provenance = read_provenance(path, table.schema)
    schema = SCHEMAS[kind]
    missing = [c for c in schema.names if c not in table.column_names]
    if missing:
        raise CorruptFile(path, "schema", f"missing columns {missing}")
    try:
        table = table.select(list(schema.names)).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise CorruptFile(path, "schema", f"cannot cast to the {kind} schema: {err}") from err
    _check_time_column(table.column(TIME_COLUMN[kind]).to_numpy(), path, kind)
    frame = table.to_pandas(types_mapper=_types_mapper(kind))
    return Series(frame=frame, provenance=provenance)


def to_epoch_ms(values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """UTC timestamps (any resolution) to int64 epoch milliseconds."""
    arr = pd.DatetimeIndex(values)
    if arr.tz is None:
        arr = arr.tz_localize("UTC")
    return arr.as_unit("ms").asi8.astype(np.int64)


def from_epoch_ms(values: np.ndarray | list[int]) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(values, dtype=np.int64), unit="ms", utc=True).as_unit("ms")
