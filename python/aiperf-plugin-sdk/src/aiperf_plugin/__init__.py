"""aiperf plugin SDK: write aiperf plugins in Python.

A plugin is a class constructed with its config dict whose ``register_hooks()`` puts
callbacks into :class:`PhaseHookRegistry`; it is published through an entry point in the
``aiperf.plugins`` group and served to aiperf by the ``aiperf-plugin-python`` executable.

Phase hook callbacks are called as ``callback(phase, tracker)``; benchmark hook callbacks
as ``callback(tracker)`` (``tracker.phase is None``, ``tracker.create_stats() is None``,
``tracker.summary`` set on ``benchmark_complete``). Callbacks may be sync or async.

The run's context (:class:`RunContext`: run id, models, URLs, load, artifact directory,
resolved config) is the plugin's ``context`` attribute, set before ``register_hooks()``; a
constructor that takes a ``context`` keyword gets it there too. ``tracker.context`` holds it
on ``benchmark_start``.

Two opt-in hooks (list them in the plugin's ``HOOKS``) stream data while a phase runs:
``request_records`` (``tracker.records``: finished requests as ``profile_export.jsonl``
dicts, ``tracker.dropped_records``) and ``progress`` (``tracker.create_stats()`` and
``tracker.window``, a :class:`ProgressWindow`).

A plugin adds metrics and notes to the run's report by returning a :class:`Report` (or a
dict ``{"metrics": {...}, "notes": [...]}``) from a callback, or by calling
:func:`report` at any time.
"""

__version__ = "0.1.0"

from .context import LoadContext, RunContext, ShardPart, SweepParameters, SweepPoint
from .enums import CreditPhase, HookName
from .phase_hooks import (
    BENCHMARK_HOOKS,
    HOOK_NAMES,
    LIFECYCLE_HOOKS,
    PHASE_HOOKS,
    STREAMING_HOOKS,
    SWEEP_HOOKS,
    PhaseHookRegistry,
)
from .progress import ProgressWindow, WindowStat
from .reporting import MetricValue, Report, report
from .tracker import UPSTREAM_ALIASES, CreditPhaseTracker, PhaseStats, PhaseTracker

__all__ = [
    "__version__",
    "CreditPhase",
    "LoadContext",
    "SweepParameters",
    "ShardPart",
    "SweepPoint",
    "RunContext",
    "HookName",
    "PhaseHookRegistry",
    "PhaseStats",
    "PhaseTracker",
    "CreditPhaseTracker",
    "ProgressWindow",
    "WindowStat",
    "Report",
    "MetricValue",
    "report",
    "UPSTREAM_ALIASES",
    "HOOK_NAMES",
    "LIFECYCLE_HOOKS",
    "STREAMING_HOOKS",
    "SWEEP_HOOKS",
    "PHASE_HOOKS",
    "BENCHMARK_HOOKS",
]
