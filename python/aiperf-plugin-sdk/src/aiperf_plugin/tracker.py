"""The objects hook callbacks receive: ``PhaseTracker`` and the ``PhaseStats`` it creates."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

from .context import RunContext
from .enums import CreditPhase

__all__ = ["PhaseStats", "PhaseTracker", "CreditPhaseTracker", "coerce_phase"]

PhaseLike = Union[CreditPhase, str]

#: PhaseStats fields of protocol v1 with the value used when the host leaves one out.
_STAT_DEFAULTS: Dict[str, Any] = {
    "phase": None,
    "sent": 0,
    "completed": 0,
    "errors": 0,
    "cancelled": 0,
    "in_flight": 0,
    "expected": None,
    "duration_sec": 0.0,
    "start_time_ns": None,
    "sending_complete_time_ns": None,
    "end_time_ns": None,
    "timed_out": False,
}


def coerce_phase(value: Any) -> Optional[PhaseLike]:
    """``CreditPhase(value)`` for known phases; unknown phase strings stay plain ``str``."""
    if value is None or isinstance(value, CreditPhase):
        return value
    try:
        return CreditPhase(value)
    except ValueError:
        return str(value)


class PhaseStats:
    """A snapshot of one phase's request counters (protocol v1 ``PhaseStats``).

    Attributes: ``phase, sent, completed, errors, cancelled, in_flight, expected,
    duration_sec, start_time_ns, sending_complete_time_ns, end_time_ns, timed_out``.
    Fields a newer host adds are kept and readable as attributes too (``stats.new_field``)
    and in ``stats.extra``.
    """

    FIELDS = tuple(_STAT_DEFAULTS)

    def __init__(self, **fields: Any) -> None:
        extra: Dict[str, Any] = {}
        for name, value in fields.items():
            if name not in _STAT_DEFAULTS:
                extra[name] = value
        object.__setattr__(self, "_extra", extra)
        for name, default in _STAT_DEFAULTS.items():
            setattr(self, name, fields.get(name, default))
        self.phase = coerce_phase(self.phase)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], phase: Any = None) -> "PhaseStats":
        """Build from a wire ``PhaseStats`` object; ``phase`` fills in a missing phase."""
        fields = dict(data or {})
        if fields.get("phase") is None and phase is not None:
            fields["phase"] = phase
        return cls(**fields)

    @property
    def extra(self) -> Dict[str, Any]:
        """Fields this SDK version does not know (a copy)."""
        return dict(self._extra)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: fall back to unknown wire fields.
        extra = self.__dict__.get("_extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict: every known field (phase as its string) plus unknown extras."""
        data: Dict[str, Any] = dict(self._extra)
        for name in _STAT_DEFAULTS:
            data[name] = getattr(self, name)
        if data["phase"] is not None:
            data["phase"] = str(data["phase"])
        return data

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhaseStats):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"PhaseStats({inner})"


class PhaseTracker:
    """What a hook callback gets as ``tracker``.

    - ``phase``: the ``CreditPhase`` (``None`` for benchmark hooks).
    - ``hook``: the hook name (``"phase_complete"``, ...).
    - ``event_id``: the protocol event id (``None`` when built by hand).
    - ``summary``: the metric summary dict (``{tag: {"unit":..,"avg":..,...}}``) on
      ``phase_complete`` and ``benchmark_complete``, else ``None``.
    - ``context``: the run's :class:`RunContext` on ``benchmark_start``, else ``None``.
    - ``create_stats()``: a fresh ``PhaseStats`` snapshot for phase hooks; ``None`` for
      benchmark hooks.
    """

    def __init__(
        self,
        phase: Any = None,
        stats: Optional[Mapping[str, Any]] = None,
        summary: Optional[Dict[str, Any]] = None,
        hook: Optional[str] = None,
        event_id: Any = None,
        context: Optional[RunContext] = None,
    ) -> None:
        self.phase = coerce_phase(phase)
        self.context = context
        self.hook = hook
        self.event_id = event_id
        self.summary = summary
        self._stats = dict(stats) if stats is not None else None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> "PhaseTracker":
        """Build from a protocol ``event`` message."""
        stats = event.get("stats")
        summary = event.get("summary")
        return cls(
            phase=event.get("phase"),
            stats=stats if isinstance(stats, Mapping) else None,
            summary=summary if isinstance(summary, dict) else None,
            hook=event.get("hook"),
            event_id=event.get("id"),
            context=RunContext.from_dict(event.get("context")),
        )

    @property
    def stats_dict(self) -> Optional[Dict[str, Any]]:
        """The raw ``stats`` object of the event (a copy), or ``None``."""
        return dict(self._stats) if self._stats is not None else None

    def create_stats(self) -> Optional[PhaseStats]:
        """A new ``PhaseStats`` snapshot (``None`` when the event carries no phase)."""
        if self._stats is None:
            if self.phase is None:
                return None
            return PhaseStats(phase=self.phase)
        return PhaseStats.from_dict(self._stats, phase=self.phase)

    def __repr__(self) -> str:
        return (
            f"PhaseTracker(hook={self.hook!r}, phase={self.phase!r}, "
            f"event_id={self.event_id!r}, has_summary={self.summary is not None})"
        )


#: The seed design calls the tracker ``CreditPhaseTracker``.
CreditPhaseTracker = PhaseTracker
