"""The import direction of the layers (docs: ARCHITECTURE "Import direction"), checked on the
source with ``ast``: every ``import`` counts, also those inside functions and TYPE_CHECKING.

``cli, gui, demo → protocols → workflow → plugin → store → formats, engine``: a package may
import the packages to its right, never those to its left. Also checked: the file cycles that
were broken stay broken, and imports of another package's private modules stay on the list
of known exceptions (which may only shrink).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cryoweave"

# package -> the packages of ours it must not import
FORBIDDEN = {
    "store": {"plugin", "workflow", "protocols", "cli", "gui", "demo", "viewers"},
    "plugin": {"workflow", "protocols", "cli", "gui", "demo"},
    "workflow": {"protocols", "cli", "gui", "demo"},
    "formats": {"store", "plugin", "workflow", "protocols", "cli", "gui", "demo", "viewers"},
    "engine": {"store", "plugin", "workflow", "protocols", "cli", "gui", "demo", "viewers",
               "formats"},
}

# (importing file, imported private module) pairs still to remove; the list may only shrink
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n.startswith("cryoweave.")]


def _files() -> list[tuple[str, Path]]:
    return [(str(p.relative_to(SRC)), p) for p in sorted(SRC.rglob("*.py"))]


def test_no_package_imports_a_layer_above_it():
    upward = []
    for rel, path in _files():
        package = rel.split("/")[0]
        for name in _imports(path):
            target = name.split(".")[1]
            if target in FORBIDDEN.get(package.removesuffix(".py"), ()):
                upward.append(f"{rel} imports {name}")
    assert upward == []


def test_broken_file_cycles_stay_broken():
    streams = _imports(SRC / "workflow" / "_streams.py")
    writers = _imports(SRC / "store" / "writers.py")
    assert not any(n.startswith("cryoweave.workflow.runner") for n in streams)
    assert not any(n.startswith("cryoweave.store._sets") for n in writers)


def test_private_modules_of_other_packages_only_known_exceptions():
    found = set()
    for rel, path in _files():
        package = rel.split("/")[0]
        for name in _imports(path):
            parts = name.split(".")
            private = next((i for i, part in enumerate(parts[2:], 2)
                            if part.startswith("_") and not part.startswith("__")), None)
            if private is not None and parts[1] != package:
                found.add((rel, ".".join(parts[:private + 1])))
    assert found <= KNOWN_PRIVATE, sorted(found - KNOWN_PRIVATE)
    assert found >= KNOWN_PRIVATE, f"remove from KNOWN_PRIVATE: {sorted(KNOWN_PRIVATE - found)}"
