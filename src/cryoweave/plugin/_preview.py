"""``SetPreview``: what an import will produce, read from file headers before any run exists.

An importer's :meth:`Protocol.preview` returns one per output, so that the checks of the
protocol consuming a path input (``check_inputs``) see the box, pixel size and item count of
the file exactly as they would see them on an imported set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas loads on use: `cryoweave form` imports the plugin API without it
    import pandas as pd


def _empty_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame()


@dataclass
class SetPreview:
    """The read API of a set handle that ``check_inputs`` uses, filled from file metadata.

    ``items``: the items' typed columns known before import (may be a subset of the set's);
    ``optics_groups``: the optics table (RELION ``data_optics``) when the set has one.
    """

    kind: str
    properties: dict[str, Any] = field(default_factory=dict)
    items: pd.DataFrame = field(default_factory=_empty_frame)
    optics_groups: pd.DataFrame = field(default_factory=_empty_frame)
    state: str = "closed"

    @property
    def is_closed(self) -> bool:
        return self.state == "closed"

    def count(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return self.count()

    def optics(self) -> pd.DataFrame:
        return self.optics_groups.copy()

    def to_frame(self, *, with_extra: bool = True, columns: Sequence[str] | None = None
                 ) -> pd.DataFrame:
        if columns is None:
            return self.items.copy()
        return self.items.reindex(columns=list(columns))
