//! `--ui dashboard` in a real terminal: tmux runs the binary in a pane against the built-in
//! mock; `capture-pane` shows the dashboard mid-run; `send-keys C-c` interrupts it; then the
//! pane is checked to be back to normal (alternate screen left, cursor shown) and the run's
//! artifacts to be written with `was_cancelled: true`.
//!
//! Prerequisite: `tmux` (Debian's package; `.ci/run` installs it and sets
//! `AIPERF_REQUIRE_TMUX`). Without it these tests say so loudly and pass, unless
//! `AIPERF_REQUIRE_TMUX` is set: then they fail.
//!
//! Each test runs its own tmux server on a private socket (`tmux -L`), ended when the test
//! ends; nothing here touches another tmux server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// Environment variables the run must not inherit (as `support::Run` scrubs them).
const SCRUBBED_ENV: [&str; 5] = [
    "AIPERF_API_KEY",
    "AIPERF_LOG",
    "RUST_LOG",
    "VIRTUAL_ENV",
    "AIPERF_PLUGIN_PATH",
];

/// Whether tmux can be run; `None` (after saying why) when a test should be skipped.
fn tmux_or_skip(test: &str) -> Option<()> {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    if std::env::var_os("AIPERF_REQUIRE_TMUX").is_some() {
        panic!("{test}: tmux is required (AIPERF_REQUIRE_TMUX is set): apt-get install -y tmux");
    }
    eprintln!(
        "\n*** SKIPPED {test}: tmux is not installed (apt-get install -y tmux; .ci/run sets AIPERF_REQUIRE_TMUX to make this a failure) ***\n"
    );
    None
}

/// A tmux server of this test's own, with one pane running one command.
struct Pane {
    socket: String,
    tmp: tempfile::TempDir,
}

impl Pane {
    /// Starts `program args...` in a `width`×`height` pane that stays (dead) after the
    /// program exits, so its last screen and exit status can be read.
    fn start(program: &str, args: &[String], width: u16, height: u16) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "aiperf-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("tmux.conf");
        std::fs::write(
            &conf,
            "set -g remain-on-exit on\nset -g default-terminal xterm-256color\nset -g history-limit 5000\n",
        )
        .unwrap();
        let pane = Pane { socket, tmp };
        let (w, h) = (width.to_string(), height.to_string());
        let mut all: Vec<String> = [
            "-f",
            conf.to_str().unwrap(),
            "new-session",
            "-d",
            "-x",
            &w,
            "-y",
            &h,
            "--",
            // The program under a shell that outlives it, so the pane's terminal state
            // after the program ends (alternate screen, cursor) is that of a live pane, as
            // a user's shell would see it, and the exit status is printed.
            // bash: on a Ctrl-C it waits to see whether the program died of it (it does not:
            // it exits), then goes on.
            "bash",
            "-c",
            "\"$0\" \"$@\"; echo \"aiperf exited: $?\"; exec sleep 600",
            program,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().cloned());
        let out = pane.tmux(&all);
        assert!(out.status.success(), "tmux new-session: {out:?}");
        pane
    }

    fn tmux<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = Command::new("tmux");
        cmd.arg("-L").arg(&self.socket).args(args);
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        cmd.current_dir(self.tmp.path()).output().expect("run tmux")
    }

    /// The pane's screen as text.
    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pane's screen with its scrollback (what was printed after the dashboard closed).
    fn history(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-S", "-", "-t", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A tmux format of the pane, e.g. `#{alternate_on}`.
    fn show(&self, format: &str) -> String {
        let out = self.tmux(&["display-message", "-p", "-t", "0", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn keys(&self, keys: &str) {
        let out = self.tmux(&["send-keys", "-t", "0", keys]);
        assert!(out.status.success(), "send-keys: {out:?}");
    }

    /// Polls the screen until `done` holds (bounded: a hang fails the test, with the screen).
    fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "waited {limit:?} for {what}; the pane shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the program to exit; its exit status (printed by the pane's shell).
    fn wait_exit(&self, limit: Duration) -> i32 {
        let until = Instant::now() + limit;
        loop {
            let text = self.history();
            if let Some(code) = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("aiperf exited: "))
            {
                return code.trim().parse().expect("an exit status");
            }
            assert!(
                Instant::now() < until,
                "still running {limit:?} after Ctrl-C; the pane shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        // This test's own server only (its private socket).
        let _ = self.tmux(&["kill-server"]);
    }
}

fn profile_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["profile", "--ui", "dashboard", "--artifact-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("profile_export_aiperf.json"))
        .unwrap_or_else(|e| panic!("no report in {}: {e}", dir.display()));
    serde_json::from_str(&text).unwrap()
}

fn artifacts() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("artifacts");
    (tmp, dir)
}

/// The dashboard mid-run shows the phase, the live figures, the errors by type and the
/// client health on the alternate screen; one Ctrl-C finishes the phase, the terminal comes
/// back (normal screen, cursor shown), the summary and the interruption message are printed
/// on it, and the artifacts say `was_cancelled: true`.
#[test]
fn the_dashboard_runs_in_a_terminal_and_ctrl_c_restores_it() {
    let _gate = support::shared();
    let Some(()) = tmux_or_skip("the_dashboard_runs_in_a_terminal_and_ctrl_c_restores_it") else {
        return;
    };
    let (_tmp, dir) = artifacts();
    let args = profile_args(
        &dir,
        &[
            "--url",
            "mock?ttft_ms=20&itl_ms=5&tokens=16&error_rate=20",
            "--streaming",
            "--concurrency",
            "4",
            "--benchmark-duration",
            "300",
            "--benchmark-grace-period",
            "30",
        ],
    );
    let pane = Pane::start(support::bin(), &args, 110, 36);
    let screen = pane.wait_for(
        "the dashboard with results and an error",
        Duration::from_secs(60),
        |s| s.contains("Phase: profiling") && s.contains("InternalServerError"),
    );
    for shown in [
        "concurrency 4",
        "requests/s",
        "in flight",
        "TTFT",
        "ITL",
        "Request latency",
        "Send lag",
        "Errors by type",
        "Client health",
        "Throughput (requests/s)",
        "TTFT p50 (ms)",
        "Ctrl-C: stop sending",
    ] {
        assert!(screen.contains(shown), "no {shown:?} on:\n{screen}");
    }
    assert_eq!(
        pane.show("#{alternate_on} #{cursor_flag}"),
        "1 0",
        "alternate screen, cursor hidden"
    );
    pane.keys("C-c");
    let code = pane.wait_exit(Duration::from_secs(90));
    assert_eq!(code, 0, "{}", pane.history());
    assert_eq!(
        pane.show("#{alternate_on} #{cursor_flag}"),
        "0 1",
        "normal screen and cursor back"
    );
    let after = pane.history();
    assert!(
        after.contains("Request Latency"),
        "the summary table:\n{after}"
    );
    assert!(
        after.contains("Interrupted: no new requests"),
        "the message written under the dashboard, printed after it:\n{after}"
    );
    assert!(
        !after.contains("Errors by type"),
        "no dashboard frame on the normal screen:\n{after}"
    );
    let j = report(&dir);
    assert_eq!(j["was_cancelled"], true);
    let stats = &j["phase_stats"]["profiling"];
    let sent = stats["sent"].as_u64().unwrap();
    assert!(sent > 0, "{stats}");
    let lines = std::fs::read_to_string(dir.join("profile_export.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        sent,
        "every request sent is a record"
    );
    assert!(
        j["error_summary"]
            .to_string()
            .contains("InternalServerError"),
        "{}",
        j["error_summary"]
    );
}

/// A second Ctrl-C exits at once with 130, and the terminal is given back all the same.
#[test]
fn a_second_ctrl_c_exits_130_with_the_terminal_restored() {
    let _gate = support::shared();
    let Some(()) = tmux_or_skip("a_second_ctrl_c_exits_130_with_the_terminal_restored") else {
        return;
    };
    let (_tmp, dir) = artifacts();
    // Requests that take 60 s and a grace period as long: only a second Ctrl-C ends it soon.
    let args = profile_args(
        &dir,
        &[
            "--url",
            "mock?ttft_ms=60000&itl_ms=0&tokens=2",
            "--concurrency",
            "2",
            "--request-count",
            "4",
            "--benchmark-grace-period",
            "120",
        ],
    );
    let pane = Pane::start(support::bin(), &args, 100, 32);
    pane.wait_for("the dashboard", Duration::from_secs(60), |s| {
        s.contains("Phase: profiling") && s.contains("0 / 4 requests")
    });
    assert_eq!(pane.show("#{alternate_on}"), "1");
    pane.keys("C-c");
    let screen = pane.wait_for("the stopping notice", Duration::from_secs(30), |s| {
        s.contains("Ctrl-C again quits now")
    });
    assert!(screen.contains("stopping"), "{screen}");
    pane.keys("C-c");
    let code = pane.wait_exit(Duration::from_secs(30));
    assert_eq!(code, 130, "{}", pane.history());
    assert_eq!(pane.show("#{alternate_on} #{cursor_flag}"), "0 1");
    let after = pane.history();
    assert!(after.contains("Interrupted twice: exiting now"), "{after}");
    assert!(
        after.contains("Interrupted: no new requests"),
        "the first message, kept while the dashboard was up:\n{after}"
    );
}
