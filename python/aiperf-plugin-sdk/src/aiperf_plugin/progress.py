"""What a ``progress`` event carries besides the stats: :class:`ProgressWindow`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

__all__ = ["ProgressWindow", "WindowStat"]


def _number(value: Any, default: float) -> Any:
    """``value`` when it is a number (not a bool), else ``default``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return default


@dataclass
class WindowStat:
    """One metric over a :class:`ProgressWindow`: ``count`` values (``unit``, e.g. ``"ms"``),
    their average, extremes and linear-interpolation percentiles."""

    unit: str = ""
    count: int = 0
    avg: float = 0.0
    min: float = 0.0
    max: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> "WindowStat":
        """Build from the wire object; missing or mistyped fields take their default,
        unknown ones are dropped."""
        if not isinstance(data, Mapping):
            return cls()
        unit = data.get("unit")
        values: Dict[str, Any] = {"unit": unit if isinstance(unit, str) else ""}
        for f in dataclasses.fields(cls):
            if f.name != "unit":
                values[f.name] = _number(data.get(f.name), f.default)
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ProgressWindow:
    """Rolling metrics over the last ``window_sec`` seconds of finished requests of a phase.

    ``requests`` finished in the window (``errors`` of them failed);
    ``request_throughput`` and ``output_token_throughput`` are per second over the window;
    ``metrics`` maps a metric name (``time_to_first_token``, ``inter_token_latency``,
    ``request_latency``, ...) to its :class:`WindowStat`, present when a request in the
    window had it. Fields a newer aiperf adds are kept in ``extra``.
    """

    window_sec: float = 0.0
    requests: int = 0
    errors: int = 0
    request_throughput: float = 0.0
    output_token_throughput: float = 0.0
    metrics: Dict[str, WindowStat] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]]) -> Optional["ProgressWindow"]:
        """Build from the wire object; ``None`` when there is none."""
        if not isinstance(data, Mapping):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in ("metrics", "extra"):
                values[f.name] = _number(data.get(f.name), f.default)
        metrics = data.get("metrics")
        values["metrics"] = (
            {str(name): WindowStat.from_dict(stat) for name, stat in metrics.items()}
            if isinstance(metrics, Mapping)
            else {}
        )
        values["extra"] = {k: v for k, v in data.items() if k not in names}
        return cls(**values)

    def metric(self, name: str) -> Optional[WindowStat]:
        """The :class:`WindowStat` of ``name``, or ``None`` when no request in the window had it."""
        return self.metrics.get(name)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict, as on the wire (``extra`` merged back in)."""
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}
