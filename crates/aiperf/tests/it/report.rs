//! `report.html` and `aiperf plot`: the report's inline data against the run's own JSON, the
//! pictures, Python AIPerf's artifacts, comparisons, sweeps, bad input, and the page opened
//! in headless Chromium (screenshot content, no console errors).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, Output, Run};

const DATA_OPEN: &str = "<script type=\"application/json\" id=\"aiperf-report-data\">";

/// The inline JSON of a report page, parsed back.
fn report_data(html: &str) -> Value {
    let start = html.find(DATA_OPEN).expect("the data element") + DATA_OPEN.len();
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end]).expect("the inline data is JSON")
}

/// The page's chart ids; each of `want` is among them and drawn on the page.
fn assert_charts(data: &Value, html: &str, want: &[&str]) -> Vec<String> {
    let charts: Vec<String> = data["charts"]
        .as_array()
        .expect("the chart list")
        .iter()
        .map(|c| c.as_str().expect("a chart id").to_string())
        .collect();
    for id in want {
        assert!(charts.iter().any(|c| c == id), "{id} in {charts:?}");
        assert!(html.contains(&format!("id=\"chart-{id}\"")), "{id} drawn");
    }
    charts
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aiperf_python_run")
}

/// Checks every distribution of the report against the summary JSON's statistics.
fn assert_distributions_match(data: &Value, summary: &Value) -> usize {
    let dists = data["distributions"].as_object().expect("distributions");
    for (tag, d) in dists {
        let s = &summary[tag];
        assert_eq!(d["count"], s["count"], "{tag} count");
        for st in ["p50", "p90", "p99", "min", "max"] {
            let (a, b) = (d[st].as_f64().unwrap(), s[st].as_f64().unwrap());
            assert!(close(a, b), "{tag} {st}: report {a}, JSON {b}");
        }
    }
    dists.len()
}

/// A PNG's size and how many of its pixels are not the background (its first pixel).
fn png_content(path: &Path) -> (u32, u32, usize) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = png::Decoder::new(std::io::BufReader::new(f));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let px = info.color_type.samples();
    let bytes = &buf[..info.buffer_size()];
    let bg = &bytes[..px];
    let differ = bytes.chunks(px).filter(|p| p != &bg).count();
    (info.width, info.height, differ)
}

/// The data of the report `aiperf plot` draws from `dir`.
fn plotted(dir: &Path) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    Run::new(&[
        "plot",
        dir.to_str().unwrap(),
        "-o",
        tmp.path().to_str().unwrap(),
    ])
    .run()
    .ok();
    report_data(&std::fs::read_to_string(tmp.path().join("report.html")).unwrap())
}

fn mock_run(extra: &[&str]) -> Output {
    let mut args = vec![
        "--url",
        "mock?ttft_ms=3&itl_ms=1",
        "--streaming",
        "--osl",
        "6",
        "--isl",
        "16",
        "--concurrency",
        "2",
    ];
    args.extend_from_slice(extra);
    let out = Run::profile(&args).run();
    out.ok();
    out
}

#[test]
fn a_runs_report_holds_its_json_and_its_records() {
    let _gate = support::shared();
    let out = mock_run(&["--request-count", "40", "--warmup-request-count", "4"]);
    let html = out.read("report.html");
    let json = out.json();
    let data = report_data(&html);
    assert_eq!(data["kind"], "run");
    let run = &data["runs"][0];
    assert_eq!(run["benchmark_id"], json["benchmark_id"]);
    // The summary table's numbers are the JSON's own.
    for tag in [
        "request_throughput",
        "time_to_first_token",
        "request_latency",
    ] {
        assert_eq!(run["summary"][tag], json[tag], "{tag}");
    }
    // Percentiles computed from the records equal the ones the run computed.
    assert_eq!(assert_distributions_match(run, &json), 3);
    assert_eq!(run["records"], 44, "warmup and profiling records");
    assert_eq!(run["profiling_records"], 40);
    assert!(run["warmup_s"].is_array(), "the warmup is shaded");
    let t = &run["timeline"];
    let done: f64 = t["throughput"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() * t["interval_s"].as_f64().unwrap())
        .sum();
    assert!((done - 44.0).abs() < 1e-6, "every request once: {done}");
    let charts = assert_charts(
        &data,
        &html,
        &[
            "time_to_first_token_histogram",
            "time_to_first_token_cdf",
            "inter_token_latency_cdf",
            "request_latency_histogram",
            "timeline_latency",
            "timeline_throughput",
            "timeline_in_flight",
        ],
    );
    assert!(
        !charts.iter().any(|c| c == "timeline_send_lag"),
        "closed loop"
    );
    assert!(html.contains("client health"));
    // Self-contained: nothing is loaded from elsewhere.
    for needle in ["<script src", "<link", "@import", "url(http"] {
        assert!(!html.contains(needle), "{needle}");
    }
    // The run drew its report from the records it kept as it wrote them; `aiperf plot`
    // reads them back from the file. The same report either way.
    let again = plotted(&out.dir);
    assert_eq!(again["runs"][0], *run);
}

/// The server's metrics over time (the mock's `/metrics`, scraped during the run) and the
/// time slices are plotted: their charts are drawn from their files, and the server's token
/// counter, integrated over the timeline, gives back every token the run received.
#[test]
fn server_metrics_and_time_slices_are_plotted_from_their_files() {
    let _gate = support::shared();
    let out = mock_run(&[
        "--request-count",
        "80",
        "--warmup-request-count",
        "4",
        "--server-metrics-interval",
        "0.1",
        "--slice-duration",
        "0.2",
    ]);
    let html = out.read("report.html");
    let data = report_data(&html);
    let run = &data["runs"][0];
    assert_eq!(
        run["artifacts"]["server_metrics"],
        "server_metrics_export.json"
    );
    assert_eq!(
        run["artifacts"]["timeslices"],
        "profile_export_aiperf_timeslices.json"
    );
    let slices: Value = serde_json::from_str(&out.read("profile_export_aiperf_timeslices.json"))
        .expect("timeslices JSON");
    let n = slices["timeslices"].as_array().unwrap().len();
    assert!(n >= 2, "{n} slices");
    assert_eq!(run["artifacts"]["slices"], n);
    assert_charts(
        &data,
        &html,
        &[
            "server_requests",
            "server_kv_cache",
            "server_token_throughput",
            "server_ttft",
            "slices_latency",
            "slices_throughput",
        ],
    );
    for title in ["Server metrics", "Time slices", "Running requests"] {
        assert!(html.contains(title), "{title}");
    }
    // The file's timeline against the run: generation tokens per second between scrapes,
    // times the scrapes' spacing (the running-requests gauge has every scrape's time),
    // add up to the 84 × 6 tokens the mock generated.
    let sm: Value = serde_json::from_str(&out.read("server_metrics_export.json")).unwrap();
    let line = |name: &str| {
        sm["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {}", sm["timeline"]))
            .clone()
    };
    let times: Vec<u64> = line("vllm:num_requests_running")["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_u64().unwrap())
        .collect();
    let rates = line("vllm:generation_tokens")["points"].clone();
    let rates = rates.as_array().unwrap();
    assert_eq!(
        rates.len(),
        times.len() - 1,
        "a rate between each two scrapes"
    );
    let tokens: f64 = rates
        .iter()
        .zip(times.windows(2))
        .map(|(p, w)| {
            assert_eq!(
                p[0].as_u64().unwrap(),
                w[1],
                "a rate stands at its interval's end"
            );
            p[1].as_f64().unwrap() * (w[1] - w[0]) as f64 / 1e9
        })
        .sum();
    assert!((tokens - 84.0 * 6.0).abs() < 1e-6, "{tokens} tokens");
    // The running gauge never exceeds the concurrency (2).
    let max_running = line("vllm:num_requests_running")["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!((1.0..=2.0).contains(&max_running), "{max_running}");
}

#[test]
fn an_open_loop_run_shows_send_lag_and_auto_plot_writes_pngs() {
    let _gate = support::shared();
    let out = mock_run(&[
        "--request-rate",
        "200",
        "--request-count",
        "30",
        "--auto-plot",
    ]);
    let data = report_data(&out.read("report.html"));
    assert_eq!(data["runs"][0]["open_loop"], true);
    let charts = data["charts"].as_array().unwrap();
    assert!(
        charts.iter().any(|c| c == "timeline_send_lag"),
        "{charts:?}"
    );
    for c in charts {
        let p = out
            .dir
            .join("plots")
            .join(format!("{}.png", c.as_str().unwrap()));
        let (w, h, ink) = png_content(&p);
        assert_eq!((w, h), (760, 360));
        assert!(ink > 2000, "{}: {ink} drawn pixels", p.display());
    }
}

#[test]
fn no_html_writes_no_report() {
    let _gate = support::shared();
    let out = mock_run(&["--request-count", "4", "--no-html"]);
    assert!(!out.dir.join("report.html").exists());
    assert!(!out.dir.join("plots").exists());
}

#[test]
fn plot_rebuilds_a_python_aiperf_run_as_svg_and_png() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let svg_dir = tmp.path().join("svg");
    let dir = fixture();
    let out = Run::new(&[
        "plot",
        dir.to_str().unwrap(),
        "--output",
        svg_dir.to_str().unwrap(),
        "--format",
        "svg",
    ])
    .run();
    out.ok();
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("profile_export_aiperf.json")).unwrap(),
    )
    .unwrap();
    let html = std::fs::read_to_string(svg_dir.join("report.html")).unwrap();
    let data = report_data(&html);
    let run = &data["runs"][0];
    assert_eq!(assert_distributions_match(run, &summary), 3);
    assert_eq!(run["records"], 12);
    assert_eq!(run["errors_by_type"]["InternalServerError"], 1);
    assert!(html.contains("Qwen/Qwen3-0.6B") && html.contains("http://localhost:8000"));
    let ids = data["charts"].as_array().unwrap();
    assert!(ids.len() >= 8, "{ids:?}");
    for id in ids {
        let p = svg_dir.join(format!("{}.svg", id.as_str().unwrap()));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{}",
            p.display()
        );
        assert!(text.contains("<text"), "labelled");
    }
    // PNG, the default format, into DIR/plots by default (a copy of the fixture).
    let copy = tmp.path().join("run");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["profile_export_aiperf.json", "profile_export.jsonl"] {
        std::fs::copy(dir.join(f), copy.join(f)).unwrap();
    }
    Run::new(&["plot", copy.to_str().unwrap()]).run().ok();
    let (w, h, ink) = png_content(&copy.join("plots/time_to_first_token_cdf.png"));
    assert_eq!((w, h), (760, 360));
    assert!(ink > 2000, "{ink} drawn pixels");
}

#[test]
fn plot_of_two_runs_is_a_comparison() {
    let _gate = support::shared();
    let a = mock_run(&["--request-count", "12"]);
    let b = Run::profile(&[
        "--url",
        "mock?ttft_ms=25&itl_ms=1",
        "--streaming",
        "--osl",
        "6",
        "--isl",
        "16",
        "--concurrency",
        "2",
        "--request-count",
        "12",
    ])
    .run();
    b.ok();
    let tmp = tempfile::tempdir().unwrap();
    let out = Run::new(&[
        "plot",
        a.dir.to_str().unwrap(),
        b.dir.to_str().unwrap(),
        "-o",
        tmp.path().to_str().unwrap(),
        "--format",
        "svg",
    ])
    .run();
    out.ok();
    let html = std::fs::read_to_string(tmp.path().join("report.html")).unwrap();
    let data = report_data(&html);
    assert_eq!(data["kind"], "comparison");
    assert_eq!(data["runs"].as_array().unwrap().len(), 2);
    let p50 = |j: &Value| j["time_to_first_token"]["p50"].as_f64().unwrap();
    let diff = data["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["metric"] == "time_to_first_token" && d["stat"] == "p50")
        .expect("a TTFT p50 difference");
    assert!(close(
        diff["diff"].as_f64().unwrap(),
        p50(&b.json()) - p50(&a.json())
    ));
    assert!(
        diff["diff"].as_f64().unwrap() > 10.0,
        "the slower mock is slower"
    );
    assert!(html.contains("Δ 2 vs 1"));
    // Overlaid: one CDF line per run.
    let cdf = std::fs::read_to_string(tmp.path().join("time_to_first_token_cdf.svg")).unwrap();
    assert!(cdf.matches("<polyline").count() >= 2, "{cdf}");
}

#[test]
fn plot_refuses_missing_or_corrupt_artifacts() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let e = Run::new(&["plot", missing.to_str().unwrap()])
        .run()
        .assert_usage_error();
    assert!(e.contains("is not a directory"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = Run::new(&["plot", empty.to_str().unwrap()])
        .run()
        .assert_usage_error();
    assert!(e.contains("profile_export_aiperf.json"), "{e}");
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("profile_export_aiperf.json"),
        "{\"request_count\": ",
    )
    .unwrap();
    let e = Run::new(&["plot", bad.to_str().unwrap()])
        .run()
        .assert_usage_error();
    assert!(e.contains("is not valid JSON"), "{e}");
    std::fs::write(bad.join("profile_export_aiperf.json"), "{}").unwrap();
    std::fs::write(bad.join("profile_export.jsonl"), "{\"metadata\": 1}\n").unwrap();
    let e = Run::new(&["plot", bad.to_str().unwrap()])
        .run()
        .assert_usage_error();
    assert!(e.contains("profile_export.jsonl:1"), "{e}");
    Run::new(&["plot"]).run().expect_code(2);
}

#[test]
fn a_sweep_has_a_report_linking_each_points_report() {
    let _gate = support::shared();
    let out = Run::profile(&[
        "--url",
        "mock?ttft_ms=2&itl_ms=1",
        "--streaming",
        "--osl",
        "4",
        "--isl",
        "16",
        "--request-count",
        "8",
        "--concurrency",
        "1,2,4",
    ])
    .run();
    out.ok();
    let html = out.read("report.html");
    let data = report_data(&html);
    assert_eq!(data["kind"], "sweep");
    assert_eq!(data["swept"], "concurrency");
    let points = data["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    let fronts = points.iter().filter(|p| p["pareto"] == true).count();
    assert!(fronts >= 1, "a front has at least one point");
    for p in points {
        let links = p["reports"].as_array().unwrap();
        assert_eq!(links.len(), 1, "{p}");
        let target = out.dir.join(links[0].as_str().unwrap());
        assert!(target.is_file(), "{}", target.display());
        assert_eq!(
            report_data(&std::fs::read_to_string(target).unwrap())["kind"],
            "run"
        );
    }
    assert!(data["charts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "sweep_throughput_vs_latency"));
    // `aiperf plot` on the sweep's directory rebuilds the same kind of report.
    let again = plotted(&out.dir);
    assert_eq!(again["points"].as_array().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------
// Headless Chromium
// ---------------------------------------------------------------------------------------

/// Debian's `chromium`, or `None` with a loud message: only when the binary is absent and
/// `AIPERF_REQUIRE_CHROMIUM` is unset (CI sets it, so there a missing browser fails).
fn chromium() -> Option<PathBuf> {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(c).is_file() {
            return Some(c.into());
        }
    }
    if std::env::var_os("AIPERF_REQUIRE_CHROMIUM").is_some() {
        panic!("chromium is not installed but AIPERF_REQUIRE_CHROMIUM is set (apt-get install chromium)");
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: chromium is not installed; the report was NOT opened in a browser \
         (apt-get install chromium, or set AIPERF_REQUIRE_CHROMIUM=1 to fail instead) !!!!!!!!\n"
    );
    None
}

/// Opens `page` in headless Chromium at `width`×`height`: the screenshot's path and the
/// console messages (every `console.*` call and uncaught error of the page).
fn open_in_chromium(
    bin: &Path,
    page: &Path,
    width: u32,
    height: u32,
) -> (tempfile::TempDir, PathBuf, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();
    let shot = tmp.join("shot.png");
    let log = tmp.join("stderr");
    let mut child = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", tmp.join("profile").display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("file://{}", page.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    assert!(shot.is_file(), "no screenshot:\n{stderr}");
    (dir, shot, console)
}

#[test]
fn the_report_opens_in_headless_chromium_without_console_errors() {
    let Some(bin) = chromium() else { return };
    let _gate = support::shared();
    let out = mock_run(&["--request-count", "30", "--warmup-request-count", "2"]);
    let page = out.dir.join("report.html");
    // A laptop and a phone.
    for (w, h) in [(1280, 2000), (390, 1600)] {
        let (_tmp, shot, console) = open_in_chromium(&bin, &page, w, h);
        assert!(console.is_empty(), "console output at {w}px: {console:#?}");
        let (sw, sh, ink) = png_content(&shot);
        assert_eq!((sw, sh), (w, h));
        let share = ink as f64 / (sw as f64 * sh as f64);
        assert!(
            share > 0.03,
            "only {:.2}% of the {w}px screenshot is drawn",
            share * 100.0
        );
    }
}

#[test]
fn the_chromium_check_catches_a_broken_script() {
    let Some(bin) = chromium() else { return };
    let _gate = support::shared();
    let dir = tempfile::tempdir().unwrap();
    Run::new(&[
        "plot",
        fixture().to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
        "--format",
        "svg",
    ])
    .run()
    .ok();
    let page = dir.path().join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // The report's own script, broken: it reads a data element that is not there.
    let broken = html.replace("id=\"aiperf-report-data\"", "id=\"renamed\"");
    assert_ne!(broken, html);
    std::fs::write(&page, broken).unwrap();
    let (_tmp, _, console) = open_in_chromium(&bin, &page, 800, 600);
    assert!(
        console.iter().any(|l| l.contains("Uncaught")),
        "the error was not seen: {console:#?}"
    );
}
