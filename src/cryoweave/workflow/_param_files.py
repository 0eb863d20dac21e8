"""Reading params and workflow files strictly: UTF-8 text, no key given twice in one object.

JSON and YAML parsers keep the last of duplicated keys silently, so a params file that sets
``box_px`` twice runs with a value its author may not have meant; both are refused here, with
the file and the key named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cryoweave.errors import InputError


def read_text_utf8(path: Path, what: str) -> str:
    """The text of ``path`` (UTF-8, a leading BOM allowed); InputError naming the file and the
    first bad byte otherwise. ``what`` names the file's role in messages ('params file')."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror}); check the path "
                         "and its permissions") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} "
                         f"at line {line}); save it as UTF-8") from exc


def _refuse_duplicates(path: Path) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InputError(f"{path}: key {key!r} is given twice in one object; keep one "
                                 "(JSON would silently use the last)")
            result[key] = value
        return result

    return hook


def parse_json(path: Path, text: str) -> Any:
    """JSON of ``text`` (read from ``path``) with duplicate keys refused; json.JSONDecodeError
    for invalid JSON."""
    return json.loads(text, object_pairs_hook=_refuse_duplicates(path))


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # '<<: *anchor' keys are overridden by explicit ones, as YAML specifies
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key: SafeLoader reports it
            break
        if duplicate:
            raise InputError(f"{loader.name}: key {key!r} is given twice in one mapping (line "
                             f"{key_node.start_mark.line + 1}); keep one")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(path: Path, text: str) -> Any:
    """YAML of ``text`` (read from ``path``) with duplicate keys refused; yaml.YAMLError for
    invalid YAML."""
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
