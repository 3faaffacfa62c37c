//! Server metrics and GPU telemetry end to end: Debian's real `prometheus-node-exporter`
//! (`.ci/run` installs it) scraped during a mock run; endpoints that refuse, stall, answer
//! 503 or serve garbage, counted while every request of the run goes through; a scripted
//! DCGM exporter with known, changing values; an unreachable one (one line); the default
//! run, whose mock may or may not serve `/metrics`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, config_error, free_port, Run, ScriptedServer};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// The mock, slow enough that a run spans several 0.2 s scrapes (~1.5 s).
const MOCK: &str = "mock?ttft_ms=20&itl_ms=10";

fn base_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--url",
        MOCK,
        "-m",
        "sm-model",
        "--streaming",
        "--isl",
        "16",
        "--osl",
        "8",
        "--request-count",
        "30",
        "--concurrency",
        "2",
        "--server-metrics-interval",
        "0.2",
        "--no-gpu-telemetry",
    ];
    a.extend_from_slice(extra);
    a
}

struct NodeExporter(Child);

impl NodeExporter {
    fn start(port: u16) -> Self {
        assert!(
            Path::new(NODE_EXPORTER).is_file(),
            "{NODE_EXPORTER} is missing: `apt-get install -y prometheus-node-exporter` (as .ci/run does)"
        );
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node exporter did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        NodeExporter(child)
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn series<'a>(export: &'a Value, metric: &str) -> &'a Vec<Value> {
    export["metrics"][metric]["series"]
        .as_array()
        .unwrap_or_else(|| {
            panic!(
                "no {metric} in {}",
                export["metrics"].as_object().map_or(0, |m| m.len())
            )
        })
}

fn endpoint<'a>(section: &'a Value, url: &str) -> &'a Value {
    section["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no endpoint {url} in {section}"))
}

/// MemTotal from /proc/meminfo, in bytes: the truth the exporter's gauge must match.
fn mem_total_bytes() -> f64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    kb * 1024.0
}

#[test]
fn node_exporter_cpu_and_memory_over_the_profiling_window() {
    let _g = support::shared();
    let port = free_port();
    let _exporter = NodeExporter::start(port);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("events.jsonl");
    let config = tmp.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("plugins:\n  event_log:\n    file: {}\n", log.display()),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let out = Run::profile(&base_args(&[
        "--config",
        &cfg,
        "--server-metrics",
        &format!("127.0.0.1:{port}"),
        "--server-metrics-formats",
        "json",
        "csv",
        "jsonl",
    ]))
    .run();
    out.ok();
    let report = out.json();
    assert_eq!(report["request_count"]["avg"], 30.0, "{}", out.show());
    let export: Value = serde_json::from_str(&out.read("server_metrics_export.json")).unwrap();
    // CPU: every CPU spends one second per second in some mode, so the rates of one CPU's
    // modes add up to about 1 (USER_HZ granularity, and the scrapes' own jitter).
    let cpu = series(&export, "node_cpu_seconds_total");
    assert_eq!(
        export["metrics"]["node_cpu_seconds_total"]["type"],
        "counter"
    );
    let cpu0: f64 = cpu
        .iter()
        .filter(|s| s["labels"]["cpu"] == "0")
        .map(|s| s["stats"]["rate"].as_f64().expect("a rate"))
        .sum();
    assert!(
        (0.5..1.5).contains(&cpu0),
        "cpu 0 seconds per second: {cpu0}"
    );
    assert!(cpu
        .iter()
        .all(|s| s["stats"]["delta"].as_f64().unwrap() >= 0.0));
    // Memory: available bytes, time-weighted, within the machine's total, which the exporter
    // reports exactly as /proc/meminfo does.
    let avail = &series(&export, "node_memory_MemAvailable_bytes")[0]["stats"];
    assert_eq!(
        export["metrics"]["node_memory_MemAvailable_bytes"]["type"],
        "gauge"
    );
    let total = &series(&export, "node_memory_MemTotal_bytes")[0]["stats"];
    assert_eq!(total["avg"].as_f64().unwrap(), mem_total_bytes());
    let (avg, min, max) = (
        avail["avg"].as_f64().unwrap(),
        avail["min"].as_f64().unwrap(),
        avail["max"].as_f64().unwrap(),
    );
    assert!(
        0.0 < min && min <= avg && avg <= max && max <= mem_total_bytes(),
        "{avail}"
    );
    assert!(avail["samples"].as_u64().unwrap() >= 2, "{avail}");
    // The window is the profiling phase's.
    let window = (
        export["start_ns"].as_u64().unwrap(),
        export["end_ns"].as_u64().unwrap(),
    );
    assert!(window.0 < window.1);
    // The endpoint answered every scrape; the report has the section.
    let section = &report["server_metrics"];
    let ep = endpoint(section, &url);
    assert!(ep["ok"].as_u64().unwrap() >= 3, "{ep}");
    assert_eq!(ep["refused"], 0, "{ep}");
    assert_eq!(
        section["files"],
        serde_json::json!([
            "server_metrics_export.json",
            "server_metrics_export.csv",
            "server_metrics_export.jsonl"
        ])
    );
    // CSV: a row per series; JSONL: a line per scrape, on the run's clock, in order.
    let csv = out.read("server_metrics_export.csv");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&format!("{url},node_memory_MemAvailable_bytes,gauge,"))),
        "{csv:.300}"
    );
    let lines: Vec<Value> = out
        .read("server_metrics_export.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|l: &Value| l["endpoint_url"] == url)
        .collect();
    assert_eq!(lines.len() as u64, ep["ok"].as_u64().unwrap());
    assert!(lines
        .windows(2)
        .all(|w| w[0]["mono_ns"].as_u64() < w[1]["mono_ns"].as_u64()));
    assert!(
        lines[0]["metrics"]["node_memory_MemAvailable_bytes"]["series"][0]["value"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // The console's summary line.
    assert!(out.stdout.contains("Server metrics ("), "{}", out.show());
    // Plugins got the profiling window in phase_complete.
    let events = std::fs::read_to_string(&log).unwrap();
    let complete: Value = events
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["hook"] == "phase_complete" && e["phase"] == "profiling")
        .expect("a profiling phase_complete");
    let sm = &complete["server_metrics"];
    assert!(
        sm["metrics"]["node_memory_MemAvailable_bytes"]["series"][0]["stats"]["avg"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{sm:.300}"
    );
}

/// An HTTP 200 with `body`, on a kept-alive connection, for every request.
fn serve(conn: &mut support::Conn, body: impl Fn() -> String) -> std::io::Result<()> {
    while conn.request().is_some() {
        let b = body();
        conn.write(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ))?;
    }
    Ok(())
}

#[test]
fn failing_scrapes_are_counted_and_never_disturb_the_load() {
    let _g = support::shared();
    let closed = support::closed_port();
    let refused = closed.url("/metrics");
    let stall = ScriptedServer::start(|c| {
        c.stall();
        Ok(())
    });
    let garbage = ScriptedServer::start_metrics(|c| {
        serve(c, || "<html>\n<body>not metrics</body>\n</html>\n".into())
    });
    let unavailable = ScriptedServer::start_metrics(|c| {
        while c.request().is_some() {
            c.write("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")?;
        }
        Ok(())
    });
    let urls = [
        refused.clone(),
        format!("{}/metrics", stall.url()),
        format!("{}/metrics", garbage.url()),
        format!("{}/metrics", unavailable.url()),
    ];
    let mut args = base_args(&["--server-metrics"]);
    args.extend(urls.iter().map(String::as_str));
    let out = Run::profile(&args).run();
    out.ok();
    let report = out.json();
    // Every request was sent, answered and recorded.
    assert_eq!(report["request_count"]["avg"], 30.0, "{}", out.show());
    assert!(
        report["error_summary"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "{}",
        report["error_summary"]
    );
    assert_eq!(out.jsonl().len(), 30);
    let section = &report["server_metrics"];
    let count = |url: &str, key: &str| endpoint(section, url)[key].as_u64().unwrap();
    assert!(
        count(&urls[0], "refused") >= 2 && count(&urls[0], "ok") == 0,
        "{section}"
    );
    assert!(
        count(&urls[1], "timeouts") >= 2 && count(&urls[1], "ok") == 0,
        "{section}"
    );
    assert!(
        count(&urls[2], "garbage") >= 2 && count(&urls[2], "garbage_lines") >= 6,
        "{section}"
    );
    assert!(count(&urls[3], "http_errors") >= 2, "{section}");
    for u in &urls {
        let e = endpoint(section, u);
        assert_eq!(
            e["scrapes"],
            e[match u {
                _ if u == &urls[0] => "refused",
                _ if u == &urls[1] => "timeouts",
                _ if u == &urls[2] => "garbage",
                _ => "http_errors",
            }],
            "{e}"
        );
    }
    // The artifact has the same counts; each endpoint was named once on stderr, up front.
    let export: Value = serde_json::from_str(&out.read("server_metrics_export.json")).unwrap();
    assert_eq!(export["endpoints"], section["endpoints"]);
    for u in &urls {
        let n = out
            .stderr
            .lines()
            .filter(|l| l.contains(u.as_str()))
            .count();
        assert_eq!(n, 1, "{u}\n{}", out.show());
    }
    assert!(out.stdout.contains("scrapes failed"), "{}", out.show());
}

const DCGM_LABELS: [&str; 2] = [
    r#"gpu="0",UUID="GPU-aaaa",device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="node1""#,
    r#"gpu="1",UUID="GPU-bbbb",device="nvidia1",modelName="NVIDIA H100 80GB HBM3",Hostname="node1""#,
];

/// A DCGM exporter's text; GPU 0's utilisation is 10 × the scrape's number (capped at 100).
fn dcgm_text(n: u64) -> String {
    let util0 = (10 * n).min(100);
    let mut t = String::new();
    for (field, help, v0, v1) in [
        (
            "DCGM_FI_DEV_GPU_UTIL",
            "GPU utilization (in %).",
            util0 as f64,
            5.0,
        ),
        (
            "DCGM_FI_DEV_FB_USED",
            "Framebuffer memory used (in MiB).",
            40000.0,
            1000.0,
        ),
        (
            "DCGM_FI_DEV_POWER_USAGE",
            "Power draw (in W).",
            350.5,
            80.25,
        ),
        (
            "DCGM_FI_DEV_SM_CLOCK",
            "SM clock frequency (in MHz).",
            1980.0,
            345.0,
        ),
        (
            "DCGM_FI_DEV_GPU_TEMP",
            "GPU temperature (in C).",
            61.0,
            33.0,
        ),
    ] {
        t += &format!("# HELP {field} {help}\n# TYPE {field} gauge\n");
        t += &format!(
            "{field}{{{}}} {v0}\n{field}{{{}}} {v1}\n",
            DCGM_LABELS[0], DCGM_LABELS[1]
        );
    }
    t
}

#[test]
fn gpu_telemetry_per_gpu_from_a_dcgm_exporter() {
    let _g = support::shared();
    let scrapes = Arc::new(AtomicU64::new(0));
    let n = scrapes.clone();
    let dcgm = ScriptedServer::start_metrics(move |c| {
        serve(c, || dcgm_text(n.fetch_add(1, Ordering::SeqCst)))
    });
    let url = format!("{}/metrics", dcgm.url());
    let mut args = base_args(&["--no-server-metrics", "--gpu-telemetry", &url]);
    args.retain(|a| *a != "--no-gpu-telemetry");
    let out = Run::profile(&args).run();
    out.ok();
    let served = scrapes.load(Ordering::SeqCst);
    assert!(served >= 4, "{served} scrapes");
    let export: Value = serde_json::from_str(&out.read("gpu_telemetry_export.json")).unwrap();
    let gpus = export["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2, "{export}");
    let (g0, g1) = (&gpus[0], &gpus[1]);
    assert_eq!(
        (
            g0["gpu"].as_str(),
            g0["uuid"].as_str(),
            g0["hostname"].as_str()
        ),
        (Some("0"), Some("GPU-aaaa"), Some("node1"))
    );
    assert_eq!(g0["model_name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(g1["uuid"], "GPU-bbbb");
    // Constant values come back exactly; GPU 0's utilisation rose in steps of 10 within
    // what was served.
    let m = |g: &Value, k: &str, s: &str| {
        g["metrics"][k][s]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}.{s} in {g}"))
    };
    assert_eq!(m(g0, "gpu_memory_used", "avg"), 40000.0);
    assert_eq!(m(g1, "power_usage", "avg"), 80.25);
    assert_eq!(m(g0, "sm_clock", "p50"), 1980.0);
    assert_eq!(m(g1, "gpu_temperature", "max"), 33.0);
    assert_eq!(g0["metrics"]["gpu_memory_used"]["unit"], "MiB");
    let (lo, avg, hi) = (
        m(g0, "gpu_utilization", "min"),
        m(g0, "gpu_utilization", "avg"),
        m(g0, "gpu_utilization", "max"),
    );
    let served_max = (10 * (served - 1)).min(100) as f64;
    assert!(
        lo < hi && lo <= avg && avg <= hi && hi <= served_max,
        "{lo} {avg} {hi} (served up to {served_max})"
    );
    assert_eq!(lo % 10.0, 0.0);
    assert_eq!(m(g1, "gpu_utilization", "avg"), 5.0);
    // The CSV: a row per GPU and field; the report's section; the console lines.
    let csv = out.read("gpu_telemetry_export.csv");
    assert_eq!(csv.lines().count(), 1 + 2 * 5, "{csv}");
    assert!(
        csv.contains("node1,1,GPU-bbbb,NVIDIA H100 80GB HBM3,power_usage,W,80.25,80.25,80.25"),
        "{csv}"
    );
    let report = out.json();
    assert_eq!(report["gpu_telemetry"]["gpus"], export["gpus"]);
    assert!(
        out.stdout.contains("GPU telemetry (profiling window"),
        "{}",
        out.show()
    );
    assert!(!out.stderr.contains("no DCGM exporter"), "{}", out.show());
    assert!(!out.dir.join("server_metrics_export.json").exists());
}

#[test]
fn an_unreachable_gpu_exporter_is_one_line_and_the_run_goes_on() {
    let _g = support::shared();
    let closed = support::closed_port();
    let url = closed.url("/metrics");
    let mut args = base_args(&["--gpu-telemetry", &url]);
    args.retain(|a| *a != "--no-gpu-telemetry");
    let out = Run::profile(&args).run();
    out.ok();
    let lines: Vec<&str> = out
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("GPU telemetry"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.show());
    assert!(
        lines[0].contains("no DCGM exporter answered") && lines[0].contains(&url),
        "{}",
        lines[0]
    );
    assert_eq!(out.json()["request_count"]["avg"], 30.0);
    assert!(!out.dir.join("gpu_telemetry_export.json").exists());
    // The failures are in the report.
    let ep = endpoint(&out.json()["gpu_telemetry"], &url).clone();
    assert!(
        ep["refused"].as_u64().unwrap() >= 1 && ep["ok"] == 0,
        "{ep}"
    );
}

#[test]
fn the_default_run_is_quiet_whether_or_not_the_mock_serves_metrics() {
    let _g = support::shared();
    let out = Run::profile(&["--url", "mock", "--request-count", "5"]).run();
    out.ok();
    assert!(
        !out.stderr.to_lowercase().contains("server metrics") && !out.stderr.contains("warning"),
        "{}",
        out.show()
    );
    let report = out.json();
    // With a mock that serves /metrics the section names its address; without, there is none.
    match report.get("server_metrics") {
        None => assert!(!out.dir.join("server_metrics_export.json").exists()),
        Some(s) => {
            let ep = &s["endpoints"][0];
            assert!(
                ep["url"].as_str().unwrap().starts_with("http://127.0.0.1:"),
                "{s}"
            );
            assert_eq!(ep["refused"], 0, "{s}");
        }
    }
}

#[test]
fn bad_scrape_flags_are_usage_errors() {
    let _g = support::shared();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--server-metrics-interval", "nan"],
            "--server-metrics-interval",
        ),
        (
            &["--server-metrics-interval", "inf"],
            "--server-metrics-interval",
        ),
        (
            &["--server-metrics-interval", "0"],
            "--server-metrics-interval",
        ),
        (
            &["--server-metrics-interval", "1e9"],
            "--server-metrics-interval",
        ),
        (&["--server-metrics", "ftp://host/x"], "--server-metrics"),
        (&["--gpu-telemetry", "http://"], "--gpu-telemetry"),
        (&["--server-metrics-formats", "parquet"], "parquet"),
        (
            &["--no-server-metrics", "--server-metrics", "h:1"],
            "--server-metrics",
        ),
        (
            &["--no-gpu-telemetry", "--gpu-telemetry", "h:1"],
            "--gpu-telemetry",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["--url", "mock"];
        args.extend_from_slice(flags);
        let e = config_error(&args);
        assert!(e.contains(needle), "{flags:?}: {e}");
    }
    // And through the binary: exit 2.
    Run::profile(&["--url", "mock", "--server-metrics-interval", "-1"])
        .run()
        .assert_usage_error();
}

/// The one series of `metric` in a window summary (`server_metrics_export.json`'s body or a
/// time slice's `server_metrics`).
fn one_series<'a>(window: &'a Value, metric: &str) -> &'a Value {
    let s = series(window, metric);
    assert_eq!(s.len(), 1, "{metric}: {s:?}");
    &s[0]["stats"]
}

/// Issue 15's end-to-end check on the built-in mock, scraped by default: over the profiling
/// window, the server's own TTFT histogram counts exactly the run's requests, its
/// running-requests gauge averages the run's concurrency, and the time slices carry the
/// server's metrics over their windows, which add up to the run's.
#[test]
fn the_mock_scraped_during_a_run_agrees_with_the_run() {
    let _g = support::shared();
    const REQUESTS: u64 = 48;
    let out = Run::profile(&[
        "--url",
        "mock?ttft_ms=20&itl_ms=10",
        "-m",
        "sm-model",
        "--streaming",
        "--isl",
        "16",
        "--osl",
        "16",
        "--request-count",
        "48",
        "--concurrency",
        "4",
        "--server-metrics-interval",
        "0.1",
        "--slice-duration",
        "0.5",
        "--no-gpu-telemetry",
    ])
    .run();
    out.ok();
    let report = out.json();
    assert_eq!(report["request_count"]["avg"], REQUESTS as f64);
    let export: Value =
        serde_json::from_str(&out.read("server_metrics_export.json")).expect("server metrics");
    let ttft = one_series(&export, "vllm:time_to_first_token_seconds");
    assert_eq!(ttft["count"], REQUESTS as f64, "{ttft}");
    // The server's mean TTFT: its configured 20 ms, give or take its own scheduling.
    let mean = ttft["sum"].as_f64().unwrap() / REQUESTS as f64;
    assert!((0.019..0.040).contains(&mean), "server TTFT mean {mean} s");
    let running = one_series(&export, "vllm:num_requests_running");
    let avg = running["avg"].as_f64().unwrap();
    // Four in flight all along, less the moments between a request's end and the next
    // one's arrival and the drain at the end.
    assert!((3.0..=4.0).contains(&avg), "running avg {avg}: {running}");
    assert_eq!(running["max"], 4.0, "{running}");
    // The mock serves exactly --osl tokens per request.
    let generated = one_series(&export, "vllm:generation_tokens_total");
    assert_eq!(generated["delta"], (REQUESTS * 16) as f64, "{generated}");
    // Every slice has the server's metrics over its window; their TTFT counts add up.
    let slices: Value = serde_json::from_str(&out.read("profile_export_aiperf_timeslices.json"))
        .expect("timeslices");
    let slices = slices["timeslices"].as_array().expect("timeslices[]");
    assert!(slices.len() >= 2, "{} slices", slices.len());
    let mut sum = 0.0;
    for s in slices {
        let w = &s["server_metrics"];
        assert!(w.is_object(), "a slice without server metrics: {s}");
        if let Some(t) =
            w["metrics"]["vllm:time_to_first_token_seconds"]["series"][0]["stats"].get("count")
        {
            sum += t.as_f64().unwrap();
        }
    }
    assert_eq!(sum, REQUESTS as f64);
}
