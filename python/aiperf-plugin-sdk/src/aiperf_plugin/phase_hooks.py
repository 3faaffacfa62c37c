"""The global registry plugins put their hook callbacks in.

A plugin's ``register_hooks()`` calls the ``register_*`` classmethods; the plugin host
(``aiperf-plugin-python``) later fetches the callbacks with the ``get_*`` classmethods and
calls them when aiperf sends the matching event.

Callback signatures:

- phase hooks (``phase_start``, ``request_records``, ``progress``,
  ``phase_sending_complete``, ``phase_timeout``, ``phase_complete``):
  ``callback(phase: CreditPhase, tracker: PhaseTracker)``. On ``request_records``,
  ``tracker.records`` is the batch of finished requests (dicts, one
  ``profile_export.jsonl`` line each) and ``tracker.dropped_records`` the count lost so
  far; on ``progress``, ``tracker.window`` is a :class:`ProgressWindow`.
- benchmark hooks (``benchmark_start``, ``benchmark_complete``):
  ``callback(tracker: PhaseTracker)`` where ``tracker.phase is None``,
  ``tracker.create_stats()`` returns ``None`` and ``tracker.summary`` is the profiling
  phase's metric summary on ``benchmark_complete`` (``None`` on ``benchmark_start``).

Callbacks may be ``async def`` (awaited) or plain functions (run in a worker thread). A
callback may return a report (a :class:`~aiperf_plugin.reporting.Report` or a dict
``{"metrics": {...}, "notes": [...]}``), which the host sends before the event's ack.

``request_records`` and ``progress`` are opt-in: a plugin receives them only when its
``HOOKS`` list names them (the default ``HOOKS`` are the six :data:`LIFECYCLE_HOOKS`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

__all__ = [
    "PhaseHookRegistry",
    "HOOK_NAMES",
    "LIFECYCLE_HOOKS",
    "STREAMING_HOOKS",
    "SWEEP_HOOKS",
    "PHASE_HOOKS",
    "BENCHMARK_HOOKS",
]

#: Hooks whose callbacks receive ``(phase, tracker)``.
PHASE_HOOKS: Tuple[str, ...] = (
    "phase_start",
    "request_records",
    "progress",
    "phase_sending_complete",
    "phase_timeout",
    "phase_complete",
)
#: Hooks whose callbacks receive ``(tracker)`` only.
BENCHMARK_HOOKS: Tuple[str, ...] = (
    "sweep_start",
    "benchmark_start",
    "benchmark_complete",
    "sweep_complete",
)
#: Every hook name of protocol v1, in the order they can fire.
HOOK_NAMES: Tuple[str, ...] = (
    "sweep_start",
    "benchmark_start",
    "phase_start",
    "request_records",
    "progress",
    "phase_sending_complete",
    "phase_timeout",
    "phase_complete",
    "benchmark_complete",
    "sweep_complete",
)
#: The hooks that fire once per phase or run: a plugin's ``HOOKS`` when it sets none.
LIFECYCLE_HOOKS: Tuple[str, ...] = (
    "benchmark_start",
    "phase_start",
    "phase_sending_complete",
    "phase_timeout",
    "phase_complete",
    "benchmark_complete",
)
#: The opt-in hooks that fire many times while a phase runs (list them in ``HOOKS``).
STREAMING_HOOKS: Tuple[str, ...] = ("request_records", "progress")
#: The opt-in hooks that wrap the runs of a sweep or of repeated runs (list them in ``HOOKS``);
#: ``sweep_start`` carries the first run's context, ``sweep_complete`` the sweep's aggregate.
SWEEP_HOOKS: Tuple[str, ...] = ("sweep_start", "sweep_complete")


class PhaseHookRegistry:
    """Global registry for phase lifecycle callbacks (class-level state, like the seed)."""

    _benchmark_start_callbacks: List[Callable] = []
    _phase_start_callbacks: List[Callable] = []
    _request_records_callbacks: List[Callable] = []
    _progress_callbacks: List[Callable] = []
    _phase_sending_complete_callbacks: List[Callable] = []
    _phase_timeout_callbacks: List[Callable] = []
    _phase_complete_callbacks: List[Callable] = []
    _benchmark_complete_callbacks: List[Callable] = []

    # -- generic access ----------------------------------------------------------------

    @classmethod
    def _list_for(cls, hook: str) -> List[Callable]:
        hook = str(hook)
        if hook not in HOOK_NAMES:
            raise ValueError(f"unknown hook {hook!r}; expected one of {', '.join(HOOK_NAMES)}")
        return getattr(PhaseHookRegistry, f"_{hook}_callbacks")

    @classmethod
    def register(cls, hook: str, callback: Callable) -> None:
        """Register ``callback`` for the hook named ``hook`` (e.g. ``"phase_complete"``)."""
        if not callable(callback):
            raise TypeError(f"hook callback must be callable, got {callback!r}")
        cls._list_for(hook).append(callback)

    @classmethod
    def get_callbacks(cls, hook: str) -> List[Callable]:
        """A copy of the callbacks registered for ``hook``, in registration order."""
        return list(cls._list_for(hook))

    @classmethod
    def registered_hooks(cls) -> List[str]:
        """The hook names that have at least one callback, in firing order."""
        return [hook for hook in HOOK_NAMES if cls._list_for(hook)]

    @classmethod
    def callbacks_by_hook(cls) -> Dict[str, List[Callable]]:
        """A snapshot ``{hook: [callbacks]}`` of every hook."""
        return {hook: cls.get_callbacks(hook) for hook in HOOK_NAMES}

    @classmethod
    def clear(cls) -> None:
        """Remove every registered callback (the host does this before ``configure``)."""
        for hook in HOOK_NAMES:
            cls._list_for(hook).clear()

    # -- seed-compatible named methods -----------------------------------------------

    @classmethod
    def register_phase_start(cls, callback: Callable) -> None:
        """``callback(phase, tracker)`` when a phase starts (before its first request)."""
        cls.register("phase_start", callback)

    @classmethod
    def register_request_records(cls, callback: Callable) -> None:
        """``callback(phase, tracker)`` for each batch of finished requests (opt-in: list
        ``"request_records"`` in ``HOOKS``). ``tracker.records`` is the batch, a list of
        dicts shaped like ``profile_export.jsonl`` lines; ``tracker.dropped_records`` counts
        the records this plugin lost so far because it fell behind."""
        cls.register("request_records", callback)

    @classmethod
    def register_progress(cls, callback: Callable) -> None:
        """``callback(phase, tracker)`` every few seconds while a phase runs (opt-in: list
        ``"progress"`` in ``HOOKS``). ``tracker.create_stats()`` gives the live counters,
        ``tracker.window`` the rolling metrics (a :class:`ProgressWindow`)."""
        cls.register("progress", callback)

    @classmethod
    def register_phase_sending_complete(cls, callback: Callable) -> None:
        """``callback(phase, tracker)`` when a phase has sent its last request."""
        cls.register("phase_sending_complete", callback)

    @classmethod
    def register_phase_timeout(cls, callback: Callable) -> None:
        """``callback(phase, tracker)`` when a duration/grace limit ends a phase."""
        cls.register("phase_timeout", callback)

    @classmethod
    def register_phase_complete(cls, callback: Callable) -> None:
        """``callback(phase, tracker)`` when a phase has completed (summary available)."""
        cls.register("phase_complete", callback)

    @classmethod
    def register_benchmark_start(cls, callback: Callable) -> None:
        """``callback(tracker)`` once, before the first phase."""
        cls.register("benchmark_start", callback)

    @classmethod
    def register_benchmark_complete(cls, callback: Callable) -> None:
        """``callback(tracker)`` once, after the last phase."""
        cls.register("benchmark_complete", callback)

    @classmethod
    def get_phase_start_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("phase_start")

    @classmethod
    def get_request_records_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("request_records")

    @classmethod
    def get_progress_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("progress")

    @classmethod
    def get_phase_sending_complete_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("phase_sending_complete")

    @classmethod
    def get_phase_timeout_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("phase_timeout")

    @classmethod
    def get_phase_complete_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("phase_complete")

    @classmethod
    def get_benchmark_start_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("benchmark_start")

    @classmethod
    def get_benchmark_complete_callbacks(cls) -> List[Callable]:
        return cls.get_callbacks("benchmark_complete")
