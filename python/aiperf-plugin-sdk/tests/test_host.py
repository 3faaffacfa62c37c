"""The installed ``aiperf-plugin-python`` executable, driven over protocol v1."""

import json
import os
import subprocess
import time
import unittest

from aiperf_plugin import RunContext

from _support import ALL_HOOKS, HOST_EXE, RUN_EVENTS, SUMMARY, PluginTestCase, hello, phase_stats


class ListTest(PluginTestCase):
    def test_list_prints_all_entry_points_without_importing(self):
        marker = self.path("imported")
        started = time.monotonic()
        out = subprocess.run(
            [HOST_EXE, "--list"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, AIPERF_SDK_TEST_IMPORT_MARKER=marker),
            timeout=20,
            check=True,
        )
        elapsed = time.monotonic() - started
        lines = out.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, out.stdout)
        payload = json.loads(lines[0])
        self.assertEqual(list(payload), ["plugins"])
        by_name = {p["name"]: p for p in payload["plugins"]}
        self.assertEqual(
            by_name["datadog"],
            {
                "name": "datadog",
                "value": "aiperf_datadog_plugin.plugin:DatadogPhasePlugin",
                "dist": "aiperf-datadog-plugin",
                "dist_version": "1.0.0",
            },
        )
        self.assertEqual(
            by_name["custom_monitor"],
            {
                "name": "custom_monitor",
                "value": "aiperf_custom_monitor_plugin.plugin:CustomMonitorPlugin",
                "dist": "aiperf-custom-monitor-plugin",
                "dist_version": "0.1.0",
            },
        )
        self.assertEqual(
            by_name["py_hook_log"],
            {
                "name": "py_hook_log",
                "value": "aiperf_py_hook_log_plugin.plugin:PyHookLogPlugin",
                "dist": "aiperf-py-hook-log-plugin",
                "dist_version": "0.1.0",
            },
        )
        # Listed, but its (broken) module was never imported.
        self.assertIn("sdk_test_broken_import", by_name)
        self.assertFalse(os.path.exists(marker), "--list imported a plugin module")
        self.assertEqual(out.stderr, b"")
        self.assertLess(elapsed, 5.0)


class SessionTest(PluginTestCase):
    def test_full_session_py_hook_log(self):
        log = self.path("hooks.log")
        p = self.spawn("--plugin", "py_hook_log")
        hs = p.handshake("py_hook_log")
        self.assertEqual(hs["protocol_version"], 1)
        self.assertEqual(hs["name"], "py_hook_log")
        self.assertEqual(hs["version"], "0.1.0")
        self.assertEqual(hs["hooks"], ALL_HOOKS)
        self.assertEqual(hs["config_schema"]["required"], ["file"])
        self.assertEqual(p.configure({"file": log}), {"type": "configured"})
        for i, (hook, phase) in enumerate(RUN_EVENTS, start=1):
            summary = SUMMARY if hook in ("phase_complete", "benchmark_complete") else None
            ack = p.event(i, hook, phase, summary=summary)
            self.assertEqual(ack, {"type": "ack", "id": i})
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(p.remaining_stdout(), [])
        self.assertEqual(
            self.read_lines("hooks.log"),
            [f"py-hook-log {hook} {phase or '-'}" for hook, phase in RUN_EVENTS],
        )
        # Exactly one line per message, all of them protocol messages.
        self.assertEqual(len(p.stdout_lines), 2 + len(RUN_EVENTS))

    def test_plugin_name_taken_from_hello_without_flag(self):
        p = self.spawn()
        hs = p.handshake("py_hook_log")
        self.assertEqual(hs["name"], "py_hook_log")
        self.assertEqual(p.shutdown(), 0)

    def test_pipelined_input_then_eof_is_fully_answered(self):
        """Everything written at once, stdin closed: all events still get acked."""
        log = self.path("hooks.log")
        p = self.spawn("--plugin", "py_hook_log")
        lines = [hello("py_hook_log"), {"type": "configure", "config": {"file": log}}]
        lines += [{"type": "event", "id": i, "hook": h, "phase": ph,
                   "stats": phase_stats(ph) if ph else None, "summary": None}
                  for i, (h, ph) in enumerate(RUN_EVENTS, start=1)]
        p.send("\n".join(json.dumps(m) for m in lines))
        p.close_stdin()
        self.assertExitsWith(p, 0)
        msgs = p.remaining_stdout()
        self.assertEqual([m["type"] for m in msgs], ["handshake", "configured"] + ["ack"] * len(RUN_EVENTS))
        self.assertEqual([m["id"] for m in msgs[2:]], list(range(1, len(RUN_EVENTS) + 1)))
        self.assertEqual(len(self.read_lines("hooks.log")), len(RUN_EVENTS))

    def test_unknown_fields_types_and_garbage_input_are_ignored(self):
        log = self.path("hooks.log")
        p = self.spawn("--plugin", "py_hook_log")
        hs = p.handshake("py_hook_log", future_field={"x": 1})
        self.assertEqual(hs["type"], "handshake")
        p.send({"type": "frobnicate", "id": 99})
        p.send("this is not json")
        p.send("[1, 2, 3]")
        p.send("")
        p.send({"type": "configure", "config": {"file": log}, "extra": True})
        self.assertEqual(p.recv(), {"type": "configured"})
        p.send({"type": "event", "id": 1, "hook": "phase_start", "phase": "warmup",
                "stats": phase_stats("warmup"), "summary": None, "trace_id": "abc"})
        self.assertEqual(p.recv(), {"type": "ack", "id": 1})
        # A hook from a future protocol revision: acked, no callbacks.
        self.assertEqual(p.event(2, "phase_exploded", "warmup"), {"type": "ack", "id": 2})
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(self.read_lines("hooks.log"), ["py-hook-log phase_start warmup"])

    def test_declared_hooks_and_schema_in_handshake(self):
        log = self.path("declared.log")
        p = self.spawn("--plugin", "sdk_test_declared")
        hs = p.handshake("sdk_test_declared")
        self.assertEqual(hs["hooks"], ["benchmark_start", "phase_complete"])  # protocol order
        self.assertEqual(hs["config_schema"]["required"], ["file"])
        self.assertEqual(hs["version"], "0.0.1")
        self.assertEqual(p.configure({"file": log}), {"type": "configured"})
        p.event(1, "benchmark_start")
        p.event(2, "phase_complete", "profiling")
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(self.read_lines("declared.log"), ["benchmark_start", "phase_complete profiling"])
        self.assertIn("phase_start, which its HOOKS do not list", p.stderr)

    def test_reconfigure_replaces_callbacks(self):
        first, second = self.path("a.log"), self.path("b.log")
        p = self.spawn("--plugin", "py_hook_log")
        p.start("py_hook_log", {"file": first})
        p.event(1, "phase_start", "warmup")
        self.assertEqual(p.configure({"file": second}), {"type": "configured"})
        p.event(2, "phase_start", "profiling")
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(self.read_lines("a.log"), ["py-hook-log phase_start warmup"])
        self.assertEqual(self.read_lines("b.log"), ["py-hook-log phase_start profiling"])

    def test_event_before_configure_acks_with_error(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.handshake("py_hook_log")
        ack = p.event(1, "phase_start", "warmup")
        self.assertIn("not configured", ack["error"])
        self.assertEqual(p.shutdown(), 0)


class HandshakeErrorTest(PluginTestCase):
    def test_version_mismatch_sends_error_and_exits_nonzero(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.send(hello("py_hook_log", versions=(2, 3)))
        msg = p.recv()
        self.assertEqual(msg["type"], "error")
        self.assertIn("protocol version", msg["message"])
        self.assertExitsWith(p, 1)
        self.assertEqual(p.remaining_stdout(), [])

    def test_hello_without_versions_is_a_mismatch(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.send({"type": "hello", "plugin_name": "py_hook_log"})
        self.assertEqual(p.recv()["type"], "error")
        self.assertExitsWith(p, 1)

    def test_highest_common_version_is_chosen(self):
        p = self.spawn("--plugin", "py_hook_log")
        hs = p.handshake("py_hook_log", versions=(1, 2))
        self.assertEqual(hs["protocol_version"], 1)
        self.assertEqual(p.shutdown(), 0)

    def test_plugin_name_mismatch(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.send(hello("datadog"))
        msg = p.recv()
        self.assertEqual(msg["type"], "error")
        self.assertIn("py_hook_log", msg["message"])
        self.assertIn("datadog", msg["message"])
        self.assertExitsWith(p, 1)

    def test_unknown_plugin(self):
        p = self.spawn("--plugin", "no_such_plugin")
        p.send(hello("no_such_plugin"))
        msg = p.recv()
        self.assertEqual(msg["type"], "error")
        self.assertIn("no_such_plugin", msg["message"])
        self.assertIn("py_hook_log", msg["message"])  # lists what is installed
        self.assertExitsWith(p, 1)

    def test_import_failure_reports_exception(self):
        marker = self.path("imported")
        p = self.spawn("--plugin", "sdk_test_broken_import", env={"AIPERF_SDK_TEST_IMPORT_MARKER": marker})
        p.send(hello("sdk_test_broken_import"))
        msg = p.recv()
        self.assertEqual(msg["type"], "error")
        self.assertIn("ImportError", msg["message"])
        self.assertIn("broken on purpose", msg["message"])
        self.assertExitsWith(p, 1)
        self.assertTrue(os.path.exists(marker))
        self.assertIn("Traceback", p.stderr)

    def test_missing_attribute_reports_exception(self):
        p = self.spawn("--plugin", "sdk_test_missing_attr")
        p.send(hello("sdk_test_missing_attr"))
        msg = p.recv()
        self.assertEqual(msg["type"], "error")
        self.assertIn("NoSuchClass", msg["message"])
        self.assertExitsWith(p, 1)

    def test_unknown_declared_hook(self):
        p = self.spawn("--plugin", "sdk_test_bad_hooks")
        p.send(hello("sdk_test_bad_hooks"))
        msg = p.recv()
        self.assertEqual(msg["type"], "error")
        self.assertIn("phase_exploded", msg["message"])
        self.assertExitsWith(p, 1)


class ConfigureErrorTest(PluginTestCase):
    def test_constructor_raising_gives_error_reply(self):
        p = self.spawn("--plugin", "sdk_test_raising_ctor")
        p.handshake("sdk_test_raising_ctor")
        msg = p.configure({"anything": 1})
        self.assertEqual(msg["type"], "error")
        self.assertIn("ValueError", msg["message"])
        self.assertIn("constructor exploded", msg["message"])
        # Still answering; events are refused until a configure succeeds.
        ack = p.event(1, "phase_start", "warmup")
        self.assertIn("not configured", ack["error"])
        self.assertEqual(p.shutdown(), 0)

    def test_register_hooks_raising_gives_error_reply(self):
        p = self.spawn("--plugin", "sdk_test_raising_register")
        p.handshake("sdk_test_raising_register")
        msg = p.configure({})
        self.assertEqual(msg["type"], "error")
        self.assertIn("register_hooks exploded", msg["message"])
        self.assertIn("not configured", p.event(1, "phase_start", "warmup")["error"])
        self.assertEqual(p.shutdown(), 0)

    def test_py_hook_log_without_path_is_rejected(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.handshake("py_hook_log")
        msg = p.configure({})
        self.assertEqual(msg["type"], "error")
        self.assertIn("file", msg["message"])
        self.assertEqual(p.shutdown(), 0)

    def test_non_object_config_is_rejected(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.handshake("py_hook_log")
        msg = p.configure([1, 2])
        self.assertEqual(msg["type"], "error")
        self.assertEqual(p.shutdown(), 0)

    def test_configure_before_hello(self):
        p = self.spawn("--plugin", "py_hook_log")
        self.assertEqual(p.configure({"file": self.path("x")})["type"], "error")
        p.handshake("py_hook_log")
        self.assertEqual(p.configure({"file": self.path("x")}), {"type": "configured"})
        self.assertEqual(p.shutdown(), 0)


class CallbackTest(PluginTestCase):
    def test_raising_callbacks_give_ack_error_and_others_still_run(self):
        log = self.path("cb.log")
        p = self.spawn("--plugin", "sdk_test_callbacks")
        p.start("sdk_test_callbacks", {"file": log})
        ack = p.event(1, "phase_complete", "profiling", summary=SUMMARY)
        self.assertEqual(
            ack["error"],
            repr(RuntimeError("sdk test: callback exploded")) + "; " + repr(KeyError("sdk test: async callback exploded")),
        )
        self.assertEqual(
            self.read_lines("cb.log"),
            [
                "first_async profiling",
                "raising_sync profiling",
                "second_sync profiling thread=False",  # sync callbacks run off the main thread
                "raising_async profiling",
                "async_callable profiling",
            ],
        )
        # The next event is fine: no error field at all.
        self.assertEqual(p.event(2, "phase_start", "warmup"), {"type": "ack", "id": 2})
        self.assertEqual(self.read_lines("cb.log")[-2:], ["slow_async warmup", "after_slow warmup"])
        self.assertEqual(p.shutdown(), 0)
        self.assertIn("callback exploded", p.stderr)  # traceback logged on stderr

    def test_fail_hooks_of_py_hook_log(self):
        log = self.path("hooks.log")
        p = self.spawn("--plugin", "py_hook_log")
        p.start("py_hook_log", {"file": log, "fail_hooks": ["phase_complete"]})
        self.assertNotIn("error", p.event(1, "phase_start", "profiling"))
        ack = p.event(2, "phase_complete", "profiling")
        self.assertIn("py-hook-log: failing phase_complete", ack["error"])
        self.assertEqual(p.shutdown(), 0)

    def test_callback_arguments(self):
        log = self.path("args.log")
        p = self.spawn("--plugin", "sdk_test_args")
        p.start("sdk_test_args", {"file": log, "k": [1, {"v": None}]})
        p.event(1, "benchmark_start")
        p.event(2, "phase_start", "warmup", stats=phase_stats("warmup", sent=0, new_field="hello"))
        p.event(3, "phase_timeout", "profiling", stats=phase_stats("profiling", timed_out=True))
        p.event(4, "phase_complete", "profiling", summary=SUMMARY)
        p.event(5, "benchmark_complete", summary=SUMMARY)
        self.assertEqual(p.shutdown(), 0)
        records = [json.loads(line) for line in self.read_lines("args.log")]
        self.assertEqual(len(records), 5)
        bench_start, start, timeout, complete, bench_complete = records
        self.assertEqual(
            bench_start,
            {"nargs": 1, "hook": "benchmark_start", "event_id": 1, "is_tracker": True,
             "phase": None, "stats": None, "summary": None},
        )
        self.assertEqual(bench_complete["summary"], SUMMARY)
        self.assertEqual((bench_complete["nargs"], bench_complete["phase"], bench_complete["stats"]), (1, None, None))
        for rec in (start, timeout, complete):
            self.assertEqual(rec["nargs"], 2)
            self.assertTrue(rec["phase_is_enum"])
            self.assertTrue(rec["phase_eq_str"])
            self.assertTrue(rec["tracker_phase_is_enum"])
            self.assertTrue(rec["stats_is_phase_stats"])
            self.assertEqual(rec["config"], {"file": log, "k": [1, {"v": None}]})
        self.assertEqual(start["phase"], "warmup")
        self.assertEqual(start["sent"], 0)
        self.assertEqual(start["new_field"], "hello")
        self.assertEqual(start["stats"], phase_stats("warmup", sent=0, new_field="hello"))
        self.assertIsNone(start["summary"])
        self.assertTrue(timeout["timed_out"])
        self.assertEqual(complete["new_field"], "<missing>")
        self.assertEqual(complete["summary"], SUMMARY)
        self.assertEqual(complete["stats"], phase_stats("profiling"))

    def test_run_context_in_configure_and_benchmark_start(self):
        context = {
            "run_id": "5f0c-run",
            "aiperf_version": "0.1.0",
            "models": ["m1"],
            "urls": ["http://127.0.0.1:40000"],
            "endpoint_type": "chat",
            "endpoint_path": "/v1/chat/completions",
            "streaming": True,
            "artifact_dir": "/tmp/artifacts",
            "load": {"mode": "concurrency", "concurrency": 4, "request_count": 10, "grace_period_sec": 30.0},
            "warmup": None,
            "input_config": {"endpoint": {"model_names": ["m1"]}},
            "from_a_newer_aiperf": 1,
        }
        log = self.path("ctx.log")
        p = self.spawn("--plugin", "sdk_test_context")
        p.handshake("sdk_test_context")
        p.send({"type": "configure", "config": {"file": log}, "context": context})
        self.assertEqual(p.recv(), {"type": "configured"})
        p.send({"type": "event", "id": 1, "hook": "benchmark_start", "phase": None, "stats": None,
                "summary": None, "context": context})
        self.assertNotIn("error", p.recv())
        p.event(2, "phase_complete", "profiling")
        self.assertEqual(p.shutdown(), 0)
        init, register, start, phase = [json.loads(line) for line in self.read_lines("ctx.log")]
        self.assertEqual(init, {"where": "init", "run_id": "5f0c-run"})
        self.assertEqual(register, {"where": "register", "run_id": "5f0c-run"})
        self.assertTrue(start["is_run_context"])
        self.assertTrue(start["same_as_plugin"])
        got = start["context"]
        self.assertEqual(got["from_a_newer_aiperf"], 1)  # unknown fields are kept
        self.assertEqual(RunContext.from_dict(got), RunContext.from_dict(context))
        self.assertEqual((got["run_id"], got["models"], got["urls"]), ("5f0c-run", ["m1"], ["http://127.0.0.1:40000"]))
        self.assertEqual((got["load"]["concurrency"], got["load"]["arrival_pattern"]), (4, None))
        self.assertEqual(got["input_config"], context["input_config"])
        self.assertEqual(phase["tracker_context"], True)

        # A plain constructor gets it as an attribute; an older host (no context) gives None.
        log = self.path("attr.log")
        for ctx, expected in ((context, {"models": ["m1"], "load": "concurrency"}),
                              (None, {"models": None, "load": None})):
            p = self.spawn("--plugin", "sdk_test_context_attr")
            p.handshake("sdk_test_context_attr")
            message = {"type": "configure", "config": {"file": log}}
            if ctx is not None:
                message["context"] = ctx
            p.send(message)
            self.assertEqual(p.recv(), {"type": "configured"})
            self.assertEqual(p.shutdown(), 0)
            self.assertEqual(json.loads(self.read_lines("attr.log")[-1]), expected)

    def test_print_never_reaches_stdout(self):
        p = self.spawn("--plugin", "sdk_test_printer")
        p.start("sdk_test_printer", {})  # recv() fails on any non-protocol stdout line
        self.assertEqual(p.event(1, "benchmark_start"), {"type": "ack", "id": 1})
        self.assertEqual(p.event(2, "phase_start", "warmup"), {"type": "ack", "id": 2})
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(p.remaining_stdout(), [])
        self.assertEqual(len(p.stdout_lines), 4)
        for text in (
            "printer: print at import",
            "printer: print in constructor",
            "printer: sys.stdout.write in constructor",
            "printer: print in register_hooks",
            "printer: print in sync callback warmup",
            "printer: print in async callback warmup",
            "printer: sys.__stdout__",
            "printer: os.write(1)",
            "printer: child process stdout",
        ):
            self.assertIn(text, p.stderr)


class LifecycleTest(PluginTestCase):
    def test_eof_before_hello_exits_zero(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.close_stdin()
        self.assertExitsWith(p, 0, timeout=5)
        self.assertEqual(p.remaining_stdout(), [])

    def test_eof_after_configure_exits_zero_promptly(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.start("py_hook_log", {"file": self.path("x.log")})
        started = time.monotonic()
        p.close_stdin()
        self.assertExitsWith(p, 0, timeout=5)
        self.assertLess(time.monotonic() - started, 1.5)

    def test_shutdown_exits_zero_promptly(self):
        p = self.spawn("--plugin", "py_hook_log")
        p.start("py_hook_log", {"file": self.path("x.log")})
        started = time.monotonic()
        p.send({"type": "shutdown"})  # stdin left open: shutdown alone must be enough
        self.assertExitsWith(p, 0, timeout=5)
        self.assertLess(time.monotonic() - started, 1.5)

    def test_blocking_sync_callback_then_prompt_ack(self):
        log = self.path("hooks.log")
        p = self.spawn("--plugin", "py_hook_log")
        p.start("py_hook_log", {"file": log, "sleep_seconds": 1.0, "sleep_hooks": ["phase_start"]})
        started = time.monotonic()
        p.send({"type": "event", "id": 1, "hook": "phase_start", "phase": "warmup",
                "stats": phase_stats("warmup"), "summary": None})
        # Messages sent during the blocking callback are read and ignored meanwhile.
        time.sleep(0.2)
        p.send({"type": "frobnicate"})
        ack = p.recv(timeout=5)
        elapsed = time.monotonic() - started
        self.assertEqual(ack, {"type": "ack", "id": 1})
        self.assertGreaterEqual(elapsed, 0.95)
        self.assertLess(elapsed, 2.0)
        # Non-sleeping hook right after: fast.
        started = time.monotonic()
        p.event(2, "phase_complete", "warmup")
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual(p.shutdown(), 0)

    def test_shutdown_during_hung_callback_exits_zero_quickly(self):
        log = self.path("hooks.log")
        p = self.spawn("--plugin", "py_hook_log")
        p.start("py_hook_log", {"file": log, "sleep_seconds": 30})
        p.send({"type": "event", "id": 1, "hook": "benchmark_start", "phase": None, "stats": None, "summary": None})
        deadline = time.monotonic() + 5
        while not self.read_lines("hooks.log") and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.read_lines("hooks.log"), ["py-hook-log benchmark_start -"])
        started = time.monotonic()
        p.send({"type": "shutdown"})
        p.close_stdin()
        self.assertExitsWith(p, 0, timeout=5)
        self.assertLess(time.monotonic() - started, 2.0)  # inside the host's 2 s grace
        self.assertEqual(p.remaining_stdout(), [])  # the hung event was never acked


if __name__ == "__main__":
    unittest.main()
