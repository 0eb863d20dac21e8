"""Conversion between item DataFrames and item-table rows (typed columns + JSON ``extra``)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Integer, Table

BOOKKEEPING = ("set_id", "seq", "extra")


def typed_columns(table: Table) -> list[str]:
    """The typed item columns of a table, ``item_id`` first, without bookkeeping columns."""
    names = [c.name for c in table.columns if c.name not in BOOKKEEPING and c.name != "item_id"]
    return ["item_id", *names]


def _plain(value: Any) -> Any:
    """A JSON-safe Python scalar (numpy scalars unwrapped, NaN → None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _column_values(series: pd.Series) -> list[Any]:
    if series.dtype.kind in "fc":
        values = series.to_numpy(dtype=np.float64)
        out: list[Any] = values.tolist()
        if np.isnan(values).any():
            out = [None if v != v else v for v in out]
        return out
    if series.dtype.kind in "iub":
        return series.to_numpy().tolist()
    return [_plain(v) if not (v is None or v is pd.NA) else None for v in series.tolist()]


def frame_to_rows(
    frame: pd.DataFrame, table: Table, *, set_id: int, seq: int
) -> list[dict[str, Any]]:
    """Rows for a bulk insert: typed columns from the frame, every other column to ``extra``."""
    typed = [c for c in typed_columns(table) if c in frame.columns]
    extra_cols = [c for c in frame.columns if c not in typed and c not in BOOKKEEPING]
    n = len(frame)
    columns = {c: _column_values(frame[c]) for c in typed}
    extras: list[Any] = [None] * n
    if extra_cols:
        extra_values = [_column_values(frame[c]) for c in extra_cols]
        extras = [
            {c: v for c, v in zip(extra_cols, row, strict=True) if v is not None} or None
            for row in zip(*extra_values, strict=True)
        ]
    names = list(columns)
    rows = []
    for i, values in enumerate(zip(*columns.values(), strict=True)):
        row = dict(zip(names, values, strict=True))
        row["set_id"] = set_id
        row["seq"] = seq
        row["extra"] = extras[i]
        rows.append(row)
    return rows


def rows_to_frame(
    rows: list[Any], columns: list[str], table: Table, *, with_extra: bool = True
) -> pd.DataFrame:
    """A DataFrame from selected rows; ``extra`` (if selected) is expanded into columns."""
    if "extra" in columns:
        idx = columns.index("extra")
        extras = [r[idx] for r in rows]
        base_cols = [c for c in columns if c != "extra"]
        data = [tuple(v for j, v in enumerate(r) if j != idx) for r in rows]
    else:
        extras, base_cols, data = [], list(columns), [tuple(r) for r in rows]
    frame = pd.DataFrame.from_records(data, columns=base_cols)
    for name in base_cols:
        col = table.columns[name]
        if isinstance(col.type, Integer):
            series = frame[name]
            if series.isna().any():
                frame[name] = series.astype("Int64")
            elif series.dtype == object or series.dtype.kind == "f":
                frame[name] = series.astype(np.int64)
        elif frame[name].dtype == object and name not in ("item_id",):
            python_types = getattr(col.type, "python_type", str)
            if python_types is float:
                frame[name] = frame[name].astype(np.float64)
    if with_extra and extras and any(e for e in extras):
        extra_frame = pd.DataFrame.from_records([e or {} for e in extras])
        extra_frame.index = frame.index
        frame = pd.concat([frame, extra_frame], axis=1)
    return frame


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=_plain)
