"""In-process tests of the SDK's Python API (registry, enums, tracker, discovery)."""

import json
import unittest

import aiperf_plugin
from aiperf_plugin import CreditPhase, LoadContext, PhaseHookRegistry, PhaseStats, PhaseTracker, RunContext
from aiperf_plugin.discovery import find_plugin, list_plugins

from _support import SUMMARY, phase_stats


class CreditPhaseTest(unittest.TestCase):
    def test_str_enum_behaviour(self):
        self.assertEqual(CreditPhase.WARMUP.value, "warmup")
        self.assertEqual(CreditPhase.PROFILING.value, "profiling")
        self.assertEqual(CreditPhase("profiling"), CreditPhase.PROFILING)
        self.assertTrue(CreditPhase.PROFILING == "profiling")
        self.assertIsInstance(CreditPhase.WARMUP, str)
        self.assertEqual(f"{CreditPhase.WARMUP}", "warmup")
        self.assertEqual(f"phase:{CreditPhase.PROFILING}", "phase:profiling")
        self.assertEqual(str(CreditPhase.PROFILING), "profiling")
        self.assertEqual("{:>10}".format(CreditPhase.WARMUP), "    warmup")
        self.assertEqual(json.dumps({"p": CreditPhase.WARMUP}), '{"p": "warmup"}')
        self.assertEqual({CreditPhase.WARMUP: 1}["warmup"], 1)

    def test_seed_import_aliases(self):
        from aiperf_plugin.common.enums import CreditPhase as C2
        from aiperf_plugin.enums import CreditPhase as C1
        from aiperf_plugin.phase_hooks import PhaseHookRegistry as R1
        from aiperf_plugin.timing.phase_hooks import PhaseHookRegistry as R2

        self.assertIs(C1, CreditPhase)
        self.assertIs(C2, CreditPhase)
        self.assertIs(R1, PhaseHookRegistry)
        self.assertIs(R2, PhaseHookRegistry)
        self.assertEqual(aiperf_plugin.__version__, "0.1.0")


class RegistryTest(unittest.TestCase):
    def setUp(self):
        PhaseHookRegistry.clear()

    tearDown = setUp

    def test_register_and_get_in_order(self):
        def a(phase, tracker):
            pass

        async def b(phase, tracker):
            pass

        PhaseHookRegistry.register_phase_start(a)
        PhaseHookRegistry.register_phase_start(b)
        PhaseHookRegistry.register_phase_sending_complete(a)
        PhaseHookRegistry.register_phase_complete(b)
        PhaseHookRegistry.register_phase_timeout(a)
        PhaseHookRegistry.register_benchmark_start(a)
        PhaseHookRegistry.register_benchmark_complete(b)
        self.assertEqual(PhaseHookRegistry.get_phase_start_callbacks(), [a, b])
        self.assertEqual(PhaseHookRegistry.get_phase_sending_complete_callbacks(), [a])
        self.assertEqual(PhaseHookRegistry.get_phase_complete_callbacks(), [b])
        self.assertEqual(PhaseHookRegistry.get_phase_timeout_callbacks(), [a])
        self.assertEqual(PhaseHookRegistry.get_benchmark_start_callbacks(), [a])
        self.assertEqual(PhaseHookRegistry.get_benchmark_complete_callbacks(), [b])
        self.assertEqual(PhaseHookRegistry.get_callbacks("phase_start"), [a, b])
        self.assertEqual(
            PhaseHookRegistry.registered_hooks(),
            [
                "benchmark_start",
                "phase_start",
                "phase_sending_complete",
                "phase_timeout",
                "phase_complete",
                "benchmark_complete",
            ],
        )

    def test_getters_return_copies_and_clear(self):
        PhaseHookRegistry.register_phase_complete(print)
        got = PhaseHookRegistry.get_phase_complete_callbacks()
        got.append(len)
        self.assertEqual(PhaseHookRegistry.get_phase_complete_callbacks(), [print])
        PhaseHookRegistry.clear()
        self.assertEqual(PhaseHookRegistry.get_phase_complete_callbacks(), [])
        self.assertEqual(PhaseHookRegistry.registered_hooks(), [])

    def test_rejects_bad_input(self):
        with self.assertRaises(TypeError):
            PhaseHookRegistry.register_phase_start("not callable")
        with self.assertRaises(ValueError):
            PhaseHookRegistry.register("phase_exploded", print)


class TrackerTest(unittest.TestCase):
    def test_phase_event_tracker(self):
        stats = phase_stats("profiling", new_field=[1, 2])
        tracker = PhaseTracker.from_event(
            {"type": "event", "id": 7, "hook": "phase_complete", "phase": "profiling", "stats": stats, "summary": SUMMARY}
        )
        self.assertIs(tracker.phase, CreditPhase.PROFILING)
        self.assertEqual(tracker.hook, "phase_complete")
        self.assertEqual(tracker.event_id, 7)
        self.assertEqual(tracker.summary, SUMMARY)
        s = tracker.create_stats()
        self.assertIsInstance(s, PhaseStats)
        self.assertIs(s.phase, CreditPhase.PROFILING)
        for field in ("sent", "completed", "errors", "cancelled", "in_flight", "expected", "duration_sec",
                      "start_time_ns", "sending_complete_time_ns", "end_time_ns", "timed_out"):
            self.assertEqual(getattr(s, field), stats[field], field)
        self.assertEqual(s.new_field, [1, 2])
        self.assertEqual(s.extra, {"new_field": [1, 2]})
        self.assertEqual(s.to_dict(), stats)
        with self.assertRaises(AttributeError):
            s.no_such_field
        # A fresh snapshot each time.
        s.sent = 0
        self.assertEqual(tracker.create_stats().sent, 100)
        self.assertEqual(tracker.create_stats(), tracker.create_stats())

    def test_server_metrics_on_phase_complete(self):
        sm = {"start_ns": 1, "end_ns": 2, "endpoints": [], "notes": [],
              "metrics": {"vllm:num_requests_running": {"type": "gauge", "series": []}}}
        tracker = PhaseTracker.from_event({"type": "event", "id": 4, "hook": "phase_complete", "phase": "profiling",
                                           "stats": phase_stats("profiling"), "summary": SUMMARY, "server_metrics": sm})
        self.assertEqual(tracker.server_metrics, sm)
        self.assertIsNone(PhaseTracker.from_event({"hook": "phase_complete", "phase": "warmup"}).server_metrics)
        self.assertIsNone(PhaseTracker.from_event({"hook": "phase_complete", "server_metrics": [1]}).server_metrics)

    def test_missing_fields_get_defaults(self):
        tracker = PhaseTracker.from_event({"type": "event", "id": 1, "hook": "phase_start", "phase": "warmup",
                                           "stats": {"sent": 3}})
        s = tracker.create_stats()
        self.assertIs(s.phase, CreditPhase.WARMUP)
        self.assertEqual((s.sent, s.completed, s.expected, s.end_time_ns, s.timed_out), (3, 0, None, None, False))
        self.assertIsNone(tracker.summary)

    def test_benchmark_event_tracker(self):
        tracker = PhaseTracker.from_event({"type": "event", "id": 9, "hook": "benchmark_complete", "phase": None,
                                           "stats": None, "summary": SUMMARY})
        self.assertIsNone(tracker.phase)
        self.assertIsNone(tracker.create_stats())
        self.assertEqual(tracker.summary, SUMMARY)

    def test_unknown_phase_stays_string(self):
        tracker = PhaseTracker(phase="cooldown", stats={"phase": "cooldown"})
        self.assertEqual(tracker.phase, "cooldown")
        self.assertEqual(tracker.create_stats().to_dict()["phase"], "cooldown")


class DiscoveryTest(unittest.TestCase):
    def test_entry_points_listed_with_dists(self):
        by_name = {e.name: e for e in list_plugins()}
        self.assertEqual(by_name["datadog"].value, "aiperf_datadog_plugin.plugin:DatadogPhasePlugin")
        self.assertEqual(by_name["datadog"].dist, "aiperf-datadog-plugin")
        self.assertEqual(by_name["datadog"].dist_version, "1.0.0")
        self.assertEqual(by_name["py_hook_log"].dist, "aiperf-py-hook-log-plugin")
        self.assertEqual(by_name["custom_monitor"].dist, "aiperf-custom-monitor-plugin")
        self.assertEqual(by_name["slo_alarm"].value, "aiperf_slo_alarm_plugin.plugin:SloAlarmPlugin")
        self.assertEqual(by_name["slo_alarm"].dist, "aiperf-slo-alarm-plugin")
        self.assertIsNone(find_plugin("no_such_plugin_anywhere"))
        self.assertEqual(find_plugin("py_hook_log").value, "aiperf_py_hook_log_plugin.plugin:PyHookLogPlugin")


if __name__ == "__main__":
    unittest.main()


class RunContextTest(unittest.TestCase):
    def test_from_dict_is_typed_and_tolerant(self):
        ctx = RunContext.from_dict(
            {"run_id": "r", "models": ["a", "b"], "load": {"mode": "request_rate", "request_rate": 2.5, "new": 1},
             "warmup": {"mode": "concurrency", "concurrency": 2}, "later": True}
        )
        self.assertIsInstance(ctx, RunContext)
        self.assertEqual(ctx.run_id, "r")
        self.assertEqual(ctx.model, "a")
        self.assertIsInstance(ctx.load, LoadContext)
        self.assertEqual((ctx.load.mode, ctx.load.request_rate, ctx.load.concurrency), ("request_rate", 2.5, None))
        self.assertEqual(ctx.warmup, LoadContext(mode="concurrency", concurrency=2))
        self.assertEqual(ctx.extra, {"later": True})
        self.assertEqual(ctx.to_dict()["later"], True)
        self.assertEqual(ctx.input_config, {})
        self.assertIsNone(RunContext.from_dict(None))
        self.assertEqual(RunContext.from_dict({}), RunContext())
        self.assertIsNone(PhaseTracker.from_event({"hook": "benchmark_start"}).context)

    def test_package_is_typed(self):
        import os

        self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(aiperf_plugin.__file__), "py.typed")))
