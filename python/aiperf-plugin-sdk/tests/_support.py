"""Helpers: drive the installed ``aiperf-plugin-python`` executable over protocol v1."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Any, Dict, List, Optional

BIN_DIR = os.path.dirname(sys.executable)
HOST_EXE = shutil.which("aiperf-plugin-python", path=BIN_DIR) or os.path.join(BIN_DIR, "aiperf-plugin-python")

#: Message types a plugin may write on stdout (anything else is garbage).
PLUGIN_MESSAGE_TYPES = {"handshake", "configured", "error", "ack", "log", "report"}
#: The lifecycle hooks: what a plugin gets when it declares no HOOKS.
ALL_HOOKS = [
    "benchmark_start",
    "phase_start",
    "phase_sending_complete",
    "phase_timeout",
    "phase_complete",
    "benchmark_complete",
]


def hello(plugin_name: Optional[str], versions=(1,), **extra: Any) -> Dict[str, Any]:
    msg: Dict[str, Any] = {
        "type": "hello",
        "protocol_versions": list(versions),
        "host": "aiperf",
        "host_version": "0.1.0",
    }
    if plugin_name is not None:
        msg["plugin_name"] = plugin_name
    msg.update(extra)
    return msg


def phase_stats(phase: str = "profiling", **overrides: Any) -> Dict[str, Any]:
    stats = {
        "phase": phase,
        "sent": 100,
        "completed": 98,
        "errors": 2,
        "cancelled": 0,
        "in_flight": 0,
        "expected": 100,
        "duration_sec": 1.532,
        "start_time_ns": 1764121200000000000,
        "sending_complete_time_ns": 1764121201000000000,
        "end_time_ns": 1764121201532000000,
        "timed_out": False,
        "late_sends": 0,
        "max_send_lag_ms": None,
    }
    stats.update(overrides)
    return stats


SUMMARY = {
    "request_latency": {"unit": "ms", "avg": 12.5, "p50": 11.0, "p90": 20.25, "p99": 31.0},
    "request_throughput": {"unit": "requests/sec", "avg": 65.3},
}


class PluginProcess:
    """One ``aiperf-plugin-python`` child process with line-level access to its stdio."""

    def __init__(self, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        full_env = dict(os.environ)
        full_env.setdefault("AIPERF_PLUGIN_LOG_LEVEL", "DEBUG")
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            [HOST_EXE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
        )
        self._stdout: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self._stderr: List[bytes] = []
        self.stdout_lines: List[bytes] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._stdout.put(line)
        self._stdout.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    # -- sending -------------------------------------------------------------------------

    def send(self, message: Any) -> None:
        data = message if isinstance(message, (bytes, str)) else json.dumps(message)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not data.endswith(b"\n"):
            data += b"\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    # -- receiving -------------------------------------------------------------------------

    def recv(self, timeout: float = 10.0) -> Dict[str, Any]:
        """Next stdout message; fails on garbage, EOF or timeout."""
        try:
            line = self._stdout.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s; stderr:\n{self.stderr}") from None
        if line is None:
            self._stdout.put(None)
            raise AssertionError(f"stdout closed; stderr:\n{self.stderr}")
        self.stdout_lines.append(line)
        return self.parse_line(line)

    def parse_line(self, line: bytes) -> Dict[str, Any]:
        if not line.endswith(b"\n"):
            raise AssertionError(f"unterminated stdout line {line!r}")
        try:
            msg = json.loads(line.decode("utf-8"))
        except ValueError:
            raise AssertionError(f"garbage on stdout: {line!r}; stderr:\n{self.stderr}") from None
        if not isinstance(msg, dict) or msg.get("type") not in PLUGIN_MESSAGE_TYPES:
            raise AssertionError(f"garbage on stdout: {line!r}")
        if line.count(b"\n") != 1:
            raise AssertionError(f"message spans lines: {line!r}")
        return msg

    def remaining_stdout(self, timeout: float = 10.0) -> List[Dict[str, Any]]:
        """Every message left until stdout closes (the process must be exiting)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._stdout.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("stdout did not close") from None
            if line is None:
                self._stdout.put(None)
                return out
            self.stdout_lines.append(line)
            out.append(self.parse_line(line))

    def wait(self, timeout: float = 10.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        for t in self._threads:  # let the pumps collect everything the process wrote
            t.join(timeout=5)
        return rc

    # -- protocol steps ----------------------------------------------------------------------

    def handshake(self, name: Optional[str], **hello_extra: Any) -> Dict[str, Any]:
        self.send(hello(name, **hello_extra))
        msg = self.recv()
        if msg["type"] != "handshake":
            raise AssertionError(f"expected handshake, got {msg!r}; stderr:\n{self.stderr}")
        return msg

    def configure(self, config: Dict[str, Any]) -> Dict[str, Any]:
        self.send({"type": "configure", "config": config})
        return self.recv()

    def start(self, name: str, config: Dict[str, Any]) -> Dict[str, Any]:
        """hello + configure; returns the handshake."""
        hs = self.handshake(name)
        reply = self.configure(config)
        if reply != {"type": "configured"}:
            raise AssertionError(f"expected configured, got {reply!r}; stderr:\n{self.stderr}")
        return hs

    def event(
        self,
        event_id: int,
        hook: str,
        phase: Optional[str] = None,
        stats: Optional[Dict[str, Any]] = None,
        summary: Optional[Dict[str, Any]] = None,
        timeout: float = 10.0,
    ) -> Dict[str, Any]:
        """Send one event and return its ack."""
        if hook.startswith("phase_") and stats is None:
            stats = phase_stats(phase or "profiling")
        self.send(
            {"type": "event", "id": event_id, "hook": hook, "phase": phase, "stats": stats, "summary": summary}
        )
        ack = self.recv(timeout=timeout)
        if ack.get("type") != "ack" or ack.get("id") != event_id:
            raise AssertionError(f"expected ack {event_id}, got {ack!r}")
        return ack

    def exchange(self, message: Dict[str, Any], timeout: float = 10.0) -> List[Dict[str, Any]]:
        """Send an event message; return every message up to and including its ack."""
        self.send(message)
        out = []
        while True:
            msg = self.recv(timeout=timeout)
            out.append(msg)
            if msg.get("type") == "ack" and msg.get("id") == message.get("id"):
                return out
            if msg.get("type") == "ack":
                raise AssertionError(f"expected ack {message.get('id')}, got {msg!r}")

    def shutdown(self, timeout: float = 5.0) -> int:
        self.send({"type": "shutdown"})
        self.close_stdin()
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except Exception:
                pass


RUN_EVENTS = [
    ("benchmark_start", None),
    ("phase_start", "warmup"),
    ("phase_sending_complete", "warmup"),
    ("phase_complete", "warmup"),
    ("phase_start", "profiling"),
    ("phase_sending_complete", "profiling"),
    ("phase_timeout", "profiling"),
    ("phase_complete", "profiling"),
    ("benchmark_complete", None),
]


class PluginTestCase(unittest.TestCase):
    """Creates a temp dir and kills leftover plugin processes after each test."""

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="aiperf-sdk-test-")
        self._procs: List[PluginProcess] = []

    def tearDown(self) -> None:
        for p in self._procs:
            p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, *args: str, env: Optional[Dict[str, str]] = None) -> PluginProcess:
        p = PluginProcess(*args, env=env)
        self._procs.append(p)
        return p

    def path(self, name: str) -> str:
        return os.path.join(self.tmp, name)

    def read_lines(self, name: str) -> List[str]:
        path = self.path(name)
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()

    def assertExitsWith(self, proc: PluginProcess, code: int, timeout: float = 5.0) -> None:
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"process did not exit within {timeout}s; stderr:\n{proc.stderr}")
        self.assertEqual(rc, code, f"exit status; stderr:\n{proc.stderr}")
