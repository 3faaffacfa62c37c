"""What a plugin adds to the run's report: :class:`Report` and :func:`report`.

aiperf shows a plugin's report under ``plugins.<name>.report`` in
``profile_export_aiperf.json`` and in the console. A plugin reports in two ways, which can
be mixed:

- a hook callback **returns** a :class:`Report` or a dict ``{"metrics": {...}, "notes": [...]}``;
- any code calls :func:`report` (``aiperf_plugin.report(metrics=..., notes=...)``), from a
  callback, the constructor or a thread of its own.

Either way the host sends one ``report`` message; from inside a callback it goes out before
that event's ack. Later metrics replace earlier ones of the same name; notes accumulate.
Metric values must be numbers (finite), strings or booleans: anything else is dropped with
an error in the log, and the rest of the report is still sent.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

__all__ = ["MetricValue", "Report", "report", "validate_report"]

logger = logging.getLogger("aiperf_plugin.reporting")

#: What a report metric may hold.
MetricValue = Union[int, float, str, bool]

_REPORT_KEYS = ("metrics", "notes")


@dataclass
class Report:
    """Metrics (name -> number, string or bool) and notes (strings) for the run's report."""

    metrics: Dict[str, MetricValue] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.metrics and not self.notes

    def to_message(self) -> Dict[str, Any]:
        """The protocol ``report`` message."""
        return {"type": "report", "metrics": dict(self.metrics), "notes": list(self.notes)}


def _check_metric(name: Any, value: Any) -> Tuple[Any, Optional[str]]:
    """``(value as JSON-ready, None)`` when ``name: value`` can be a report metric, else
    ``(None, why not)``. Numbers of other types (``numbers.Integral``/``Real``, e.g. numpy's)
    become ``int``/``float``."""
    if not isinstance(name, str) or not name:
        return None, f"metric name {name!r} is not a non-empty string"
    if isinstance(value, bool):
        return value, None
    if isinstance(value, str):
        return str(value), None
    if isinstance(value, numbers.Integral):
        return int(value), None
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            return None, f"metric {name!r}: {value!r} is not a finite number"
        return number, None
    return None, (
        f"metric {name!r}: a value of type {type(value).__name__} is not allowed "
        "(a report metric is a number, a string or a bool)"
    )


def validate_report(
    metrics: Any = None, notes: Any = None
) -> Tuple[Report, List[str]]:
    """Check what a plugin wants to report.

    ``metrics`` is a mapping (or ``None``) or a whole :class:`Report` (then ``notes`` adds
    to its notes); ``notes`` is a string (one note) or an iterable of strings (or ``None``).
    Returns the valid part as a :class:`Report` and the reasons for whatever was left out
    (empty when everything was valid). Never raises.
    """
    errors: List[str] = []
    extra_notes = None
    if isinstance(metrics, Report):
        metrics, notes, extra_notes = metrics.metrics, metrics.notes, notes

    good: Dict[str, MetricValue] = {}
    if metrics is not None:
        if isinstance(metrics, Mapping):
            for name, value in metrics.items():
                checked, why = _check_metric(name, value)
                if why is None:
                    good[name] = checked
                else:
                    errors.append(why)
        else:
            errors.append(f"metrics must be a dict of name -> value, got {type(metrics).__name__}")

    good_notes: List[str] = []
    for group in (notes, extra_notes):
        if group is None:
            continue
        if isinstance(group, str):
            good_notes.append(group)
            continue
        if isinstance(group, (bytes, Mapping)) or not isinstance(group, Iterable):
            errors.append(f"notes must be a string or a list of strings, got {type(group).__name__}")
            continue
        for note in group:
            if isinstance(note, str):
                good_notes.append(note)
            else:
                errors.append(f"note {note!r}: a note is a string, not {type(note).__name__}")
    return Report(good, good_notes), errors


def report_from_return(value: Any) -> Tuple[Optional[Report], List[str]]:
    """Interpret a hook callback's return value: ``None`` for no report (``None`` or any
    value that is not a :class:`Report` or a mapping); a mapping must have only the keys
    ``metrics`` and ``notes``."""
    if value is None:
        return None, []
    if isinstance(value, Report):
        return validate_report(value)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in _REPORT_KEYS]
        rep, errors = validate_report(value.get("metrics"), value.get("notes"))
        if unknown:
            errors.insert(
                0,
                f"a returned report dict has only the keys 'metrics' and 'notes'; "
                f"ignored {', '.join(repr(k) for k in unknown)}",
            )
        return rep, errors
    return None, []


# The host installs the sink that sends (or queues) a validated report.
_sink_lock = threading.Lock()
_sink: Optional[Callable[[Report], None]] = None


def _set_sink(sink: Optional[Callable[[Report], None]]) -> None:
    """Used by the host: where :func:`report` sends to (``None``: nowhere)."""
    global _sink
    with _sink_lock:
        _sink = sink


def report(metrics: Any = None, notes: Any = None) -> bool:
    """Add ``metrics`` (a dict of name -> number, string or bool) and ``notes`` (a string or a
    list of strings) to this plugin's part of the run's report.

    Also accepts a :class:`Report` (``report(Report(...))``). Callable from anywhere: a hook
    callback (the message then precedes the event's ack), the constructor or
    ``register_hooks()`` (sent once aiperf has the plugin configured), or another thread.

    Invalid entries are dropped and logged as errors; the valid rest is sent. Returns
    ``True`` when everything was valid and handed to the host, ``False`` otherwise (also
    when no ``aiperf-plugin-python`` host serves this process, e.g. in a unit test).
    """
    rep, errors = validate_report(metrics, notes)
    for why in errors:
        logger.error("report: %s; left out", why)
    if rep.is_empty():
        return not errors
    with _sink_lock:
        sink = _sink
    if sink is None:
        logger.warning("report: no aiperf host serves this plugin; report not sent: %r", rep)
        return False
    sink(rep)
    return not errors
