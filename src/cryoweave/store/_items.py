"""Conversion between item DataFrames and item-table rows (typed columns + JSON ``extra``)."""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Integer, Table

if TYPE_CHECKING:  # numpy and pandas are imported on use: `cryoweave runs` needs neither
    import pandas as pd

BOOKKEEPING = ("set_id", "seq", "extra")


def typed_columns(table: Table) -> list[str]:
    """The typed item columns of a table, ``item_id`` first, without bookkeeping columns."""
    names = [c.name for c in table.columns if c.name not in BOOKKEEPING and c.name != "item_id"]
    return ["item_id", *names]


def _plain(value: Any) -> Any:
    """A JSON-safe Python scalar (numpy scalars unwrapped, NaN → None)."""
    np = sys.modules.get("numpy")  # no numpy value exists before numpy is imported
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _column_values(series: pd.Series) -> list[Any]:
    import numpy as np
    import pandas as pd

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
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and row tuples for a bulk insert.

    Typed columns come from the frame; every other column goes to ``extra``, encoded as JSON
    text here (the driver inserts it as is).
    """
    typed = [c for c in typed_columns(table) if c in frame.columns]
    extra_cols = [c for c in frame.columns if c not in typed and c not in BOOKKEEPING]
    n = len(frame)
    dumps = json.JSONEncoder(default=_plain).encode
    columns = [_column_values(frame[c]) for c in typed]
    for index, name in enumerate(typed):
        if isinstance(table.columns[name].type, JSON):
            columns[index] = [None if v is None else dumps(v) for v in columns[index]]
    extras: list[Any] = [None] * n
    if extra_cols:
        extra_values = [_column_values(frame[c]) for c in extra_cols]
        extras = []
        for row in zip(*extra_values, strict=True):
            record = {c: v for c, v in zip(extra_cols, row, strict=True) if v is not None}
            extras.append(dumps(record) if record else None)
    names = [*typed, "set_id", "seq", "extra"]
    constant = (set_id, seq)
    rows = [(*values, *constant, extra)
            for values, extra in zip(zip(*columns, strict=True) if columns else [()] * n,
                                     extras, strict=True)]
    return names, rows


def bulk_insert(conn: Any, table: Table, names: list[str], rows: list[tuple[Any, ...]],
                chunk: int = 50000) -> None:
    """``executemany`` straight on the driver (SQLite and PostgreSQL paramstyles)."""
    if not rows:
        return
    style = conn.dialect.paramstyle
    marker = "?" if style == "qmark" else "%s"
    sql = (f"INSERT INTO {table.name} ({', '.join(names)}) "
           f"VALUES ({', '.join([marker] * len(names))})")
    for start in range(0, len(rows), chunk):
        conn.exec_driver_sql(sql, rows[start:start + chunk])


def decode_json_column(values: list[Any]) -> list[Any]:
    """JSON values fetched as text, decoded in one call (already-decoded values pass)."""
    if not values or not any(isinstance(v, str) for v in values):
        return list(values)
    return json.loads("[" + ",".join(v if isinstance(v, str) else json.dumps(v)
                                     for v in values) + "]")


def rows_to_frame(
    rows: list[Any], columns: list[str], table: Table, *, with_extra: bool = True
) -> pd.DataFrame:
    """A DataFrame from selected rows; ``extra`` (if selected) is expanded into columns.

    Columns are built once each with the dtype of the table column (None → NaN for floats,
    nullable ``Int64`` for integers with NULLs).
    """
    import numpy as np
    import pandas as pd

    transposed = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    data: dict[str, Any] = {}
    extras: list[Any] = []
    for name, values in zip(columns, transposed, strict=True):
        if name == "extra":
            extras = decode_json_column(list(values))
            continue
        column_type = table.columns[name].type
        if isinstance(column_type, Integer):
            if None in values:
                data[name] = pd.array(values, dtype="Int64")
            else:
                data[name] = np.array(values, dtype=np.int64)
        elif getattr(column_type, "python_type", None) is float:
            data[name] = np.array(values, dtype=np.float64)
        else:
            data[name] = np.array(values, dtype=object)
    frame = pd.DataFrame(data)
    if with_extra and any(e for e in extras):
        extra_frame = pd.DataFrame.from_records([e or {} for e in extras])
        extra_frame.index = frame.index
        frame = pd.concat([frame, extra_frame], axis=1)
    return frame


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=_plain)
