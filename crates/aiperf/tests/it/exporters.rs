//! The built-in exporters `webhook` and `otlp` end to end: the real binary against the
//! built-in mock, each exporter posting to a receiver of the test's own
//! ([`ScriptedServer`] on 127.0.0.1) that records what arrives. What arrived is checked
//! against the run's own report (`profile_export_aiperf.json`); failing receivers (500s,
//! down, never answering) leave the run's exit code 0 with a warning and the hook error
//! counted in the report's `plugins.<name>` section.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use prost::Message;
use serde_json::Value;

use crate::support::{self, Output, Request, Run, ScriptedServer};

/// Requests in the profiling phase of every run here.
const REQUESTS: u64 = 6;
const MODEL: &str = "exporter-test-model";
/// A run that takes longer than this is killed and the test fails (a hang, not slowness).
const DEADLINE: Duration = Duration::from_secs(60);

/// Writes `plugins:\n{plugins_yaml}` to a config file and runs `aiperf --config FILE` against
/// the built-in mock (streaming, 6 requests) plus `extra`. Returns the run and the config's
/// path (its directory lives as long as the returned guard).
fn profile(plugins_yaml: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = support::write_file(
        tmp.path(),
        "config.yaml",
        &format!("plugins:\n{plugins_yaml}"),
    );
    let mut args: Vec<String> = support::strings(&[
        "--config",
        &config.display().to_string(),
        "-m",
        MODEL,
        "--url",
        "mock?ttft_ms=1&itl_ms=1",
        "--streaming",
        "--isl",
        "16",
        "--osl",
        "4",
        "--request-count",
        &REQUESTS.to_string(),
    ]);
    args.extend(support::strings(extra));
    let out = Run::new(&args).with_artifacts().timeout(DEADLINE).run();
    (out, tmp)
}

/// A receiver answering each request with the status `answer(n)` gives for the n-th request
/// (0-based) and `body`, on keep-alive connections.
fn receiver(
    answer: impl Fn(usize) -> u16 + Send + Sync + 'static,
    content_type: &'static str,
    body: &'static str,
) -> ScriptedServer {
    let n = Arc::new(AtomicUsize::new(0));
    ScriptedServer::start(move |conn| {
        while conn.request().is_some() {
            let status = answer(n.fetch_add(1, Ordering::SeqCst));
            conn.write(format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))?;
        }
        Ok(())
    })
}

/// A receiver that accepts everything (200, empty JSON object).
fn accepting() -> ScriptedServer {
    receiver(|_| 200, "application/json", "{}")
}

fn request_count(export: &Value) -> u64 {
    export["request_count"]["avg"]
        .as_f64()
        .unwrap_or_else(|| panic!("no request_count.avg: {}", export["request_count"])) as u64
}

/// The export's `plugins.NAME.hooks.HOOK.FIELD`.
fn hook_count(export: &Value, name: &str, hook: &str, field: &str) -> u64 {
    export["plugins"][name]["hooks"][hook][field]
        .as_u64()
        .unwrap_or_else(|| {
            panic!(
                "no plugins.{name}.hooks.{hook}.{field}: {}",
                export["plugins"]
            )
        })
}

/// A value unique to this test run, to find (or not) in outputs.
fn tag(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{what}{}x{nanos:x}", std::process::id())
}

fn assert_no_plugin_warnings(out: &Output) {
    assert!(
        !out.stderr.contains("warning: plugin"),
        "no plugin warning expected\n{}",
        out.show()
    );
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.header_values(name)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {name} header: {:?}", r.headers))
}

// =====================================================================================
// webhook
// =====================================================================================

/// `webhook` posts one JSON document at the end: the run's context (run id = the report's
/// `benchmark_id`), the phase stats and the summary, whose counts are the report's. The
/// headers reach the receiver; the marked URL and the credential header never show in the
/// report or the output.
#[test]
fn webhook_posts_the_run_summary_as_json() {
    let _gate = support::shared();
    let rx = accepting();
    let path_secret = tag("path");
    let bearer = tag("bearer");
    let yaml = format!(
        "  webhook:\n    url: !secret {}/hooks/{path_secret}\n    headers:\n      - 'Authorization: Bearer {bearer}'\n      - 'X-Team: perf'\n",
        rx.url()
    );
    let (out, _cfg) = profile(&yaml, &["--strict-plugins"]);
    out.expect_code(0);
    assert_no_plugin_warnings(&out);
    let export = out.json();
    assert_eq!(export["plugins"]["webhook"]["status"], "active");
    assert_eq!(
        hook_count(&export, "webhook", "benchmark_complete", "calls"),
        1
    );
    assert_eq!(
        hook_count(&export, "webhook", "benchmark_complete", "errors"),
        0
    );

    let got = rx.requests();
    assert_eq!(got.len(), 1, "one post, at benchmark_complete: {got:?}");
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/hooks/{path_secret}"));
    assert_eq!(header(r, "authorization"), format!("Bearer {bearer}"));
    assert_eq!(header(r, "x-team"), "perf");
    assert_eq!(header(r, "content-type"), "application/json");
    let v = r.json();
    assert_eq!(v["event"], "benchmark_complete");
    assert_eq!(v["run"]["run_id"], export["benchmark_id"]);
    assert_eq!(v["run"]["models"], serde_json::json!([MODEL]));
    assert_eq!(v["run"]["endpoint_type"], "chat");
    let dir = std::path::PathBuf::from(v["run"]["artifact_dir"].as_str().expect("artifact_dir"));
    assert!(
        dir == out.dir || Some(&dir) == std::fs::canonicalize(&out.dir).ok().as_ref(),
        "{} vs {}",
        dir.display(),
        out.dir.display()
    );
    assert!(v["run"]["load"].is_object(), "{v}");
    assert!(v["run"]["aiperf_version"].is_string(), "{v}");
    let stats = &v["phase_stats"]["profiling"];
    assert_eq!(stats["completed"].as_u64(), Some(request_count(&export)));
    assert_eq!(stats["completed"].as_u64(), Some(REQUESTS));
    assert_eq!(stats["errors"], 0);
    for (tag, stat) in [
        ("request_count", "avg"),
        ("time_to_first_token", "p50"),
        ("request_latency", "p99"),
        ("request_throughput", "avg"),
    ] {
        assert_eq!(v["summary"][tag][stat], export[tag][stat], "{tag}.{stat}");
        assert!(v["summary"][tag][stat].is_number(), "{tag}.{stat}: {v}");
    }
    let shown = format!("{}{}{}", out.stdout, out.stderr, export);
    for secret in [&path_secret, &bearer] {
        assert!(
            !shown.contains(secret.as_str()),
            "{secret} shown:\n{}",
            out.show()
        );
    }
}

/// `format: slack` with `hooks: [phase_complete, benchmark_complete]`: one Slack message
/// per phase and one at the end, each `{text, blocks}`, the last one summing the run up.
#[test]
fn webhook_slack_messages_per_phase_and_at_the_end() {
    let _gate = support::shared();
    let rx = accepting();
    let yaml = format!(
        "  webhook:\n    url: {}/slack\n    format: slack\n    hooks: [phase_complete, benchmark_complete]\n",
        rx.url()
    );
    let (out, _cfg) = profile(&yaml, &["--warmup-request-count", "2", "--strict-plugins"]);
    out.expect_code(0);
    assert_no_plugin_warnings(&out);
    let export = out.json();
    let got: Vec<Value> = rx.requests().iter().map(Request::json).collect();
    assert_eq!(got.len(), 3, "warmup, profiling, the end: {got:?}");
    for (m, title) in got.iter().zip([
        "aiperf: warmup phase complete",
        "aiperf: profiling phase complete",
        "aiperf: benchmark complete",
    ]) {
        let text = m["text"].as_str().unwrap_or_else(|| panic!("no text: {m}"));
        assert!(
            text.starts_with(&format!("{title}: {MODEL} at concurrency 1")),
            "{text}"
        );
        let blocks = m["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], title);
        assert_eq!(blocks[1]["type"], "section");
        let fields = blocks[1]["fields"].as_array().expect("fields");
        assert!(!fields.is_empty() && fields.len() <= 10, "{m}");
        assert!(fields
            .iter()
            .all(|f| f["type"] == "mrkdwn" && f["text"].is_string()));
    }
    assert!(got[0]["text"]
        .as_str()
        .unwrap()
        .contains(": 2 requests, 0 errors;"));
    let end = got[2]["text"].as_str().unwrap();
    let n = request_count(&export);
    assert!(end.contains(&format!(": {n} requests, 0 errors;")), "{end}");
    let p50 = export["time_to_first_token"]["p50"]
        .as_f64()
        .expect("ttft p50");
    assert!(end.contains(&format!("TTFT p50/p99 {p50:.2} / ")), "{end}");
    let context = got[2]["blocks"][2]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains(export["benchmark_id"].as_str().unwrap()),
        "{context}"
    );
}

/// A receiver that fails once with 500 and then accepts: the retry delivers it, no error.
#[test]
fn webhook_retries_a_500() {
    let _gate = support::shared();
    let rx = receiver(|n| if n == 0 { 500 } else { 200 }, "text/plain", "ok");
    let yaml = format!("  webhook:\n    url: {}/h\n", rx.url());
    let (out, _cfg) = profile(&yaml, &["--strict-plugins"]);
    out.expect_code(0);
    assert_no_plugin_warnings(&out);
    let export = out.json();
    assert_eq!(
        hook_count(&export, "webhook", "benchmark_complete", "errors"),
        0
    );
    let got = rx.requests();
    assert_eq!(got.len(), 2, "the 500 and the retry: {got:?}");
    assert_eq!(got[0].body, got[1].body, "the same document");
}

/// A receiver that always answers 500, one that is down, one that never answers (cut by
/// `request_timeout_seconds`) and a 4xx: the run goes on (exit 0, every request made), the
/// failure is a warning naming only the receiver's origin and a hook error in
/// `plugins.webhook`, which stays active. A 4xx is not retried.
#[test]
fn webhook_failures_are_counted_and_the_run_goes_on() {
    let _gate = support::shared();
    let failing = receiver(|_| 500, "text/plain", "boom");
    let rejecting = receiver(|_| 403, "text/plain", "forbidden");
    let stalling = support::stalling_server();
    let closed = support::closed_port();
    let down = closed.url("");
    let secret = tag("hook");
    let cases = [
        (
            failing.url(),
            "retries: 2\n",
            "after 3 attempts",
            "HTTP 500",
        ),
        (down, "retries: 1\n", "after 2 attempts", "connect"),
        (
            stalling.url(),
            "request_timeout_seconds: 1\n",
            "after 1 attempt",
            "timed out",
        ),
        (rejecting.url(), "", "after 1 attempt", "HTTP 403"),
    ];
    for (base, extra, attempts, says) in cases {
        let yaml = format!("  webhook:\n    url: {base}/x/{secret}\n    {extra}");
        let (out, _cfg) = profile(&yaml, &[]);
        out.expect_code(0);
        let export = out.json();
        assert_eq!(request_count(&export), REQUESTS, "{base}");
        let p = &export["plugins"]["webhook"];
        assert_eq!(p["status"], "active", "{base}: {p}");
        assert_eq!(
            hook_count(&export, "webhook", "benchmark_complete", "errors"),
            1,
            "{base}"
        );
        let warning = out
            .stderr
            .lines()
            .find(|l| l.starts_with("warning: plugin `webhook` hook benchmark_complete failed:"))
            .unwrap_or_else(|| panic!("{base}: no hook warning\n{}", out.show()));
        assert!(
            warning.contains(&format!("webhook POST to {base} failed {attempts}"))
                && warning.contains(says),
            "{base}: {attempts}, {says}: {warning}"
        );
        assert!(
            !out.stderr.contains(&secret),
            "{base}: the path shown\n{}",
            out.show()
        );
    }
    assert_eq!(
        failing.request_count(),
        3,
        "the first attempt and 2 retries"
    );
    assert_eq!(rejecting.request_count(), 1, "a 4xx is final");
    assert_eq!(stalling.request_count(), 1);
}

// =====================================================================================
// otlp
// =====================================================================================

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("{key}: not a string attribute: {other:?}"),
    }
}

fn metric<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
    req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// `otlp` (given a base URL) posts protobuf to `/v1/metrics` at each phase's end: the
/// resource names the run (run id = the report's `benchmark_id`, model), the completed
/// requests are a cumulative Sum equal to the report's count, the TTFT p50 a Gauge point
/// equal to the report's.
#[test]
fn otlp_exports_protobuf_to_a_collector() {
    let _gate = support::shared();
    let rx = receiver(|_| 200, "application/x-protobuf", "");
    let yaml = format!(
        "  otlp:\n    endpoint: {}\n    headers: {{X-Tenant: perf}}\n    resource_attributes: {{deployment.environment: ci}}\n",
        rx.url()
    );
    let (out, _cfg) = profile(&yaml, &["--warmup-request-count", "2", "--strict-plugins"]);
    out.expect_code(0);
    assert_no_plugin_warnings(&out);
    let export = out.json();
    assert_eq!(hook_count(&export, "otlp", "phase_complete", "calls"), 2);
    assert_eq!(hook_count(&export, "otlp", "phase_complete", "errors"), 0);
    let got = rx.requests();
    assert_eq!(got.len(), 2, "warmup and profiling: {got:?}");
    let decoded: Vec<ExportMetricsServiceRequest> = got
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/v1/metrics");
            assert_eq!(header(r, "content-type"), "application/x-protobuf");
            assert_eq!(header(r, "x-tenant"), "perf");
            ExportMetricsServiceRequest::decode(r.body.as_slice()).expect("protobuf body")
        })
        .collect();
    let (warmup, profiling) = (&decoded[0], &decoded[1]);
    let res = &profiling.resource_metrics[0]
        .resource
        .as_ref()
        .expect("a resource")
        .attributes;
    assert_eq!(
        string_attr(res, "aiperf.run_id"),
        export["benchmark_id"].as_str().unwrap()
    );
    assert_eq!(string_attr(res, "aiperf.model"), MODEL);
    assert_eq!(string_attr(res, "service.name"), "aiperf");
    assert_eq!(string_attr(res, "aiperf.endpoint_type"), "chat");
    assert_eq!(string_attr(res, "aiperf.load.mode"), "concurrency");
    assert_eq!(string_attr(res, "deployment.environment"), "ci");
    assert!(string_attr(res, "aiperf.url").starts_with("http://127.0.0.1:"));

    let completed = |req: &ExportMetricsServiceRequest| {
        let m = metric(req, "aiperf.requests.completed");
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("a Sum: {m:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 2, "cumulative");
        let dp = &sum.data_points[0];
        assert!(dp.start_time_unix_nano > 0 && dp.time_unix_nano >= dp.start_time_unix_nano);
        let phase = string_attr(&dp.attributes, "phase").to_string();
        match dp.value {
            Some(number_data_point::Value::AsInt(n)) => (phase, n as u64),
            other => panic!("an int: {other:?}"),
        }
    };
    assert_eq!(
        completed(profiling),
        ("profiling".to_string(), request_count(&export))
    );
    assert_eq!(completed(profiling).1, REQUESTS);
    assert_eq!(completed(warmup), ("warmup".to_string(), 2));

    let ttft = metric(profiling, "aiperf.time_to_first_token");
    assert_eq!(ttft.unit, "ms");
    let Some(metric::Data::Gauge(g)) = &ttft.data else {
        panic!("a Gauge: {ttft:?}")
    };
    let p50 = g
        .data_points
        .iter()
        .find(|d| string_attr(&d.attributes, "stat") == "p50")
        .expect("a p50 point");
    // The same statistic; the report's JSON is written with its last bit rounded at times
    // (a value of 1.0600655 vs 1.0600654999999999), so equal to 1e-12 relative.
    let want = export["time_to_first_token"]["p50"]
        .as_f64()
        .expect("ttft p50");
    let Some(number_data_point::Value::AsDouble(got)) = p50.value else {
        panic!("p50 is a double: {p50:?}")
    };
    assert!(
        (got - want).abs() <= want.abs() * 1e-12,
        "OTLP p50 {got} vs the report's {want}"
    );
    for name in [
        "aiperf.inter_token_latency",
        "aiperf.request_latency",
        "aiperf.request_throughput",
    ] {
        metric(profiling, name);
    }
}

/// `protocol: http/json` posts the OTLP JSON mapping to the endpoint's own path; a
/// collector's partial success (rejected points) is a counted hook error.
#[test]
fn otlp_http_json_is_the_otlp_json_mapping() {
    let _gate = support::shared();
    let rx = accepting();
    let yaml = format!(
        "  otlp:\n    endpoint: {}/otlp/v1/metrics\n    protocol: http/json\n",
        rx.url()
    );
    let (out, _cfg) = profile(&yaml, &["--strict-plugins"]);
    out.expect_code(0);
    assert_no_plugin_warnings(&out);
    let export = out.json();
    let got = rx.requests();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/otlp/v1/metrics");
    assert_eq!(header(&got[0], "content-type"), "application/json");
    let v = got[0].json();
    let rm = &v["resourceMetrics"][0];
    let attrs = rm["resource"]["attributes"].as_array().expect("attributes");
    let run_id = attrs
        .iter()
        .find(|a| a["key"] == "aiperf.run_id")
        .expect("aiperf.run_id");
    assert_eq!(run_id["value"]["stringValue"], export["benchmark_id"]);
    let metrics = rm["scopeMetrics"][0]["metrics"]
        .as_array()
        .expect("metrics");
    let completed = metrics
        .iter()
        .find(|m| m["name"] == "aiperf.requests.completed")
        .expect("aiperf.requests.completed");
    let dp = &completed["sum"]["dataPoints"][0];
    assert_eq!(
        dp["asInt"],
        request_count(&export).to_string(),
        "int64 as a string"
    );
    assert!(dp["timeUnixNano"]
        .as_str()
        .is_some_and(|t| t.parse::<u64>().is_ok()));
    assert_eq!(completed["sum"]["isMonotonic"], true);

    // A collector that rejects points.
    let partial = receiver(
        |_| 200,
        "application/json",
        r#"{"partialSuccess":{"rejectedDataPoints":"5","errorMessage":"too old"}}"#,
    );
    let yaml = format!(
        "  otlp:\n    endpoint: {}\n    protocol: http/json\n",
        partial.url()
    );
    let (out, _cfg) = profile(&yaml, &[]);
    out.expect_code(0);
    let export = out.json();
    assert_eq!(hook_count(&export, "otlp", "phase_complete", "errors"), 1);
    assert!(
        out.stderr.contains("rejected 5 data points: too old"),
        "{}",
        out.show()
    );
}

// =====================================================================================
// Config
// =====================================================================================

/// A misspelt key of either exporter is exit 2 at its `file:line`, before any request.
#[test]
fn exporter_config_typos_are_exit_2_at_their_line() {
    let _gate = support::shared();
    for (yaml, key, line) in [
        ("  webhook:\n    urll: http://127.0.0.1:9/x\n", "urll", 3),
        (
            "  otlp:\n    endpoint: http://127.0.0.1:9\n    protocl: http/json\n",
            "protocl",
            4,
        ),
        (
            "  webhook:\n    url: http://127.0.0.1:9/x\n    timeout_secs: 3\n",
            "timeout_secs",
            4,
        ),
    ] {
        let (out, cfg) = profile(yaml, &[]);
        out.expect_code(2);
        let at = format!("{}:{line}:", cfg.path().join("config.yaml").display());
        assert!(
            out.stderr.contains(&at) && out.stderr.contains(key),
            "stderr should name {at} and `{key}`\n{}",
            out.show()
        );
        assert!(
            !out.dir.join("profile_export_aiperf.json").exists(),
            "no run for a config mistake"
        );
    }
}

/// `aiperf plugins list` shows both exporters as built-ins.
#[test]
fn plugins_list_shows_the_exporters() {
    let _gate = support::shared();
    let out = Run::new(&["plugins", "list"]).run();
    out.expect_code(0);
    for name in ["webhook", "otlp"] {
        let row = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}\n{}", out.show()));
        assert!(row.contains("builtin"), "{row}");
    }
}
