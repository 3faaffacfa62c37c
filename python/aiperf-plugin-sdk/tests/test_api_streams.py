"""In-process tests: PhaseStats (fields, upstream aliases), ProgressWindow, Report, registry."""

import dataclasses
import math
import unittest

import aiperf_plugin
from aiperf_plugin import (
    HOOK_NAMES,
    LIFECYCLE_HOOKS,
    STREAMING_HOOKS,
    SWEEP_HOOKS,
    UPSTREAM_ALIASES,
    CreditPhase,
    HookName,
    PhaseHookRegistry,
    PhaseStats,
    PhaseTracker,
    ProgressWindow,
    Report,
    WindowStat,
)
from aiperf_plugin.reporting import report_from_return, validate_report

from _support import phase_stats

RUST_PHASE_STATS_FIELDS = (
    "phase", "sent", "completed", "errors", "cancelled", "in_flight", "expected", "duration_sec",
    "start_time_ns", "sending_complete_time_ns", "end_time_ns", "timed_out", "late_sends", "max_send_lag_ms",
)


class PhaseStatsTest(unittest.TestCase):
    def test_is_a_dataclass_with_the_wire_fields(self):
        self.assertTrue(dataclasses.is_dataclass(PhaseStats))
        self.assertEqual(PhaseStats.FIELDS, RUST_PHASE_STATS_FIELDS)
        self.assertEqual([f.name for f in dataclasses.fields(PhaseStats)], [*RUST_PHASE_STATS_FIELDS, "extra"])

    def test_parses_every_field(self):
        wire = phase_stats("profiling", late_sends=4, max_send_lag_ms=2.75, in_flight=2)
        s = PhaseStats.from_dict(wire)
        self.assertIs(s.phase, CreditPhase.PROFILING)
        for name in RUST_PHASE_STATS_FIELDS[1:]:
            self.assertEqual(getattr(s, name), wire[name], name)
        self.assertEqual(s.extra, {})
        self.assertEqual(s.to_dict(), wire)
        self.assertEqual(PhaseStats.from_dict(s.to_dict()), s)

    def test_missing_null_and_unknown_fields(self):
        s = PhaseStats.from_dict({"sent": 3, "completed": None, "late_sends": None, "future": {"x": 1}}, phase="warmup")
        self.assertIs(s.phase, CreditPhase.WARMUP)
        self.assertEqual((s.sent, s.completed, s.late_sends, s.start_time_ns), (3, 0, 0, 0))
        self.assertEqual((s.expected, s.end_time_ns, s.max_send_lag_ms, s.timed_out), (None, None, None, False))
        self.assertEqual(s.future, {"x": 1})
        self.assertEqual(s.extra, {"future": {"x": 1}})
        with self.assertRaises(AttributeError):
            s.not_a_field
        self.assertEqual(PhaseStats.from_dict(None), PhaseStats())
        self.assertEqual(PhaseStats.from_dict({"phase": "cooldown"}).phase, "cooldown")

    def running(self, **overrides):
        wire = phase_stats("profiling", sent=60, completed=50, errors=5, cancelled=2, in_flight=8, expected=200,
                           duration_sec=2.0, start_time_ns=1_000, sending_complete_time_ns=None, end_time_ns=None,
                           timed_out=False)
        wire.update(overrides)
        return PhaseStats.from_dict(wire)

    def test_every_upstream_alias(self):
        s = self.running()
        expected = {
            "requests_sent": 60,
            "requests_completed": 50,
            "requests_cancelled": 2,
            "request_errors": 5,
            "in_flight_requests": 8,
            "total_expected_requests": 200,
            "start_ns": 1_000,
            "sent_end_ns": None,
            "requests_end_ns": None,
            "timeout_triggered": False,
            "requests_elapsed_time": 2.0,
            "is_started": True,
            "is_sending_complete": False,
            "is_requests_complete": False,
            "final_requests_sent": None,
            "final_requests_completed": None,
            "final_requests_cancelled": None,
            "final_request_errors": None,
            "requests_error_percent": 10.0,
            "requests_progress_percent": 25.0,
            "requests_per_second": 25.0,
            "requests_eta_sec": 6.0,  # 75 % left at 12.5 %/s
        }
        self.assertEqual(set(expected), set(UPSTREAM_ALIASES))
        for name, value in expected.items():
            self.assertEqual(getattr(s, name), value, name)

        ended = self.running(sending_complete_time_ns=2_000, end_time_ns=3_000, timed_out=True)
        ended_expected = {
            "sent_end_ns": 2_000,
            "requests_end_ns": 3_000,
            "timeout_triggered": True,
            "is_sending_complete": True,
            "is_requests_complete": True,
            "final_requests_sent": 60,
            "final_requests_completed": 50,
            "final_requests_cancelled": 2,
            "final_request_errors": 5,
            "requests_progress_percent": 100.0,
            "requests_eta_sec": 0.0,
        }
        for name, value in ended_expected.items():
            self.assertEqual(getattr(ended, name), value, name)

    def test_aliases_follow_the_fields_and_are_read_only(self):
        s = self.running()
        s.sent = 61
        self.assertEqual(s.requests_sent, 61)
        for name in UPSTREAM_ALIASES:
            with self.assertRaises(AttributeError, msg=name):
                setattr(s, name, 1)
        self.assertNotIn("requests_sent", s.to_dict())

    def test_alias_edge_cases(self):
        # A time-bounded phase: no expected count, so progress and ETA are unknown here.
        s = self.running(expected=None)
        self.assertIsNone(s.requests_progress_percent)
        self.assertIsNone(s.requests_eta_sec)
        # Nothing completed yet.
        s = self.running(completed=0, errors=0, duration_sec=0.0)
        self.assertEqual((s.requests_error_percent, s.requests_per_second), (0.0, None))
        self.assertEqual(s.requests_progress_percent, 0.0)
        self.assertIsNone(s.requests_eta_sec)
        # More completed than expected (multi-turn counts conversations): capped.
        self.assertEqual(self.running(completed=500).requests_progress_percent, 100.0)
        self.assertIsNone(PhaseStats().requests_progress_percent)  # not started
        self.assertFalse(PhaseStats().is_started)

    def test_upstream_names_without_an_equivalent_are_not_faked(self):
        s = self.running()
        for name in ("expected_duration_sec", "expected_num_sessions", "expected_grace_period_sec",
                     "was_cancelled", "grace_period_timeout_triggered", "sent_sessions", "completed_sessions",
                     "in_flight_sessions", "exclude_from_results", "records_progress_percent"):
            self.assertFalse(hasattr(s, name), name)


class ProgressWindowTest(unittest.TestCase):
    def test_typed_and_tolerant(self):
        w = ProgressWindow.from_dict(
            {"window_sec": 5, "requests": 3, "later": "x",
             "metrics": {"request_latency": {"unit": "ms", "count": 3, "p90": 7.5, "p999": 9},
                         "odd": None}}
        )
        self.assertIsInstance(w, ProgressWindow)
        self.assertEqual((w.window_sec, w.requests, w.errors, w.request_throughput), (5, 3, 0, 0.0))
        stat = w.metric("request_latency")
        self.assertIsInstance(stat, WindowStat)
        self.assertEqual((stat.unit, stat.count, stat.p90, stat.p50), ("ms", 3, 7.5, 0.0))
        self.assertEqual(w.metrics["odd"], WindowStat())
        self.assertIsNone(w.metric("time_to_first_token"))
        self.assertEqual(w.extra, {"later": "x"})
        self.assertEqual(w.to_dict()["later"], "x")
        self.assertIsNone(ProgressWindow.from_dict(None))
        self.assertEqual(WindowStat.from_dict({"unit": 3, "avg": "fast", "max": True}), WindowStat())

    def test_tracker_fields_per_hook(self):
        t = PhaseTracker.from_event({"id": 1, "hook": "progress", "phase": "profiling",
                                     "stats": phase_stats(), "window": {"requests": 2}})
        self.assertEqual(t.window, ProgressWindow(requests=2))
        self.assertIsInstance(t.create_stats(), PhaseStats)
        self.assertEqual((t.records, t.dropped_records), (None, None))
        t = PhaseTracker.from_event({"id": 2, "hook": "request_records", "phase": "profiling", "stats": None,
                                     "records": [{"metadata": {}}, "junk"], "dropped_records": 7})
        self.assertEqual((t.records, t.dropped_records, t.window), ([{"metadata": {}}], 7, None))
        self.assertIsNone(t.create_stats())


class ReportTest(unittest.TestCase):
    def test_validate_keeps_the_valid_part(self):
        rep, errors = validate_report({"n": 1, "f": 2.5, "s": "x", "b": False, "l": [1], "inf": math.inf, "": 1,
                                       3: 1}, ["a", None])
        self.assertEqual(rep, Report({"n": 1, "f": 2.5, "s": "x", "b": False}, ["a"]))
        self.assertEqual(len(errors), 5, errors)
        self.assertEqual(validate_report(None, "one note"), (Report({}, ["one note"]), []))
        self.assertEqual(validate_report(Report({"a": 1}, ["x"]), ["y"]), (Report({"a": 1}, ["x", "y"]), []))
        rep, errors = validate_report([("a", 1)], 5)
        self.assertTrue(rep.is_empty())
        self.assertEqual(len(errors), 2, errors)
        self.assertEqual(Report({"a": 1}, ["n"]).to_message(), {"type": "report", "metrics": {"a": 1}, "notes": ["n"]})

    def test_return_values(self):
        self.assertEqual(report_from_return(None), (None, []))
        self.assertEqual(report_from_return(42), (None, []))
        self.assertEqual(report_from_return(Report({"a": 1})), (Report({"a": 1}), []))
        self.assertEqual(report_from_return({"notes": ["n"]}), (Report({}, ["n"]), []))
        rep, errors = report_from_return({"metrics": {"a": 1, "b": {}}, "status": "ok"})
        self.assertEqual(rep, Report({"a": 1}))
        self.assertEqual(len(errors), 2, errors)

    def test_report_without_a_host_is_not_sent(self):
        with self.assertLogs("aiperf_plugin.reporting", "WARNING") as logs:
            self.assertFalse(aiperf_plugin.report(metrics={"a": 1}))
        self.assertIn("no aiperf host", logs.output[0])
        with self.assertLogs("aiperf_plugin.reporting", "ERROR"):
            self.assertFalse(aiperf_plugin.report(metrics={"a": object()}))


class StreamingRegistryTest(unittest.TestCase):
    def setUp(self):
        PhaseHookRegistry.clear()

    tearDown = setUp

    def test_register_streaming_hooks(self):
        def a(phase, tracker):
            pass

        PhaseHookRegistry.register_request_records(a)
        PhaseHookRegistry.register_progress(a)
        PhaseHookRegistry.register("progress", print)
        self.assertEqual(PhaseHookRegistry.get_request_records_callbacks(), [a])
        self.assertEqual(PhaseHookRegistry.get_progress_callbacks(), [a, print])
        self.assertEqual(PhaseHookRegistry.registered_hooks(), ["request_records", "progress"])

    def test_hook_names(self):
        self.assertEqual(HOOK_NAMES, tuple(h.value for h in HookName))
        self.assertEqual(STREAMING_HOOKS, ("request_records", "progress"))
        self.assertEqual(SWEEP_HOOKS, ("sweep_start", "sweep_complete"))
        self.assertEqual(
            tuple(h for h in HOOK_NAMES if h not in STREAMING_HOOKS + SWEEP_HOOKS), LIFECYCLE_HOOKS
        )
        self.assertEqual(HOOK_NAMES[3:5], STREAMING_HOOKS)  # the Rust `Hook::ALL` order
        self.assertEqual((HOOK_NAMES[0], HOOK_NAMES[-1]), SWEEP_HOOKS)

    def test_sweep_context_is_optional(self):
        from aiperf_plugin import RunContext

        self.assertIsNone(RunContext.from_dict({"run_id": "r"}).sweep)
        self.assertNotIn("sweep", RunContext.from_dict({"run_id": "r"}).to_dict())
        ctx = RunContext.from_dict(
            {"sweep": {"index": 2, "count": 4, "trial": 1, "trials": 3, "parameters": {"concurrency": 8, "later": 1}}}
        )
        self.assertEqual((ctx.sweep.index, ctx.sweep.count, ctx.sweep.trial, ctx.sweep.trials), (2, 4, 1, 3))
        self.assertEqual(ctx.sweep.parameters.concurrency, 8)
        self.assertIsNone(ctx.sweep.parameters.isl)
        self.assertEqual(ctx.to_dict()["sweep"]["parameters"]["concurrency"], 8)

    def test_shard_context_is_optional(self):
        from aiperf_plugin import RunContext, ShardPart

        self.assertIsNone(RunContext.from_dict({"run_id": "r"}).shard)
        self.assertNotIn("shard", RunContext.from_dict({"run_id": "r"}).to_dict())
        ctx = RunContext.from_dict({"shard": {"index": 2, "count": 4, "merged": False, "later": 1}})
        self.assertEqual(ctx.shard, ShardPart(index=2, count=4, merged=False))
        merged = RunContext.from_dict({"shard": {"index": 0, "count": 4, "merged": True}})
        self.assertTrue(merged.shard.merged)
        self.assertEqual(merged.to_dict()["shard"], {"index": 0, "count": 4, "merged": True})


if __name__ == "__main__":
    unittest.main()
