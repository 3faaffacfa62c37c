#!/usr/bin/env python3
"""A user's script written against Python AIPerf 0.13's artifacts, kept as one: it reads an
artifact directory the way such scripts do (the summary JSON by metric tag and stat, the
CSV's two sections by row name with the csv module, the JSONL line by line) and prints
`name=value` lines. tests/it/parity.rs runs it, unchanged, on AIPerf's recordings and on this
tool's output for the same settings; both must work and print the same names."""
import csv
import json
import sys
from pathlib import Path

d = Path(sys.argv[1])
summary = json.loads((d / "profile_export_aiperf.json").read_text())
out = []
for tag, stat in [
    ("request_throughput", "avg"),
    ("request_count", "avg"),
    ("request_latency", "p99"),
    ("request_latency", "avg"),
    ("output_sequence_length", "avg"),
    ("input_sequence_length", "p50"),
    ("output_token_throughput", "avg"),
    ("benchmark_duration", "avg"),
]:
    out.append(f"json.{tag}.{stat}={float(summary[tag][stat]):.3f}")
if "time_to_first_token" in summary:
    for stat in ("avg", "p50", "p90", "p99", "min", "max", "std"):
        out.append(f"json.ttft.{stat}={float(summary['time_to_first_token'][stat]):.3f}")
    out.append(f"json.itl.avg={float(summary['inter_token_latency']['avg']):.3f}")
if "goodput" in summary:
    out.append(f"json.goodput.avg={float(summary['goodput']['avg']):.3f}")
out.append(f"json.error_summary={len(summary['error_summary'])}")
out.append(f"json.was_cancelled={summary['was_cancelled']}")

# The CSV: a statistics section, a blank line, a `Metric,Value` section.
rows = list(csv.reader((d / "profile_export_aiperf.csv").read_text().splitlines()))
stats_header = rows[0]
assert stats_header[:4] == ["Metric", "avg", "min", "max"], stats_header
by_name = {}
section = None
for row in rows:
    if not row:
        section = None
        continue
    if row[0] == "Metric":
        section = row
        continue
    if section is not None:
        by_name[row[0]] = dict(zip(section, row))
p99 = stats_header.index("p99")
out.append(f"csv.request_latency.p99={float(by_name['Request Latency (ms)']['p99']):.2f}")
out.append(f"csv.request_throughput={float(by_name['Request Throughput (requests/sec)']['Value']):.2f}")
out.append(f"csv.request_count={float(by_name['Request Count']['Value']):.0f}")
if "Time to First Token (ms)" in by_name:
    out.append(f"csv.ttft.p99={float(by_name['Time to First Token (ms)']['p99']):.2f}")

# The JSONL: one request per line, metadata and metrics by tag.
n = 0
for line in (d / "profile_export.jsonl").read_text().splitlines():
    rec = json.loads(line)
    meta, metrics = rec["metadata"], rec["metrics"]
    assert meta["benchmark_phase"] == "profiling", meta
    _ = (meta["conversation_id"], meta["turn_index"], meta["request_start_ns"], meta["request_end_ns"])
    _ = (meta["x_request_id"], meta["x_correlation_id"])
    assert metrics["request_latency"]["unit"] == "ms"
    n += 1
out.append(f"jsonl.records={n}")
print("\n".join(out))
