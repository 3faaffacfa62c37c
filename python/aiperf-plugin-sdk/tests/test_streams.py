"""The opt-in hooks (request_records, progress) and reports, through the installed host."""

import json
import unittest

from _support import ALL_HOOKS, PluginTestCase, phase_stats

RECORD_OK = {
    "metadata": {"session_num": 0, "x_request_id": "a", "benchmark_phase": "profiling", "was_cancelled": False},
    "metrics": {
        "time_to_first_token": {"value": 12.5, "unit": "ms"},
        "request_latency": {"value": 40.0, "unit": "ms"},
    },
    "error": None,
}
RECORD_ERR = {
    "metadata": {"session_num": 1, "x_request_id": "b", "benchmark_phase": "profiling", "was_cancelled": False},
    "metrics": {},
    "error": {"code": 500, "type": "HTTPError", "message": "boom"},
}
WINDOW = {
    "window_sec": 5.0,
    "requests": 40,
    "errors": 1,
    "request_throughput": 8.0,
    "output_token_throughput": 512.5,
    "metrics": {
        "time_to_first_token": {"unit": "ms", "count": 39, "avg": 11.0, "min": 2.0, "max": 30.0,
                                "p50": 10.0, "p90": 20.0, "p99": 29.0},
        "request_latency": {"unit": "ms", "count": 40, "avg": 41.0, "min": 20.0, "max": 90.0,
                            "p50": 40.0, "p90": 70.0, "p99": 88.0},
    },
}


def records_event(event_id, records, dropped=None, phase="profiling"):
    msg = {"type": "event", "id": event_id, "hook": "request_records", "phase": phase,
           "stats": None, "summary": None, "records": records}
    if dropped is not None:
        msg["dropped_records"] = dropped
    return msg


def progress_event(event_id, stats, window, phase="profiling"):
    return {"type": "event", "id": event_id, "hook": "progress", "phase": phase,
            "stats": stats, "summary": None, "window": window}


def report(metrics=None, notes=None):
    return {"type": "report", "metrics": metrics or {}, "notes": notes or []}


class StreamingHooksTest(PluginTestCase):
    def start_streams(self, **config):
        log = self.path("streams.log")
        p = self.spawn("--plugin", "sdk_test_streams")
        hs = p.handshake("sdk_test_streams")
        self.assertEqual(p.configure({"file": log, **config}), {"type": "configured"})
        # The constructor's report() was held until the plugin was configured.
        self.assertEqual(p.recv(), report(notes=["constructed"]))
        return p, hs

    def log_lines(self):
        return [json.loads(line) for line in self.read_lines("streams.log")]

    def test_declared_streaming_hooks_are_in_the_handshake(self):
        p, hs = self.start_streams()
        self.assertEqual(hs["hooks"], ["request_records", "progress", "phase_complete", "benchmark_complete"])
        self.assertEqual(p.shutdown(), 0)

    def test_request_records_reach_the_callback_as_dicts_and_a_returned_report_precedes_the_ack(self):
        p, _ = self.start_streams()
        self.assertEqual(
            p.exchange(records_event(1, [RECORD_OK, RECORD_ERR], dropped=3)),
            [report(metrics={"records_seen": 2}), {"type": "ack", "id": 1}],
        )
        # An older host that leaves dropped_records out: 0.
        self.assertEqual(
            p.exchange(records_event(2, [RECORD_OK], phase="warmup")),
            [report(metrics={"records_seen": 3}), {"type": "ack", "id": 2}],
        )
        self.assertEqual(p.shutdown(), 0)
        first, second = self.log_lines()
        self.assertEqual(
            first,
            {"hook": "request_records", "phase": "profiling", "phase_is_enum": True, "records_is_list": True,
             "all_dicts": True, "records": [RECORD_OK, RECORD_ERR], "dropped_records": 3, "stats": None,
             "window": True},
        )
        self.assertEqual((second["phase"], second["records"], second["dropped_records"]), ("warmup", [RECORD_OK], 0))

    def test_progress_gives_typed_stats_and_window_and_report_function_precedes_the_ack(self):
        p, _ = self.start_streams()
        stats = phase_stats("profiling", end_time_ns=None, late_sends=2, max_send_lag_ms=1.5)
        msgs = p.exchange(progress_event(1, stats, WINDOW))
        self.assertEqual(
            msgs,
            [report(metrics={"window_requests": 40, "window_rps": 8.0}, notes=["progress profiling"]),
             {"type": "ack", "id": 1}],
        )
        self.assertEqual(p.shutdown(), 0)
        got, rep = self.log_lines()
        self.assertEqual(rep, {"hook": "progress-report", "ok": True})
        self.assertTrue(got["window_is_typed"])
        self.assertTrue(got["stats_is_typed"])
        self.assertTrue(got["ttft_is_typed"])
        self.assertEqual(got["stats"], stats)
        self.assertEqual((got["late_sends"], got["max_send_lag_ms"]), (2, 1.5))
        self.assertEqual(got["window"], WINDOW)
        self.assertEqual(got["ttft_p90"], 20.0)
        self.assertIsNone(got["no_such_metric"])
        self.assertEqual((got["records"], got["dropped_records"]), (None, None))

    def test_a_returned_dict_is_a_report_and_other_return_values_are_ignored(self):
        p, _ = self.start_streams()
        self.assertEqual(
            p.exchange({"type": "event", "id": 1, "hook": "phase_complete", "phase": "profiling",
                        "stats": phase_stats(), "summary": None}),
            [report(metrics={"done": True, "label": "p", "ratio": 0.5}, notes=["phase complete"]),
             {"type": "ack", "id": 1}],
        )
        # benchmark_complete returns 42: no report, a plain ack.
        self.assertEqual(
            p.exchange({"type": "event", "id": 2, "hook": "benchmark_complete", "phase": None,
                        "stats": None, "summary": None}),
            [{"type": "ack", "id": 2}],
        )
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(p.remaining_stdout(), [])

    def test_bad_report_values_are_left_out_with_an_error_logged(self):
        p, _ = self.start_streams(bad=True)
        msgs = p.exchange({"type": "event", "id": 1, "hook": "phase_complete", "phase": "profiling",
                           "stats": phase_stats(), "summary": None})
        self.assertEqual(
            msgs,
            [report(metrics={"fn_good": 1}, notes=["fn note"]),  # report(): the valid part
             report(metrics={"good": 1}, notes=["kept"]),  # the return value: the valid part
             {"type": "ack", "id": 1}],  # no hook error: a bad value is not an exception
        )
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(self.log_lines(), [{"hook": "bad-report", "ok": False}])
        err = p.stderr
        for needle in ("'fn_bad': a value of type object is not allowed",
                       "note 7: a note is a string, not int",
                       "'bad_list': a value of type list is not allowed",
                       "'bad_nan': nan is not a finite number",
                       "'bad_none': a value of type NoneType is not allowed",
                       "note 5: a note is a string, not int",
                       "ignored 'surprise'"):
            self.assertIn(needle, err)
        self.assertIn("phase_complete callback", err)

    def test_streaming_hooks_are_opt_in(self):
        log = self.path("streams.log")
        p = self.spawn("--plugin", "sdk_test_streams_undeclared")
        hs = p.handshake("sdk_test_streams_undeclared")
        self.assertEqual(hs["hooks"], ALL_HOOKS)  # no HOOKS: the six lifecycle hooks only
        self.assertEqual(p.configure({"file": log}), {"type": "configured"})
        self.assertEqual(p.recv(), report(notes=["constructed"]))
        self.assertEqual(p.shutdown(), 0)
        self.assertIn("request_records, progress, which its HOOKS do not list", p.stderr)

    def test_a_report_from_a_failed_configure_is_not_sent(self):
        p = self.spawn("--plugin", "sdk_test_streams")
        p.handshake("sdk_test_streams")
        reply = p.configure({})  # no "file": the constructor raises after its report()
        self.assertEqual(reply["type"], "error")
        self.assertIn("KeyError", reply["message"])
        self.assertEqual(p.shutdown(), 0)
        self.assertEqual(p.remaining_stdout(), [])  # the held report was never sent
        self.assertIn("dropping 1 report(s) made while the plugin failed to initialise", p.stderr)


if __name__ == "__main__":
    unittest.main()
