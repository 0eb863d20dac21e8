"""Plugin discovery through the ``cryoweave.plugins`` entry-point group.

A plugin package exposes a :class:`Plugin` record; the built-in protocols register through the
same entry point a third-party plugin uses (see pyproject.toml).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryoweave.errors import ParamError
from cryoweave.plugin._protocol import Protocol

ENTRY_POINT_GROUP = "cryoweave.plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plugin:
    """A plugin: its name (the identity prefix), version and protocols.

    A protocol is its class or a reference ``"module:ClassName"``; a reference is imported when
    the registry is asked for that protocol (or for all of them), which keeps light commands
    such as ``cryoweave form NAME`` from importing every protocol's dependencies.
    """

    name: str
    version: str
    protocols: Sequence[type[Protocol] | str] = field(default_factory=tuple)
    description: str = ""

    def protocol_classes(self) -> list[type[Protocol]]:
        """The protocol classes, references imported."""
        return [_resolve(entry) if isinstance(entry, str) else entry for entry in self.protocols]


def _resolve(reference: str) -> type[Protocol]:
    module, _, attr = reference.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Protocol)):
        raise TypeError(f"{reference} is not a Protocol class")
    return cls


class Registry:
    """All protocols of all discovered plugins, by identity, class name and old names.

    Protocols given by reference are imported on demand: ``get("Downsample")`` imports the
    references named ``Downsample`` (any case) and, when nothing matches, all the others
    (old names are only known once a class is imported).
    """

    def __init__(self, plugins: Sequence[Plugin]):
        self.plugins = list(plugins)
        self._by_identity: dict[str, type[Protocol]] = {}
        self._by_name: dict[str, list[type[Protocol]]] = {}
        self._pending: dict[str, list[tuple[Plugin, str]]] = {}  # class name, lower case
        for plugin in self.plugins:
            for entry in plugin.protocols:
                if isinstance(entry, str):
                    key = entry.rpartition(":")[2].lower()
                    self._pending.setdefault(key, []).append((plugin, entry))
                else:
                    self._register(plugin, entry)

    def _register(self, plugin: Plugin, cls: type[Protocol]) -> None:
        cls.plugin = plugin.name
        self._add(cls.identity(), cls)
        for old in cls.renamed_from:
            self._add(old if ":" in old else f"{plugin.name}:{old}", cls)

    def _load(self, key: str | None = None) -> None:
        """Import the pending references named ``key`` (lower case), or all of them."""
        for name in list(self._pending) if key is None else [key]:
            for plugin, reference in self._pending.pop(name, []):
                try:
                    cls = _resolve(reference)
                except Exception as exc:  # a broken third-party plugin must not break the CLI
                    log.warning("protocol %s of plugin %s could not be loaded: %s", reference,
                                plugin.name, exc)
                    continue
                self._register(plugin, cls)

    def _add(self, identity: str, cls: type[Protocol]) -> None:
        self._by_identity[identity] = cls
        self._by_name.setdefault(identity.split(":", 1)[1].lower(), []).append(cls)

    def protocols(self) -> list[type[Protocol]]:
        self._load()
        seen: dict[str, type[Protocol]] = {}
        for cls in self._by_identity.values():
            seen.setdefault(cls.identity(), cls)
        return sorted(seen.values(), key=lambda c: c.identity())

    def get(self, name: str) -> type[Protocol]:
        """Find a protocol by ``plugin:ClassName``, class name (any case) or an old name."""
        key = name.split(":")[-1].lower().replace("-", "")
        self._load(key)
        if name not in self._by_identity and key not in self._by_name:
            self._load()
        if name in self._by_identity:
            return self._by_identity[name]
        candidates = self._by_name.get(key, [])
        if not candidates:
            candidates = [
                c for c in self.protocols() if c.__name__.lower() == name.lower().replace("-", "")
            ]
        unique = {c.identity(): c for c in candidates}
        if len(unique) == 1:
            return next(iter(unique.values()))
        if len(unique) > 1:
            raise ParamError(
                f"protocol name {name!r} is ambiguous: {', '.join(sorted(unique))}; "
                "use the full plugin:ClassName"
            )
        known = ", ".join(c.__name__ for c in self.protocols())
        raise ParamError(
            f"unknown protocol {name!r}; known protocols: {known} "
            "(`cryoweave protocols` lists them with their plugins)"
        )


_registry: Registry | None = None


def _load(name: str, target: str, loader: Any) -> Plugin | None:
    try:
        plugin = loader()
    except Exception as exc:  # a broken third-party plugin must not break the CLI
        log.warning("plugin %s (%s) could not be loaded: %s", name, target, exc)
        return None
    if not isinstance(plugin, Plugin):
        log.warning("plugin %s (%s) is not a cryoweave Plugin record", name, target)
        return None
    return plugin


def discover_plugins() -> list[Plugin]:
    """Load every ``cryoweave.plugins`` entry point; a broken plugin is logged and skipped.

    ``CRYOWEAVE_PLUGINS=module:ATTR,...`` adds plugins that are not installed (for plugin
    development and tests).
    """
    plugins: list[Plugin] = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        plugin = _load(entry.name, entry.value, entry.load)
        if plugin is not None:
            plugins.append(plugin)
    for target in filter(None, os.environ.get("CRYOWEAVE_PLUGINS", "").split(",")):
        module, _, attr = target.strip().partition(":")
        plugin = _load(target, target,
                       lambda m=module, a=attr: getattr(importlib.import_module(m), a or "PLUGIN"))
        if plugin is not None and plugin.name not in {p.name for p in plugins}:
            plugins.append(plugin)
    return plugins


def registry(*, refresh: bool = False) -> Registry:
    """The process-wide registry, discovered on first use."""
    global _registry
    if _registry is None or refresh:
        _registry = Registry(discover_plugins())
    return _registry
