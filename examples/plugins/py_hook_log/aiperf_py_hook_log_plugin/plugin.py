"""Test fixture: append ``py-hook-log <hook> <phase-or-->`` to a file for every hook call."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from aiperf_plugin import HOOK_NAMES, PhaseHookRegistry


class PyHookLogPlugin:
    CONFIG_SCHEMA = {
        "type": "object",
        # A key not listed below is a typo: aiperf rejects it with its file:line.
        "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "minLength": 1},
            "sleep_seconds": {"type": "number", "minimum": 0},
            "sleep_hooks": {"type": "array", "items": {"type": "string"}},
            "fail_hooks": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["file"],
    }

    def __init__(self, config: dict):
        config = config or {}
        path = config.get("file")
        if not path:
            raise ValueError("py_hook_log: config key 'file' is required")
        self.path = str(path)
        self.sleep_seconds = float(config.get("sleep_seconds") or 0.0)
        sleep_hooks = config.get("sleep_hooks")
        self.sleep_hooks = set(HOOK_NAMES if sleep_hooks is None else sleep_hooks)
        self.fail_hooks = set(config.get("fail_hooks") or ())
        self._lock = threading.Lock()

    def register_hooks(self) -> None:
        PhaseHookRegistry.register_benchmark_start(self.on_benchmark_start)
        PhaseHookRegistry.register_phase_start(self.on_phase_start)
        PhaseHookRegistry.register_phase_sending_complete(self.on_phase_sending_complete)
        PhaseHookRegistry.register_phase_timeout(self.on_phase_timeout)
        PhaseHookRegistry.register_phase_complete(self.on_phase_complete)
        PhaseHookRegistry.register_benchmark_complete(self.on_benchmark_complete)

    # Benchmark hooks receive only the tracker (tracker.phase is None).
    def on_benchmark_start(self, tracker: Any) -> None:
        self._log("benchmark_start", None)

    def on_benchmark_complete(self, tracker: Any) -> None:
        self._log("benchmark_complete", None)

    # Phase hooks receive (phase, tracker).
    def on_phase_start(self, phase: Any, tracker: Any) -> None:
        self._log("phase_start", phase)

    def on_phase_sending_complete(self, phase: Any, tracker: Any) -> None:
        self._log("phase_sending_complete", phase)

    def on_phase_timeout(self, phase: Any, tracker: Any) -> None:
        self._log("phase_timeout", phase)

    def on_phase_complete(self, phase: Any, tracker: Any) -> None:
        self._log("phase_complete", phase)

    def _log(self, hook: str, phase: Optional[Any]) -> None:
        line = f"py-hook-log {hook} {phase if phase is not None else '-'}\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        if self.sleep_seconds > 0 and hook in self.sleep_hooks:
            time.sleep(self.sleep_seconds)
        if hook in self.fail_hooks:
            raise RuntimeError(f"py-hook-log: failing {hook}")
