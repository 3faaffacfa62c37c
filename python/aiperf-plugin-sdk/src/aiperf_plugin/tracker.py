"""The objects hook callbacks receive: ``PhaseTracker`` and the ``PhaseStats`` it creates."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Union

from .context import RunContext
from .enums import CreditPhase
from .progress import ProgressWindow

__all__ = ["PhaseStats", "PhaseTracker", "CreditPhaseTracker", "coerce_phase", "UPSTREAM_ALIASES"]

PhaseLike = Union[CreditPhase, str]


def coerce_phase(value: Any) -> Optional[PhaseLike]:
    """``CreditPhase(value)`` for known phases; unknown phase strings stay plain ``str``."""
    if value is None or isinstance(value, CreditPhase):
        return value
    try:
        return CreditPhase(value)
    except ValueError:
        return str(value)


@dataclass
class PhaseStats:
    """A snapshot of one phase's request counters (protocol v1 ``PhaseStats``).

    The fields are those of the wire object: ``phase`` (a :class:`CreditPhase`), ``sent``,
    ``completed`` (with or without error; ``errors`` ⊂ ``completed``), ``errors``,
    ``cancelled``, ``in_flight`` (``sent - completed - cancelled``), ``expected`` (``None``
    when a duration bounds the phase), ``duration_sec``, ``start_time_ns``,
    ``sending_complete_time_ns``, ``end_time_ns`` (Unix epoch ns; the last two ``None``
    until then), ``timed_out``, ``late_sends`` and ``max_send_lag_ms`` (``None`` in
    closed-loop phases).

    Fields a newer host adds are kept in ``extra`` and readable as attributes too
    (``stats.new_field``). Plugins ported from NVIDIA's Python AIPerf can read the upstream
    names (``requests_sent``, ``requests_completed``, ``start_ns``, ...): see
    :data:`UPSTREAM_ALIASES` and the read-only properties below.
    """

    phase: Optional[PhaseLike] = None
    sent: int = 0
    completed: int = 0
    errors: int = 0
    cancelled: int = 0
    in_flight: int = 0
    expected: Optional[int] = None
    duration_sec: float = 0.0
    start_time_ns: int = 0
    sending_complete_time_ns: Optional[int] = None
    end_time_ns: Optional[int] = None
    timed_out: bool = False
    late_sends: int = 0
    max_send_lag_ms: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    #: The wire fields, in order.
    FIELDS: ClassVar[Tuple[str, ...]] = (
        "phase",
        "sent",
        "completed",
        "errors",
        "cancelled",
        "in_flight",
        "expected",
        "duration_sec",
        "start_time_ns",
        "sending_complete_time_ns",
        "end_time_ns",
        "timed_out",
        "late_sends",
        "max_send_lag_ms",
    )

    def __post_init__(self) -> None:
        self.phase = coerce_phase(self.phase)

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]], phase: Any = None) -> "PhaseStats":
        """Build from a wire ``PhaseStats`` object: missing fields (and ``null`` where the
        field is not optional) take their default, unknown ones go to ``extra``. ``phase``
        fills in a missing phase."""
        data = data if isinstance(data, Mapping) else {}
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "extra"}
        values: Dict[str, Any] = {}
        for name in cls.FIELDS:
            value = data.get(name)
            values[name] = defaults[name] if value is None else value
        if values["phase"] is None and phase is not None:
            values["phase"] = phase
        extra = {k: v for k, v in data.items() if k not in defaults and k != "extra"}
        return cls(**values, extra=extra)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: fall back to unknown wire fields.
        extra = self.__dict__.get("extra")
        if extra is not None and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict, as on the wire: every field (phase as its string) plus ``extra``."""
        data: Dict[str, Any] = dict(self.extra)
        for name in self.FIELDS:
            data[name] = getattr(self, name)
        if data["phase"] is not None:
            data["phase"] = str(data["phase"])
        return data

    __hash__ = None  # type: ignore[assignment]  # mutable

    # -- upstream AIPerf names (read-only) ------------------------------------------------

    @property
    def requests_sent(self) -> int:
        """Upstream name of ``sent``."""
        return self.sent

    @property
    def requests_completed(self) -> int:
        """Upstream name of ``completed`` (success or error, not cancelled)."""
        return self.completed

    @property
    def requests_cancelled(self) -> int:
        """Upstream name of ``cancelled``."""
        return self.cancelled

    @property
    def request_errors(self) -> int:
        """Upstream name of ``errors``."""
        return self.errors

    @property
    def in_flight_requests(self) -> int:
        """Upstream name of ``in_flight``."""
        return self.in_flight

    @property
    def total_expected_requests(self) -> Optional[int]:
        """Upstream name of ``expected``."""
        return self.expected

    @property
    def start_ns(self) -> int:
        """Upstream name of ``start_time_ns``."""
        return self.start_time_ns

    @property
    def sent_end_ns(self) -> Optional[int]:
        """Upstream name of ``sending_complete_time_ns``."""
        return self.sending_complete_time_ns

    @property
    def requests_end_ns(self) -> Optional[int]:
        """Upstream name of ``end_time_ns``."""
        return self.end_time_ns

    @property
    def timeout_triggered(self) -> bool:
        """Upstream name of ``timed_out``."""
        return self.timed_out

    @property
    def requests_elapsed_time(self) -> float:
        """Upstream name of ``duration_sec``."""
        return self.duration_sec

    @property
    def is_started(self) -> bool:
        """Whether the phase has a start time (always, in events aiperf sends)."""
        return bool(self.start_time_ns)

    @property
    def is_sending_complete(self) -> bool:
        """``sending_complete_time_ns is not None``."""
        return self.sending_complete_time_ns is not None

    @property
    def is_requests_complete(self) -> bool:
        """``end_time_ns is not None``: every request finished or was cancelled."""
        return self.end_time_ns is not None

    @property
    def final_requests_sent(self) -> Optional[int]:
        """``sent`` once the phase has ended (``end_time_ns`` set), else ``None``."""
        return self.sent if self.is_requests_complete else None

    @property
    def final_requests_completed(self) -> Optional[int]:
        """``completed`` once the phase has ended, else ``None``."""
        return self.completed if self.is_requests_complete else None

    @property
    def final_requests_cancelled(self) -> Optional[int]:
        """``cancelled`` once the phase has ended, else ``None``."""
        return self.cancelled if self.is_requests_complete else None

    @property
    def final_request_errors(self) -> Optional[int]:
        """``errors`` once the phase has ended, else ``None``."""
        return self.errors if self.is_requests_complete else None

    @property
    def requests_error_percent(self) -> float:
        """``100 * errors / completed`` (``0.0`` before anything completed)."""
        return 100.0 * self.errors / self.completed if self.completed else 0.0

    @property
    def requests_progress_percent(self) -> Optional[float]:
        """``100`` once the phase has ended; else ``100 * completed / expected`` (at most
        100) when a request count bounds the phase; ``None`` otherwise (these stats do not
        carry a duration limit, so a time-bounded phase's progress is unknown here)."""
        if not self.is_started:
            return None
        if self.is_requests_complete:
            return 100.0
        if self.expected:
            return min(100.0, 100.0 * self.completed / self.expected)
        return None

    @property
    def requests_per_second(self) -> Optional[float]:
        """``completed / duration_sec``; ``None`` before a request completed."""
        if not self.completed or self.duration_sec <= 0:
            return None
        return self.completed / self.duration_sec

    @property
    def requests_eta_sec(self) -> Optional[float]:
        """Seconds left at the rate so far, from :attr:`requests_progress_percent`; ``None``
        when the progress is unknown or still 0."""
        pct = self.requests_progress_percent
        if not pct or self.duration_sec <= 0:
            return None
        return (100.0 - pct) / (pct / self.duration_sec)


#: Upstream AIPerf phase-stats names this SDK accepts (read-only), and what they read here.
UPSTREAM_ALIASES: Dict[str, str] = {
    "requests_sent": "sent",
    "requests_completed": "completed",
    "requests_cancelled": "cancelled",
    "request_errors": "errors",
    "in_flight_requests": "in_flight",
    "total_expected_requests": "expected",
    "start_ns": "start_time_ns",
    "sent_end_ns": "sending_complete_time_ns",
    "requests_end_ns": "end_time_ns",
    "timeout_triggered": "timed_out",
    "requests_elapsed_time": "duration_sec",
    "is_started": "start_time_ns is set",
    "is_sending_complete": "sending_complete_time_ns is not None",
    "is_requests_complete": "end_time_ns is not None",
    "final_requests_sent": "sent, once end_time_ns is set (else None)",
    "final_requests_completed": "completed, once end_time_ns is set (else None)",
    "final_requests_cancelled": "cancelled, once end_time_ns is set (else None)",
    "final_request_errors": "errors, once end_time_ns is set (else None)",
    "requests_error_percent": "100 * errors / completed",
    "requests_progress_percent": "100 when ended, else 100 * completed / expected, else None",
    "requests_per_second": "completed / duration_sec",
    "requests_eta_sec": "time left at the rate so far, from requests_progress_percent",
}


class PhaseTracker:
    """What a hook callback gets as ``tracker``.

    - ``phase``: the ``CreditPhase`` (``None`` for benchmark hooks).
    - ``hook``: the hook name (``"phase_complete"``, ...).
    - ``event_id``: the protocol event id (``None`` when built by hand).
    - ``summary``: the metric summary dict (``{tag: {"unit":..,"avg":..,...}}``) on
      ``phase_complete`` and ``benchmark_complete``, else ``None``.
    - ``context``: the run's :class:`RunContext` on ``benchmark_start``, else ``None``.
    - ``records``: on ``request_records``, the batch of finished requests, oldest first:
      a list of dicts, each one line of ``profile_export.jsonl`` (``{"metadata": {...},
      "metrics": {"time_to_first_token": {"value": 12.5, "unit": "ms"}, ...}, "error":
      None or {...}}``); ``None`` on other hooks.
    - ``dropped_records``: on ``request_records``, how many records this plugin lost so
      far in the run because it fell behind (``0`` when none); ``None`` on other hooks.
    - ``window``: on ``progress``, the rolling metrics (:class:`ProgressWindow`); ``None``
      on other hooks.
    - ``server_metrics``: on ``phase_complete``, when the run scraped server metrics, the
      server's Prometheus metrics over the phase's window as a dict (``{"start_ns",
      "end_ns", "duration_sec", "endpoints": [...], "metrics": {name: {"type", "series"}},
      "notes"}``, docs/server-metrics.md); else ``None``.
    - ``create_stats()``: a fresh ``PhaseStats`` snapshot for phase hooks that carry stats;
      ``None`` for benchmark hooks and ``request_records``.
    """

    def __init__(
        self,
        phase: Any = None,
        stats: Optional[Mapping[str, Any]] = None,
        summary: Optional[Dict[str, Any]] = None,
        hook: Optional[str] = None,
        event_id: Any = None,
        context: Optional[RunContext] = None,
        records: Optional[List[Dict[str, Any]]] = None,
        dropped_records: Optional[int] = None,
        window: Optional[ProgressWindow] = None,
        server_metrics: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.phase = coerce_phase(phase)
        self.context = context
        self.hook = hook
        self.event_id = event_id
        self.summary = summary
        self.records = records
        self.dropped_records = dropped_records
        self.window = window
        self.server_metrics = server_metrics
        self._stats = dict(stats) if stats is not None else None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> "PhaseTracker":
        """Build from a protocol ``event`` message."""
        stats = event.get("stats")
        summary = event.get("summary")
        records = event.get("records")
        dropped = event.get("dropped_records")
        if isinstance(records, list):
            records = [r for r in records if isinstance(r, dict)]
        else:
            records = None
        if not isinstance(dropped, int) or isinstance(dropped, bool):
            dropped = 0 if records is not None else None
        return cls(
            phase=event.get("phase"),
            stats=stats if isinstance(stats, Mapping) else None,
            summary=summary if isinstance(summary, dict) else None,
            hook=event.get("hook"),
            event_id=event.get("id"),
            context=RunContext.from_dict(event.get("context")),
            records=records,
            dropped_records=dropped,
            window=ProgressWindow.from_dict(event.get("window")),
            server_metrics=sm if isinstance(sm := event.get("server_metrics"), dict) else None,
        )

    @property
    def stats_dict(self) -> Optional[Dict[str, Any]]:
        """The raw ``stats`` object of the event (a copy), or ``None``."""
        return dict(self._stats) if self._stats is not None else None

    def create_stats(self) -> Optional[PhaseStats]:
        """A new ``PhaseStats`` snapshot (``None`` when the event carries no phase, and on
        ``request_records``, which carries no stats)."""
        if self._stats is None:
            if self.phase is None or self.hook == "request_records":
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
