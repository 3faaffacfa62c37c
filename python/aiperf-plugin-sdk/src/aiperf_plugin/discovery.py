"""Finding plugins through the ``aiperf.plugins`` entry point group, without importing them."""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

from importlib import metadata as _metadata

__all__ = ["ENTRY_POINT_GROUP", "PluginEntry", "iter_plugins", "list_plugins", "find_plugin"]

ENTRY_POINT_GROUP = "aiperf.plugins"


class PluginEntry(NamedTuple):
    """One entry point of the ``aiperf.plugins`` group."""

    name: str
    value: str  # "package.module:Class"
    dist: Optional[str]
    dist_version: Optional[str]
    entry_point: Any  # importlib.metadata.EntryPoint

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "dist": self.dist,
            "dist_version": self.dist_version,
        }

    def load(self) -> Any:
        """Import the module and return the object the entry point names."""
        return self.entry_point.load()


def _normalize(dist_name: str) -> str:
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def iter_plugins(group: str = ENTRY_POINT_GROUP) -> Iterator[PluginEntry]:
    """Every entry point of ``group`` in this environment, in ``sys.path`` order.

    Reads distribution metadata only; nothing is imported. When the same distribution is
    visible twice on ``sys.path``, the first copy wins (the one ``import`` would use).
    Works on Python 3.9 (no ``EntryPoints.select`` / ``EntryPoint.dist`` needed).
    """
    seen_dists = set()
    for dist in _metadata.distributions():
        try:
            dist_name = dist.metadata["Name"]
        except Exception:  # broken metadata: skip that distribution
            continue
        key = _normalize(dist_name) if dist_name else None
        if key is not None:
            if key in seen_dists:
                continue
            seen_dists.add(key)
        try:
            eps = list(dist.entry_points)
        except Exception:
            continue
        for ep in eps:
            if ep.group != group:
                continue
            yield PluginEntry(ep.name, ep.value, dist_name, dist.version, ep)


def list_plugins(group: str = ENTRY_POINT_GROUP) -> List[PluginEntry]:
    """``iter_plugins`` as a list sorted by name (stable for equal names)."""
    return sorted(iter_plugins(group), key=lambda entry: entry.name)


def find_plugin(name: str, group: str = ENTRY_POINT_GROUP) -> Optional[PluginEntry]:
    """The first entry point called ``name`` (``sys.path`` order), or ``None``."""
    for entry in iter_plugins(group):
        if entry.name == name:
            return entry
    return None
