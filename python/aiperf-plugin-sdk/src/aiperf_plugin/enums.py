"""Enumerations shared by aiperf plugins.

``CreditPhase`` mirrors aiperf's own enum of the same name. It is a ``str`` enum, so
``phase == "profiling"``, ``f"{phase}"`` and ``str(phase)`` all behave like the plain
phase string used on the wire.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["CreditPhase", "HookName"]


class _StrValueEnum(str, Enum):
    """A ``str`` enum whose ``str()`` and ``format()`` are the bare value on every Python."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


class CreditPhase(_StrValueEnum):
    """The benchmark phase a phase hook fires for."""

    WARMUP = "warmup"
    PROFILING = "profiling"


class HookName(_StrValueEnum):
    """Every hook of plugin protocol v1, in the order they can fire in a run.

    ``REQUEST_RECORDS`` and ``PROGRESS`` are opt-in (a plugin lists them in ``HOOKS``) and
    fire many times while a phase runs; the others fire once per phase or run.
    """

    SWEEP_START = "sweep_start"
    BENCHMARK_START = "benchmark_start"
    PHASE_START = "phase_start"
    REQUEST_RECORDS = "request_records"
    PROGRESS = "progress"
    PHASE_SENDING_COMPLETE = "phase_sending_complete"
    PHASE_TIMEOUT = "phase_timeout"
    PHASE_COMPLETE = "phase_complete"
    BENCHMARK_COMPLETE = "benchmark_complete"
    SWEEP_COMPLETE = "sweep_complete"
