"""Custom monitor: log every phase hook, optionally append JSON lines to a file."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Optional

from aiperf_plugin import CreditPhase, PhaseHookRegistry

logger = logging.getLogger(__name__)


def _parse_level(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    level = logging.getLevelName(str(value).strip().upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log_level {value!r}")
    return level


class CustomMonitorPlugin:
    """Logs each phase hook at the configured level."""

    HOOKS = ["phase_start", "phase_sending_complete", "phase_timeout", "phase_complete"]
    CONFIG_SCHEMA = {
        "type": "object",
        # A key not listed below is a typo: aiperf rejects it with its file:line.
        "additionalProperties": False,
        "properties": {
            "log_level": {"type": ["string", "integer"]},
            "output_file": {"type": ["string", "null"]},
        },
    }

    def __init__(self, config: dict):
        config = config or {}
        self.log_level = _parse_level(config.get("log_level", "INFO"))
        self.output_file: Optional[str] = config.get("output_file") or None
        self._lock = threading.Lock()
        if logger.getEffectiveLevel() > self.log_level:
            logger.setLevel(self.log_level)

    def register_hooks(self) -> None:
        PhaseHookRegistry.register_phase_start(self.on_phase_start)
        PhaseHookRegistry.register_phase_sending_complete(self.on_phase_sending_complete)
        PhaseHookRegistry.register_phase_timeout(self.on_phase_timeout)
        PhaseHookRegistry.register_phase_complete(self.on_phase_complete)

    # Plain functions: the plugin host runs them in a worker thread.
    def on_phase_start(self, phase: CreditPhase, tracker) -> None:
        self._record("phase_start", phase, tracker)

    def on_phase_sending_complete(self, phase: CreditPhase, tracker) -> None:
        self._record("phase_sending_complete", phase, tracker)

    def on_phase_timeout(self, phase: CreditPhase, tracker) -> None:
        self._record("phase_timeout", phase, tracker)

    def on_phase_complete(self, phase: CreditPhase, tracker) -> None:
        self._record("phase_complete", phase, tracker)

    def _record(self, hook: str, phase: CreditPhase, tracker) -> None:
        stats = tracker.create_stats()
        logger.log(
            self.log_level,
            "%s %s: sent=%s completed=%s errors=%s cancelled=%s in_flight=%s duration=%.3fs",
            hook,
            phase,
            stats.sent,
            stats.completed,
            stats.errors,
            stats.cancelled,
            stats.in_flight,
            float(stats.duration_sec or 0.0),
        )
        if self.output_file:
            line = json.dumps({"hook": hook, "phase": str(phase), "stats": stats.to_dict()})
            with self._lock, open(self.output_file, "a", encoding="utf-8") as f:
                f.write(line + "\n")
