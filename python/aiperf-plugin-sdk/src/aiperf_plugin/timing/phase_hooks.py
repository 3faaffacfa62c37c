"""Alias of :mod:`aiperf_plugin.phase_hooks` at the seed's path (``aiperf.timing.phase_hooks``)."""

from ..phase_hooks import (
    BENCHMARK_HOOKS,
    HOOK_NAMES,
    LIFECYCLE_HOOKS,
    PHASE_HOOKS,
    STREAMING_HOOKS,
    PhaseHookRegistry,
)

__all__ = ["PhaseHookRegistry", "HOOK_NAMES", "LIFECYCLE_HOOKS", "STREAMING_HOOKS", "PHASE_HOOKS", "BENCHMARK_HOOKS"]
