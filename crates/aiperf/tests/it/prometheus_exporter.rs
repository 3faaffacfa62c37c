//! The built-in `prometheus_exporter` end to end: a real Prometheus server (Debian's
//! `prometheus`, which `.ci/run` installs) scrapes the exporter while `aiperf` runs against
//! the built-in mock, and its query API answers with the run's request count; an occupied
//! `listen` port disables only that plugin; a typo'd key is a config error at `file:line`.
//!
//! Prerequisite (a missing one fails the test with instructions, it is never skipped):
//! `/usr/bin/prometheus`. Prometheus and the exporter listen on free 127.0.0.1 ports; the
//! Prometheus child is killed when its guard is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, free_port, Output, Run};

/// Debian's `prometheus` (`.ci/run` installs it).
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A wait longer than this fails the test (a hang, not slowness).
const DEADLINE: Duration = Duration::from_secs(60);

/// A tempdir holding `config.yaml` for `aiperf --config`.
struct Scenario {
    tmp: tempfile::TempDir,
}

impl Scenario {
    fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Writes `config.yaml` (a `plugins:` section) and returns
    /// `aiperf profile --config FILE <mock, streaming> EXTRA`, not started.
    fn profile(&self, plugins_yaml: &str, extra: &[&str]) -> Run {
        let config = self.path("config.yaml");
        std::fs::write(&config, format!("plugins:\n{plugins_yaml}")).expect("write config");
        let mut args: Vec<String> = [
            "--config",
            &config.display().to_string(),
            "-m",
            "exporter-test-model",
            "--streaming",
            "--isl",
            "16",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let has = |flag: &str| extra.contains(&flag);
        if !has("--url") {
            args.extend(["--url".into(), "mock?ttft_ms=1&itl_ms=1".into()]);
        }
        if !has("--osl") {
            args.extend(["--osl".into(), "4".into()]);
        }
        if !has("--request-count") {
            args.extend(["--request-count".into(), "6".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Run::profile(&args).timeout(Duration::from_secs(120))
    }

    /// The 1-based line of `config.yaml` holding `needle`.
    fn config_line(&self, needle: &str) -> usize {
        let text = std::fs::read_to_string(self.path("config.yaml")).expect("config.yaml");
        1 + text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in config.yaml"))
    }
}

/// `GET path` on 127.0.0.1:port, HTTP/1.0: (status, body); `None` when nobody answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// A URL query value, percent-encoded.
fn encode(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Prometheus server of our own, scraping `target` every second; killed when dropped.
struct Prometheus {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        assert!(
            Path::new(PROMETHEUS).is_file(),
            "{PROMETHEUS} is missing: `apt-get install -y prometheus` (as .ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: aiperf\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let port = free_port();
        let child = std::process::Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start prometheus");
        let mut p = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + DEADLINE;
        while http_get(port, "/-/ready").map(|r| r.0) != Some(200) {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never became ready:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Prometheus hands new targets to its scrapers in batches, every 5 s: wait until
        // `target` is one of them (it is down until the exporter starts).
        while !p.scrapes(target) {
            assert!(
                Instant::now() < deadline,
                "prometheus never took up the target {target}:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// Whether `target` is among the active targets.
    fn scrapes(&self, target: &str) -> bool {
        let Some((200, body)) = http_get(self.port, "/api/v1/targets") else {
            return false;
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["activeTargets"]
            .as_array()
            .is_some_and(|a| a.iter().any(|t| t["labels"]["instance"] == target))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The instant query's samples as (labels, value).
    fn query(&self, q: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(q));
        let (status, body) = http_get(self.port, &path).expect("prometheus answers");
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let value = r["value"][1].as_str().and_then(|s| s.parse().ok());
                (r["metric"].clone(), value.expect("a numeric value"))
            })
            .collect()
    }

    /// The one sample of a query, if there is one.
    fn one(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        assert!(r.len() <= 1, "{q}: more than one series: {r:?}");
        r.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request_count(export: &Value) -> u64 {
    export["request_count"]["avg"]
        .as_f64()
        .unwrap_or_else(|| panic!("no request_count.avg: {}", export["request_count"])) as u64
}

/// A real Prometheus scrapes the exporter every second during a run of a few hundred
/// requests (with a warmup); while the exporter lingers after the run, the plain query for
/// the profiling phase's TTFT count reaches the run's request count, and so does the largest
/// value Prometheus stored. The warmup is its own series, and the sum is in seconds.
#[test]
fn a_real_prometheus_scrapes_every_request() {
    let _gate = support::shared();
    let s = Scenario::new();
    let port = free_port();
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));
    let yaml = format!(
        "  prometheus_exporter:\n    listen: 127.0.0.1:{port}\n    linger_seconds: 4\n    const_labels:\n      suite: it\n"
    );
    const REQUESTS: u64 = 300;
    const WARMUP: u64 = 10;
    let count = "aiperf_time_to_first_token_seconds_count{phase=\"profiling\",job=\"aiperf\"}";
    let mut live = Vec::new();
    let mut last_poll = Instant::now();
    let out = s
        .profile(
            &yaml,
            &[
                "--url",
                "mock?ttft_ms=5&itl_ms=1",
                "--request-count",
                &REQUESTS.to_string(),
                "--warmup-request-count",
                &WARMUP.to_string(),
                "--concurrency",
                "8",
                "--osl",
                "8",
                "--strict-plugins",
            ],
        )
        .run_polling(|| {
            // While aiperf runs (and lingers), what the plain query says, a few times a second.
            if last_poll.elapsed() >= Duration::from_millis(200) {
                last_poll = Instant::now();
                if let Some(v) = prom.one(count) {
                    live.push(v);
                }
            }
        });
    out.expect_code(0);
    let export = out.json();
    assert_eq!(request_count(&export), REQUESTS);
    let p = &export["plugins"]["prometheus_exporter"];
    assert_eq!(p["status"], "active", "{p}");
    // After the run (the target is gone, its series stale): the largest value stored.
    let stored = |q: &str| {
        let q = format!("max_over_time({q}[10m])");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match prom.one(&q) {
                Some(v) => return v,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                None => panic!("{q}: no value\n{}", prom.log_text()),
            }
        }
    };
    // From the phase's stats (`phase_complete`), whatever the record feed delivered.
    assert_eq!(
        stored("aiperf_requests_completed{phase=\"profiling\"}"),
        REQUESTS as f64
    );
    assert_eq!(
        stored("aiperf_requests_sent{phase=\"warmup\"}"),
        WARMUP as f64
    );
    assert_eq!(stored("aiperf_phase_complete{phase=\"profiling\"}"), 1.0);
    assert_eq!(
        stored("aiperf_benchmark_complete{suite=\"it\",model=\"exporter-test-model\",endpoint_type=\"chat\"}"),
        1.0
    );

    // From every record (`request_records`): none dropped, all received.
    assert!(
        p["hooks"]["request_records"]["calls"].as_u64() > Some(0),
        "{p}"
    );
    assert_eq!(p["records"]["dropped"], 0, "{p}");
    assert_eq!(p["records"]["delivered"], REQUESTS + WARMUP, "{p}");
    let report = &p["report"]["metrics"];
    assert_eq!(report["records"], REQUESTS + WARMUP, "{p}");
    assert_eq!(
        report["url"],
        format!("http://127.0.0.1:{port}/metrics"),
        "{p}"
    );
    // Counted when the run ended, before the linger: a short run may end before the first.
    assert!(report["scrapes"].is_u64(), "{p}");

    assert_eq!(
        live.last().copied(),
        Some(REQUESTS as f64),
        "the plain query while the exporter lingered, oldest first: {live:?}\n{}",
        out.show()
    );
    assert!(
        live.windows(2).all(|w| w[0] <= w[1]),
        "a count never goes down: {live:?}"
    );

    assert_eq!(stored(count), REQUESTS as f64);
    assert_eq!(
        stored("aiperf_time_to_first_token_seconds_count{phase=\"warmup\"}"),
        WARMUP as f64
    );
    assert_eq!(
        stored("aiperf_requests_total{phase=\"profiling\",outcome=\"success\"}"),
        REQUESTS as f64
    );
    assert_eq!(
        stored("aiperf_output_tokens_total{phase=\"profiling\"}"),
        export["total_output_tokens"]["avg"]
            .as_f64()
            .expect("total_output_tokens")
    );
    // The TTFT sum in seconds: the export's mean (ms) times the count.
    let sum = stored("aiperf_time_to_first_token_seconds_sum{phase=\"profiling\"}");
    let mean_ms = export["time_to_first_token"]["avg"]
        .as_f64()
        .expect("ttft avg");
    let want = mean_ms * REQUESTS as f64 / 1000.0;
    assert!(
        (sum - want).abs() <= 1e-6 * want,
        "ttft sum {sum} s vs {want} s"
    );
    let labels = prom.query(&format!("last_over_time({count}[10m])"));
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert_eq!(labels[0].0["suite"], "it", "{labels:?}");
    assert_eq!(labels[0].0["model"], "exporter-test-model");
}

/// A `listen` address already in use disables only the exporter, with the address in the
/// reason: the run goes on (exit 0) and the other plugin works; `--strict-plugins` fails it.
#[test]
fn an_occupied_listen_port_disables_only_the_exporter() {
    let _gate = support::shared();
    let s = Scenario::new();
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("addr").to_string();
    let events = s.path("events.txt");
    let yaml = format!(
        "  prometheus_exporter:\n    listen: {addr}\n  event_log:\n    file: '{}'\n    format: text\n",
        events.display()
    );
    let out = s.profile(&yaml, &[]).run();
    out.expect_code(0);
    let export = out.json();
    assert_eq!(request_count(&export), 6);
    let p = &export["plugins"]["prometheus_exporter"];
    assert_eq!(p["status"], "disabled", "{p}");
    let reason = p["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot listen") && reason.contains(&addr),
        "{reason}"
    );
    assert!(
        out.stderr.contains("plugin `prometheus_exporter` disabled") && out.stderr.contains(&addr),
        "{}",
        out.show()
    );
    assert_eq!(export["plugins"]["event_log"]["status"], "active");
    let logged = std::fs::read_to_string(&events).expect("event log");
    assert!(
        logged.contains("event_log benchmark_complete -"),
        "{logged}"
    );

    let out = s.profile(&yaml, &["--strict-plugins"]).run();
    out.expect_code(1);
    assert!(out.stderr.contains(&addr), "{}", out.show());
    drop(held);
}

/// A key the exporter's schema forbids is a config error at its `file:line` (exit 2), with
/// the closest key as a hint; nothing runs.
#[test]
fn a_typo_in_the_exporter_config_is_exit_2_at_its_line() {
    let _gate = support::shared();
    let s = Scenario::new();
    let yaml = "  prometheus_exporter:\n    listen: 127.0.0.1:0\n    linger_secs: 4\n";
    let out: Output = s.profile(yaml, &[]).run();
    out.expect_code(2);
    let at = format!(
        "{}:{}:",
        s.path("config.yaml").display(),
        s.config_line("linger_secs")
    );
    let line = out
        .stderr_lines()
        .into_iter()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line\n{}", out.show()))
        .to_string();
    assert!(
        line.contains(&at)
            && line.contains("linger_secs")
            && line.contains("did you mean `linger_seconds`"),
        "{at}: {line}"
    );
    assert!(
        !out.dir.join("profile_export_aiperf.json").exists(),
        "nothing ran"
    );
}
