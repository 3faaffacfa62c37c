"""The example plugins, served by the installed host against real local sockets."""

import json
import logging
import socket
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _support import SUMMARY, PluginTestCase, phase_stats

API_KEY = "dd-secret-api-key-0123456789"


class _EventSink(ThreadingHTTPServer):
    """A tiny HTTP server recording every POST (path, headers, JSON body)."""

    daemon_threads = True

    def __init__(self):
        self.requests = []
        self.received = threading.Condition()
        super().__init__(("127.0.0.1", 0), _EventHandler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/api/v1/events"

    def wait_for(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.received:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} event posts, got {len(self.requests)}")
                self.received.wait(left)
            return list(self.requests)


class _EventHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        record = {
            "path": self.path,
            "api_key": self.headers.get("DD-API-KEY"),
            "content_type": self.headers.get("Content-Type"),
            "body": json.loads(body),
        }
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        payload = b'{"status":"ok"}'
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        with self.server.received:
            self.server.requests.append(record)
            self.server.received.notify_all()

    def log_message(self, *args):  # keep the test output quiet
        pass


class DatadogTest(PluginTestCase):
    def setUp(self):
        super().setUp()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(5)
        self.http = _EventSink()
        self.http_thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.http_thread.start()

    def tearDown(self):
        self.http.shutdown()
        self.http.server_close()
        self.udp.close()
        super().tearDown()

    def config(self, **overrides):
        cfg = {
            "api_key": API_KEY,
            "site": "datadoghq.eu",
            "tags": ["team:perf", "env:test"],
            "statsd_host": "127.0.0.1",
            "statsd_port": self.udp.getsockname()[1],
            "events_url": self.http.url,
            "metric_prefix": "aiperf",
        }
        cfg.update(overrides)
        return cfg

    def packets(self, count):
        out = []
        for _ in range(count):
            data, _addr = self.udp.recvfrom(65535)
            out.append(data.decode("utf-8"))
        return out

    def assertNoMorePackets(self, wait=0.2):
        self.udp.settimeout(wait)
        try:
            data, _ = self.udp.recvfrom(65535)
        except socket.timeout:
            return
        finally:
            self.udp.settimeout(5)
        self.fail(f"unexpected packet {data!r}")

    def test_metrics_and_events(self):
        p = self.spawn("--plugin", "datadog")
        hs = p.start("datadog", self.config())
        self.assertEqual(hs["name"], "datadog")
        self.assertEqual(hs["version"], "1.0.0")
        self.assertEqual(hs["hooks"], ["phase_start", "phase_complete"])
        self.assertIn("api_key", hs["config_schema"]["properties"])

        self.assertEqual(p.event(1, "phase_start", "profiling", stats=phase_stats(completed=0, end_time_ns=None)),
                         {"type": "ack", "id": 1})
        [start] = self.http.wait_for(1)
        self.assertEqual(start["path"], "/api/v1/events")
        self.assertEqual(start["api_key"], API_KEY)
        self.assertEqual(start["content_type"], "application/json")
        self.assertEqual(start["body"]["title"], "AIPerf Phase Started: profiling")
        self.assertEqual(start["body"]["text"], "Phase profiling started")
        self.assertEqual(start["body"]["tags"], ["team:perf", "env:test", "phase:profiling", "event:start"])
        self.assertEqual(start["body"]["alert_type"], "info")
        self.assertNoMorePackets()

        ack = p.event(2, "phase_complete", "profiling", stats=phase_stats(), summary=SUMMARY)
        self.assertEqual(ack, {"type": "ack", "id": 2})
        tags = "|#team:perf,env:test,phase:profiling"
        expected = [
            "aiperf.phase.duration:1.532|g" + tags,
            "aiperf.phase.requests.sent:100|g" + tags,
            "aiperf.phase.requests.completed:98|g" + tags,
            "aiperf.phase.requests.errors:2|g" + tags,
            "aiperf.phase.requests.cancelled:0|g" + tags,
            "aiperf.metric.request_latency.avg:12.5|g" + tags,
            "aiperf.metric.request_latency.p50:11.0|g" + tags,
            "aiperf.metric.request_latency.p90:20.25|g" + tags,
            "aiperf.metric.request_latency.p99:31.0|g" + tags,
            "aiperf.metric.request_throughput.avg:65.3|g" + tags,
        ]
        self.assertEqual(self.packets(len(expected)), expected)
        self.assertNoMorePackets()
        _, complete = self.http.wait_for(2)
        self.assertEqual(complete["api_key"], API_KEY)
        self.assertEqual(complete["body"]["title"], "AIPerf Phase Complete: profiling")
        self.assertEqual(complete["body"]["text"], "Phase profiling completed: 100 requests in 1.53s")
        self.assertEqual(complete["body"]["tags"], ["team:perf", "env:test", "phase:profiling", "event:complete"])
        self.assertEqual(complete["body"]["alert_type"], "success")

        self.assertEqual(p.shutdown(), 0)
        self.assertNotIn(API_KEY, p.stderr)
        self.assertIn("Datadog plugin initialized", p.stderr)

    def test_prefix_and_string_tags(self):
        p = self.spawn("--plugin", "datadog")
        p.start("datadog", self.config(metric_prefix="bench", tags="a:1, b:2", events_url=None,
                                       statsd_port=str(self.udp.getsockname()[1])))
        p.event(1, "phase_start", "warmup")
        p.event(2, "phase_complete", "warmup", stats=phase_stats("warmup", duration_sec=2))
        first = self.packets(5)
        self.assertEqual(first[0], "bench.phase.duration:2|g|#a:1,b:2,phase:warmup")
        self.assertEqual(first[1], "bench.phase.requests.sent:100|g|#a:1,b:2,phase:warmup")
        self.assertNoMorePackets()
        self.assertEqual(self.http.requests, [])  # events_url: null = no events
        self.assertEqual(p.shutdown(), 0)

    def test_disabled_without_api_key(self):
        p = self.spawn("--plugin", "datadog")
        p.start("datadog", self.config(api_key=None))
        self.assertEqual(p.event(1, "phase_start", "profiling"), {"type": "ack", "id": 1})
        self.assertEqual(p.event(2, "phase_complete", "profiling", summary=SUMMARY), {"type": "ack", "id": 2})
        self.assertNoMorePackets()
        self.assertEqual(self.http.requests, [])
        self.assertEqual(p.shutdown(), 0)
        self.assertIn("disabled (no api_key)", p.stderr)

    def test_unreachable_event_api_is_logged_not_fatal(self):
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there now
        p = self.spawn("--plugin", "datadog")
        p.start("datadog", self.config(events_url=f"http://127.0.0.1:{port}/x", http_timeout=1))
        started = time.monotonic()
        ack = p.event(1, "phase_complete", "profiling", summary=None)
        self.assertEqual(ack, {"type": "ack", "id": 1})
        self.assertLess(time.monotonic() - started, 3)
        self.assertEqual(len(self.packets(5)), 5)  # metrics went out before the event failed
        self.assertEqual(p.shutdown(), 0)
        self.assertIn("Failed to send phase metrics", p.stderr)
        self.assertNotIn(API_KEY, p.stderr)


class CustomMonitorTest(PluginTestCase):
    def test_logs_and_writes_json_lines(self):
        out = self.path("monitor.jsonl")
        p = self.spawn("--plugin", "custom_monitor", env={"AIPERF_PLUGIN_LOG_LEVEL": "WARNING"})
        hs = p.start("custom_monitor", {"log_level": "WARNING", "output_file": out})
        self.assertEqual(hs["hooks"], ["phase_start", "phase_sending_complete", "phase_timeout", "phase_complete"])
        calls = [("phase_start", "warmup"), ("phase_sending_complete", "warmup"), ("phase_complete", "warmup"),
                 ("phase_start", "profiling"), ("phase_sending_complete", "profiling"),
                 ("phase_timeout", "profiling"), ("phase_complete", "profiling")]
        for i, (hook, phase) in enumerate(calls, start=1):
            stats = phase_stats(phase, sent=i)
            self.assertEqual(p.event(i, hook, phase, stats=stats), {"type": "ack", "id": i})
        self.assertEqual(p.shutdown(), 0)
        records = [json.loads(line) for line in self.read_lines("monitor.jsonl")]
        self.assertEqual([(r["hook"], r["phase"]) for r in records], calls)
        self.assertEqual(records[2]["stats"], phase_stats("warmup", sent=3))
        self.assertEqual(sorted(records[0]), ["hook", "phase", "stats"])
        self.assertIn("WARNING aiperf_custom_monitor_plugin.plugin: phase_timeout profiling: sent=6", p.stderr)

    def test_debug_level_without_file(self):
        p = self.spawn("--plugin", "custom_monitor", env={"AIPERF_PLUGIN_LOG_LEVEL": "WARNING"})
        p.start("custom_monitor", {"log_level": "debug"})
        p.event(1, "phase_start", "warmup")
        self.assertEqual(p.shutdown(), 0)
        self.assertIn("DEBUG aiperf_custom_monitor_plugin.plugin: phase_start warmup", p.stderr)

    def test_bad_log_level_rejected(self):
        p = self.spawn("--plugin", "custom_monitor")
        p.handshake("custom_monitor")
        msg = p.configure({"log_level": "LOUD"})
        self.assertEqual(msg["type"], "error")
        self.assertIn("LOUD", msg["message"])
        self.assertEqual(p.shutdown(), 0)


if __name__ == "__main__":
    logging.basicConfig()
    unittest.main()


def _slo_record(ttft=None, latency=50.0, error=False):
    metrics = {"request_latency": {"value": latency, "unit": "ms"}}
    if ttft is not None:
        metrics["time_to_first_token"] = {"value": ttft, "unit": "ms"}
    return {
        "metadata": {"benchmark_phase": "profiling"},
        "metrics": {} if error else metrics,
        "error": {"code": 500, "type": "HTTPError", "message": "boom"} if error else None,
    }


class SloAlarmTest(PluginTestCase):
    def records(self, p, event_id, records, phase="profiling", dropped=0):
        return p.exchange({"type": "event", "id": event_id, "hook": "request_records", "phase": phase,
                           "stats": None, "summary": None, "records": records, "dropped_records": dropped})

    def complete(self, p, event_id, phase="profiling"):
        return p.exchange({"type": "event", "id": event_id, "hook": "phase_complete", "phase": phase,
                           "stats": phase_stats(phase), "summary": SUMMARY})

    def test_counts_violations_and_reports_them(self):
        p = self.spawn("--plugin", "slo_alarm")
        hs = p.handshake("slo_alarm")
        self.assertEqual(hs["hooks"], ["request_records", "phase_complete"])
        self.assertIs(hs["config_schema"]["additionalProperties"], False)
        self.assertEqual(p.configure({"ttft_ms_max": 20}), {"type": "configured"})
        batch = [_slo_record(25.0), _slo_record(3.0), _slo_record(error=True), _slo_record(20.0),
                 _slo_record(21.0), _slo_record(None, latency=5000.0)]
        self.assertEqual(
            self.records(p, 1, batch),
            [{"type": "report", "notes": [],
              "metrics": {"slo_violations": 2, "slo_requests_checked": 6, "slo_dropped_records": 0}},
             {"type": "ack", "id": 1}],
        )
        # Warmup is not watched by default: nothing reported.
        self.assertEqual(self.records(p, 2, [_slo_record(99.0)], phase="warmup"), [{"type": "ack", "id": 2}])
        self.assertEqual(
            self.records(p, 3, [_slo_record(30.0)], dropped=4)[0]["metrics"],
            {"slo_violations": 3, "slo_requests_checked": 7, "slo_dropped_records": 4},
        )
        self.assertEqual(self.complete(p, 4, "warmup"), [{"type": "ack", "id": 4}])
        self.assertEqual(
            self.complete(p, 5),
            [{"type": "report",
              "metrics": {"slo_violations": 3, "slo_requests_checked": 7, "slo_dropped_records": 4},
              "notes": ["profiling: 3 of 7 requests over the SLO (time_to_first_token > 20 ms)",
                        "4 records were dropped before this plugin saw them: the counts are a lower bound"]},
             {"type": "ack", "id": 5}],
        )
        self.assertEqual(p.shutdown(), 0)
        self.assertIn("SLO alarm: profiling: 3 of 7", p.stderr)

    def test_latency_limit_errors_and_failing(self):
        p = self.spawn("--plugin", "slo_alarm")
        p.start("slo_alarm", {"request_latency_ms_max": 100, "count_errors": True, "fail_on_violation": True,
                              "phases": ["warmup", "profiling"]})
        msgs = self.records(p, 1, [_slo_record(1.0, latency=150.0), _slo_record(error=True), _slo_record(1.0)],
                            phase="warmup")
        self.assertEqual(msgs[0]["metrics"]["slo_violations"], 2)
        msgs = self.complete(p, 2, "warmup")
        self.assertEqual(msgs[0]["notes"],
                         ["warmup: 2 of 3 requests over the SLO (request_latency > 100 ms or failed)"])
        self.assertIn("SLO violated: warmup: 2 of 3", msgs[1]["error"])
        self.assertEqual(p.shutdown(), 0)

    def test_no_violation_is_not_an_error_and_a_limit_is_required(self):
        p = self.spawn("--plugin", "slo_alarm")
        p.start("slo_alarm", {"ttft_ms_max": 1000, "fail_on_violation": True})
        self.records(p, 1, [_slo_record(5.0)])
        msgs = self.complete(p, 2)
        self.assertEqual(msgs[0]["metrics"]["slo_violations"], 0)
        self.assertEqual(msgs[1], {"type": "ack", "id": 2})
        self.assertEqual(p.shutdown(), 0)

        p = self.spawn("--plugin", "slo_alarm")
        p.handshake("slo_alarm")
        reply = p.configure({"count_errors": True})
        self.assertEqual(reply["type"], "error")
        self.assertIn("set at least one of ttft_ms_max, request_latency_ms_max", reply["message"])
        self.assertEqual(p.shutdown(), 0)
