"""Counts the requests over an SLO (TTFT and/or request latency) as they finish.

It takes the opt-in ``request_records`` feed: every finished request, as one line of
``profile_export.jsonl``. After each batch it returns a report with the running counts, and
when a watched phase completes it calls ``aiperf_plugin.report()`` with the final counts and
a note. aiperf shows them under ``plugins.slo_alarm.report`` in
``profile_export_aiperf.json`` and in the console.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Mapping, Optional

import aiperf_plugin
from aiperf_plugin import PhaseHookRegistry, Report

logger = logging.getLogger(__name__)

#: config key -> the record metric it limits (values in ms).
LIMITS = {
    "ttft_ms_max": "time_to_first_token",
    "request_latency_ms_max": "request_latency",
}


def _metric(record: Mapping[str, Any], name: str) -> Optional[float]:
    """``record["metrics"][name]["value"]`` as a number, or ``None``."""
    metrics = record.get("metrics")
    entry = metrics.get(name) if isinstance(metrics, Mapping) else None
    value = entry.get("value") if isinstance(entry, Mapping) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def violates(record: Mapping[str, Any], limits: Mapping[str, float], count_errors: bool = False) -> bool:
    """Whether a ``profile_export.jsonl`` record breaks the SLO: one of its limited metrics
    is over its limit (``limits``: metric name -> max in ms), or, with ``count_errors``, the
    request failed. A metric the record does not have (no TTFT without streaming) breaks
    nothing."""
    if record.get("error") is not None:
        return count_errors
    return any((v := _metric(record, name)) is not None and v > limit for name, limit in limits.items())


class SloAlarmPlugin:
    HOOKS = ["request_records", "phase_complete"]
    CONFIG_SCHEMA = {
        "type": "object",
        # A key not listed below is a typo: aiperf rejects it with its file:line.
        "additionalProperties": False,
        "properties": {
            "ttft_ms_max": {"type": "number", "exclusiveMinimum": 0},
            "request_latency_ms_max": {"type": "number", "exclusiveMinimum": 0},
            "count_errors": {"type": "boolean"},
            "phases": {
                "type": "array",
                "items": {"enum": ["warmup", "profiling"]},
                "uniqueItems": True,
                "minItems": 1,
            },
            "fail_on_violation": {"type": "boolean"},
        },
        "anyOf": [{"required": ["ttft_ms_max"]}, {"required": ["request_latency_ms_max"]}],
    }

    def __init__(self, config: Dict[str, Any]):
        config = config or {}
        self.limits: Dict[str, float] = {
            metric: float(config[key]) for key, metric in LIMITS.items() if config.get(key) is not None
        }
        if not self.limits:
            raise ValueError(f"slo_alarm: set at least one of {', '.join(LIMITS)}")
        self.count_errors = bool(config.get("count_errors", False))
        self.phases = set(config.get("phases") or ["profiling"])
        self.fail_on_violation = bool(config.get("fail_on_violation", False))
        self.violations = 0
        self.checked = 0
        self.dropped = 0

    def register_hooks(self) -> None:
        PhaseHookRegistry.register_request_records(self.on_records)
        PhaseHookRegistry.register_phase_complete(self.on_phase_complete)

    def _counts(self) -> Dict[str, Any]:
        return {
            "slo_violations": self.violations,
            "slo_requests_checked": self.checked,
            "slo_dropped_records": self.dropped,
        }

    def _describe_slo(self) -> str:
        parts = [f"{name} > {limit:g} ms" for name, limit in self.limits.items()]
        if self.count_errors:
            parts.append("failed")
        return " or ".join(parts)

    def on_records(self, phase: Any, tracker: Any) -> Optional[Report]:
        """A batch of finished requests: count, then report the running totals (returned)."""
        if str(phase) not in self.phases:
            return None
        records: Iterable[Mapping[str, Any]] = tracker.records or []
        for record in records:
            self.checked += 1
            if violates(record, self.limits, self.count_errors):
                self.violations += 1
        self.dropped = max(self.dropped, tracker.dropped_records or 0)
        return Report(metrics=self._counts())

    def on_phase_complete(self, phase: Any, tracker: Any) -> None:
        """The final counts and a note, through ``aiperf_plugin.report()``."""
        if str(phase) not in self.phases:
            return
        note = f"{phase}: {self.violations} of {self.checked} requests over the SLO ({self._describe_slo()})"
        notes = [note]
        if self.dropped:
            notes.append(f"{self.dropped} records were dropped before this plugin saw them: the counts are a lower bound")
        aiperf_plugin.report(metrics=self._counts(), notes=notes)
        if self.violations:
            logger.warning("SLO alarm: %s", note)
            if self.fail_on_violation:
                raise RuntimeError(f"SLO violated: {note}")
        else:
            logger.info("%s", note)
