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
    """A plugin: its name (the identity prefix), version and protocol classes."""

    name: str
    version: str
    protocols: Sequence[type[Protocol]] = field(default_factory=tuple)
    description: str = ""


class Registry:
    """All protocols of all discovered plugins, by identity, class name and old names."""

    def __init__(self, plugins: Sequence[Plugin]):
        self.plugins = list(plugins)
        self._by_identity: dict[str, type[Protocol]] = {}
        self._by_name: dict[str, list[type[Protocol]]] = {}
        for plugin in self.plugins:
            for cls in plugin.protocols:
                cls.plugin = plugin.name
                self._add(cls.identity(), cls)
                for old in cls.renamed_from:
                    self._add(old if ":" in old else f"{plugin.name}:{old}", cls)

    def _add(self, identity: str, cls: type[Protocol]) -> None:
        self._by_identity[identity] = cls
        self._by_name.setdefault(identity.split(":", 1)[1].lower(), []).append(cls)

    def protocols(self) -> list[type[Protocol]]:
        seen: dict[str, type[Protocol]] = {}
        for cls in self._by_identity.values():
            seen.setdefault(cls.identity(), cls)
        return sorted(seen.values(), key=lambda c: c.identity())

    def get(self, name: str) -> type[Protocol]:
        """Find a protocol by ``plugin:ClassName``, class name (any case) or an old name."""
        if name in self._by_identity:
            return self._by_identity[name]
        candidates = self._by_name.get(name.split(":")[-1].lower().replace("-", ""), [])
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
