"""Run labels: what may name a run (the runs table's ``label`` column).

Kept apart from the runtime so that ``runs`` and ``show`` check the labels they print without
importing it.
"""

from __future__ import annotations

import unicodedata

MAX_LABEL_LENGTH = 200  # the width of runs.label
# control and format characters (escape sequences, bidirectional overrides) and line breaks
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def label_problem(label: str | None) -> str | None:
    """Why ``label`` cannot name a run (None when it can): it is printed by `runs` and `show`
    and typed back by users, so it is printable text of at most MAX_LABEL_LENGTH characters."""
    if label is None:
        return None
    if not isinstance(label, str):
        return f"run label {label!r}: expected a string"
    bad = sorted({ch for ch in label if unicodedata.category(ch) in _UNPRINTABLE_CATEGORIES})
    if bad:
        shown = ", ".join(f"U+{ord(ch):04X}" for ch in bad)
        return (f"run label {label!r} contains control or invisible characters ({shown}); "
                "use printable characters only")
    if label.isdigit():
        return (f"run label {label!r} has only digits and would be taken for a run id; "
                f"add a letter (e.g. 'run{label}')")
    if len(label) > MAX_LABEL_LENGTH:
        return (f"run label {label[:40]!r}… has {len(label)} characters; use at most "
                f"{MAX_LABEL_LENGTH}")
    return None
