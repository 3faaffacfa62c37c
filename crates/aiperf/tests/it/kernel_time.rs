//! Kernel receive timestamps (`http://` on Linux): records say whose clock timed them, and a
//! client starved of CPU still reports the server's TTFT, judged at the wire, while its
//! verdict names its read lag.
//!
//! The wire is tcpdump on loopback (Debian's package; `.ci/run` installs it and sets
//! `AIPERF_REQUIRE_TCPDUMP`). Without it the starved-client test says so loudly and judges
//! the TTFT against the mock's schedule instead, unless `AIPERF_REQUIRE_TCPDUMP` is set:
//! then it fails.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, MockServer, Run};

const STREAM: &[&str] = &[
    "-m",
    "m",
    "--streaming",
    "--osl",
    "8",
    "--isl",
    "16",
    "--no-server-metrics",
    "--no-gpu-telemetry",
];

/// Every record of a run says `kernel` and carries its read lag; `--no-kernel-timestamps`
/// makes every one `client`, with no read lag anywhere.
#[test]
fn records_say_whose_clock_timed_them() {
    let _gate = support::shared();
    for (flag, clock) in [(None, "kernel"), (Some("--no-kernel-timestamps"), "client")] {
        let mut args: Vec<&str> = STREAM.to_vec();
        args.extend([
            "--url",
            "mock?ttft_ms=5&itl_ms=1",
            "--concurrency",
            "2",
            "--request-count",
            "20",
        ]);
        args.extend(flag);
        let out = Run::profile(&args).run();
        out.ok();
        let recs = out.jsonl();
        assert_eq!(recs.len(), 20, "{}", out.show());
        for r in &recs {
            let md = &r["metadata"];
            assert_eq!(md["response_clock"], clock, "{r}");
            let lag = &md["read_lag_ms"];
            if clock == "kernel" {
                assert!(lag.as_f64().is_some_and(|v| v >= 0.0), "{r}");
            } else {
                assert!(lag.is_null(), "{r}");
            }
            assert!(r["metrics"].get("read_lag").is_none(), "{r}");
            // A request on a reused connection starts when the kernel sent it.
            let reused = r["metrics"]["http_req_connection_reused"]["value"] == 1;
            let request_clock = if reused { clock } else { "client" };
            assert_eq!(md["request_clock"], request_clock, "{r}");
        }
        let health = &out.json()["client_health"];
        assert_eq!(
            health["read_lag_p99_ms"].is_null(),
            clock == "client",
            "{health}"
        );
    }
}

/// Restricts the calling thread (and the processes it starts from now on) to `cpu`.
fn pin_this_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity get valid pointers
    // (pid 0: the calling thread).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "cannot pin to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The machine's CPUs this process may use.
fn usable_cpus() -> Vec<usize> {
    // SAFETY: as above; sched_getaffinity fills `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// A thread spinning on one CPU until dropped, so that a test that fails half-way does not
/// leave it starving the tests after it.
struct Busy {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Busy {
    fn start(cpu: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_this_thread(cpu);
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// tcpdump on loopback, capturing one port's TCP packets with nanosecond stamps until
/// stopped: the wire the client's times are judged against.
struct Capture {
    child: Child,
    pcap: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Capturing once tcpdump says it listens; `None` when it is missing or cannot capture
    /// (said loudly), or a failure if `AIPERF_REQUIRE_TCPDUMP` is set.
    fn start(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let pcap = dir.path().join("lo.pcap");
        let spawned = Command::new("tcpdump")
            .args(["-i", "lo", "-nn", "-s", "1500", "-B", "65536"])
            .args(["--time-stamp-precision=nano", "-w"])
            .arg(&pcap)
            .arg(format!("tcp port {port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let why = match spawned {
            Err(e) => format!("tcpdump did not start ({e}; apt-get install -y tcpdump)"),
            Ok(mut child) => {
                let stderr = child.stderr.take().expect("piped stderr");
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let mut said = String::new();
                    for line in std::io::BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        if line.contains("listening on") {
                            let _ = tx.send(Ok(()));
                        }
                        said.push_str(&line);
                        said.push('\n');
                    }
                    let _ = tx.send(Err(said));
                });
                match rx.recv_timeout(Duration::from_secs(10)) {
                    Ok(Ok(())) => {
                        return Some(Self {
                            child,
                            pcap,
                            _dir: dir,
                        })
                    }
                    Ok(Err(said)) => format!("tcpdump cannot capture on lo: {said}"),
                    Err(_) => {
                        let _ = child.kill();
                        "tcpdump did not start listening within 10 s".to_string()
                    }
                }
            }
        };
        if std::env::var_os("AIPERF_REQUIRE_TCPDUMP").is_some() {
            panic!("{why} (AIPERF_REQUIRE_TCPDUMP is set)");
        }
        eprintln!("\n*** the starved client is judged against the mock's schedule, not the wire: {why} (.ci/run sets AIPERF_REQUIRE_TCPDUMP to make this a failure) ***\n");
        None
    }

    /// Stops the capture (SIGINT, so tcpdump writes out what it has) and returns the pcap.
    fn stop(mut self) -> Vec<u8> {
        // A moment for the last packets to reach the capture buffer.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) with the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read(&self.pcap).expect("the capture file")
    }
}

impl Drop for Capture {
    /// A test that fails half-way leaves no tcpdump behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Each request's TTFT at the wire, in ms, by its `X-Request-ID`: from the packet carrying
/// the request to `port` to the first packet back on the same connection with a token's
/// content in it.
fn wire_ttft(pcap: &[u8], port: u16) -> HashMap<String, f64> {
    assert!(pcap.len() >= 24, "a capture file without its header");
    let field = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    // Nanosecond stamps (tcpdump --time-stamp-precision=nano) or microsecond ones.
    let scale = if field(pcap, 0) == 0xA1B2_3C4D {
        1
    } else {
        1000
    };
    let (mut pending, mut ttft) = (HashMap::new(), HashMap::new());
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let (sec, frac, len) = (field(pcap, at), field(pcap, at + 4), field(pcap, at + 8));
        let data = &pcap[at + 16..(at + 16 + len as usize).min(pcap.len())];
        at += 16 + len as usize;
        // Ethernet (lo's link type) carrying IPv4.
        if data.len() < 14 + 20 || data[12..14] != [8, 0] {
            continue;
        }
        let ip = &data[14..];
        let Some(tcp) = ip
            .get(usize::from(ip[0] & 15) * 4..)
            .filter(|t| t.len() >= 20)
        else {
            continue;
        };
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let payload = &tcp[(usize::from(tcp[12] >> 4) * 4).min(tcp.len())..];
        let t = u64::from(sec) * 1_000_000_000 + u64::from(frac) * scale;
        if dport == port && payload.starts_with(b"POST ") {
            let lower = payload.to_ascii_lowercase();
            let key = b"x-request-id: ";
            if let Some(i) = lower.windows(key.len()).position(|w| w == key) {
                let id = &payload[i + key.len()..(i + key.len() + 36).min(payload.len())];
                pending.insert(sport, (String::from_utf8_lossy(id).to_string(), t));
            }
        } else if sport == port && pending.contains_key(&dport) {
            let key = b"\"content\":\"";
            let content = payload
                .windows(key.len() + 1)
                .any(|w| &w[..key.len()] == key && w[key.len()] != b'"');
            if content {
                let (id, sent) = pending.remove(&dport).unwrap();
                ttft.insert(id, t.saturating_sub(sent) as f64 / 1e6);
            }
        }
    }
    ttft
}

/// The slowed client: `aiperf` pinned to one CPU with a busy thread, at nice 10 (so
/// the busy thread gets most of that CPU and the client's reads wait milliseconds); the
/// mock on the other CPU answers every request 20 ms after the kernel received it (its
/// deadlines count from the kernel's receive stamp). The client's TTFT must still be the
/// server's within 0.5 ms (p50 and p90), and its verdict must name the read lag. Against a
/// second mock whose tokens come closer together than the read lag, the verdict must say
/// that TTFT and ITL may be skewed.
#[test]
fn a_starved_client_still_reports_the_servers_ttft_and_names_its_read_lag() {
    let _gate = support::exclusive();
    let cpus = usable_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs 2 CPUs, this process may use {cpus:?}");
        return;
    }
    let (client_cpu, server_cpu) = (cpus[0], cpus[1]);
    let mock = |itl: &'static str| {
        std::thread::spawn(move || {
            pin_this_thread(server_cpu);
            MockServer::start(&["--ttft-ms", "20", "--itl-ms", itl])
        })
        .join()
        .expect("the mock started")
    };
    // Tokens 40 ms apart, longer than the read lag here (p99 7–19 ms). Segments that wait in
    // a TCP socket together are merged by the kernel, which keeps the last one's stamp, so
    // a read that came after the second token arrived would give the first the second's
    // time (with tokens 5 ms apart, TTFT p90 came out at 25–30 ms).
    let spaced = mock("40");
    let close = mock("2");
    let busy = Busy::start(client_cpu);
    // Two tokens a request (60 ms against the spaced mock): a read lag of a few ms is then
    // several % of a request, which the verdict holds against the client (under 1 % it is
    // only a note; see `health::READ_LAG_RATE_LIMIT`).
    let run = |mock: &MockServer, extra: &[&str]| {
        let mut args: Vec<String> = STREAM.iter().map(|s| s.to_string()).collect();
        let osl = args
            .iter()
            .position(|a| a == "--osl")
            .expect("STREAM sets --osl");
        args[osl + 1] = "2".into();
        args.extend(
            ["--concurrency", "4", "--request-count", "100", "--url"]
                .iter()
                .map(|s| s.to_string()),
        );
        args.push(mock.url());
        args.extend(extra.iter().map(|s| s.to_string()));
        let running = std::thread::spawn(move || {
            pin_this_thread(client_cpu);
            // SAFETY: setpriority on the calling thread (Linux: per-thread nice, inherited
            // by the child started next).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            Run::profile(&args).spawn()
        })
        .join()
        .expect("the client started");
        running
            .wait_within(std::time::Duration::from_secs(120))
            .expect("the starved client finished")
    };
    let capture = Capture::start(spaced.port);
    let kernel = run(&spaced, &[]);
    let wire = capture.map(|c| wire_ttft(&c.stop(), spaced.port));
    let user = run(&spaced, &["--no-kernel-timestamps"]);
    let merged = run(&close, &[]);
    drop(busy);
    kernel.ok();
    user.ok();

    let j = kernel.json();
    let ttft = |j: &serde_json::Value, s: &str| j["time_to_first_token"][s].as_f64().unwrap();
    let health = &j["client_health"];
    let figures = format!(
        "kernel stamps: TTFT p50 {:.3} p90 {:.3} p99 {:.3} ms, read lag p99 {} avg {}, \
         request latency avg {}; client clock: TTFT p50 {:.3} p90 {:.3} p99 {:.3} ms; health \
         {health}",
        ttft(&j, "p50"),
        ttft(&j, "p90"),
        ttft(&j, "p99"),
        health["read_lag_p99_ms"],
        j["read_lag"]["avg"],
        j["request_latency"]["avg"],
        ttft(&user.json(), "p50"),
        ttft(&user.json(), "p90"),
        ttft(&user.json(), "p99"),
    );
    eprintln!("{figures}");
    assert!(
        kernel
            .jsonl()
            .iter()
            .all(|r| r["metadata"]["response_clock"] == "kernel"),
        "{figures}"
    );
    match wire {
        Some(wire) => {
            // Each request on a reused connection against its own TTFT at the wire (one on a
            // new connection counts its connect, as in AIPerf; the wire's starts after it).
            let mut off: Vec<f64> = kernel
                .jsonl()
                .iter()
                .filter(|r| r["metrics"]["http_req_connection_reused"]["value"] == 1)
                .filter_map(|r| {
                    let at_wire = wire.get(r["metadata"]["x_request_id"].as_str()?)?;
                    let t = r["metrics"]["time_to_first_token"]["value"].as_f64()?;
                    Some((t - at_wire).abs())
                })
                .collect();
            off.sort_by(f64::total_cmp);
            assert!(off.len() >= 80, "{} of 100 matched at the wire", off.len());
            let q = |p: f64| off[((off.len() - 1) as f64 * p) as usize];
            let at_wire = format!(
                "|client TTFT - wire TTFT| over {} requests: p50 {:.3} p90 {:.3} max {:.3} ms; {figures}",
                off.len(),
                q(0.5),
                q(0.9),
                off[off.len() - 1]
            );
            eprintln!("{at_wire}");
            assert!(q(0.5) < 0.5 && q(0.9) < 0.5, "{at_wire}");
        }
        None => {
            for s in ["p50", "p90"] {
                assert!((ttft(&j, s) - 20.0).abs() < 0.5, "TTFT {s}: {figures}");
            }
        }
    }
    let read_lag = health["read_lag_p99_ms"].as_f64().expect("a read lag");
    assert!(read_lag > 1.0, "the client was not slowed: {figures}");
    assert_eq!(
        health["verdict"], "client_may_be_the_bottleneck",
        "{figures}"
    );
    assert!(
        health["reasons"].as_array().unwrap().iter().any(|r| r
            .as_str()
            .unwrap_or("")
            .contains("read lag p99")
            && r.as_str()
                .unwrap_or("")
                .contains("TTFT and ITL are not skewed")),
        "{figures}"
    );
    merged.ok();
    let health = &merged.json()["client_health"];
    let reasons = health["reasons"].to_string();
    assert!(
        reasons.contains("longer than the time between tokens")
            && reasons.contains("TTFT and ITL may be skewed by up to the read lag"),
        "tokens 2 ms apart: {health}"
    );
}
