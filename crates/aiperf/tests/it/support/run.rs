//! The one way to run the `aiperf` binary: [`Run`] builds an invocation, `run()` waits for it
//! (bounded by its timeout) and gives an [`Output`] with helpers for the artifacts; `spawn()`
//! gives a [`Running`] process to signal or watch. [`MockServer`] is `aiperf mock-server` as
//! a [`Running`] process.
//!
//! A process's stdout and stderr go to files in its own tempdir (no pipe to drain, and a
//! plugin that inherits them cannot hold a reader up), next to the artifact directory of
//! [`Run::profile`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A process still running after this is killed and the test fails (a hang, not slowness).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Removed from every run, so the caller's environment cannot change what a test sees.
const SCRUBBED_ENV: [&str; 5] = [
    "AIPERF_API_KEY",
    "AIPERF_LOG",
    "RUST_LOG",
    "VIRTUAL_ENV",
    "AIPERF_PLUGIN_PATH",
];

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aiperf")
}

/// One `aiperf` invocation, not started yet.
#[must_use = "a Run does nothing until run() or spawn()"]
pub struct Run {
    program: PathBuf,
    args: Vec<String>,
    /// Applied in order after [`SCRUBBED_ENV`]; `None` removes the variable.
    envs: Vec<(String, Option<String>)>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    tmp: tempfile::TempDir,
}

impl Run {
    /// `aiperf ARGS...` exactly as given.
    pub fn new<S: AsRef<str>>(args: &[S]) -> Self {
        Self {
            program: PathBuf::from(bin()),
            args: super::strings(args),
            envs: Vec::new(),
            cwd: None,
            timeout: DEFAULT_TIMEOUT,
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// `aiperf profile ARGS... --ui none --artifact-dir <fresh tempdir>`; the artifacts are
    /// kept until the [`Output`] is dropped.
    pub fn profile<S: AsRef<str>>(args: &[S]) -> Self {
        let mut all = vec!["profile".to_string()];
        all.extend(super::strings(args));
        Self::new(&all).with_artifacts()
    }

    /// Appends `--ui none --artifact-dir <fresh tempdir>` (what [`Run::profile`] does), for
    /// an invocation that is not `profile ...` (e.g. `aiperf --config FILE`).
    pub fn with_artifacts(mut self) -> Self {
        let dir = self.artifact_dir();
        self.args.extend([
            "--ui".into(),
            "none".into(),
            "--artifact-dir".into(),
            dir.display().to_string(),
        ]);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.envs.push((key.into(), None));
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Runs another build of `aiperf` (e.g. the release binary) instead of the one under test.
    pub fn program(mut self, path: &Path) -> Self {
        self.program = path.to_path_buf();
        self
    }

    /// Replaces the default timeout (120 s).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    fn artifact_dir(&self) -> PathBuf {
        self.tmp.path().join("artifacts")
    }

    /// Starts the process in the background; it is killed when the [`Running`] is dropped.
    pub fn spawn(self) -> Running {
        let out = std::fs::File::create(self.tmp.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(self.tmp.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for key in SCRUBBED_ENV {
            cmd.env_remove(key);
        }
        for (key, value) in &self.envs {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        Running {
            child,
            started: Instant::now(),
            timeout: self.timeout,
            dir: self.artifact_dir(),
            args: self.args,
            tmp: Some(self.tmp),
        }
    }

    /// Runs to completion (killed, and the test failed, after the timeout).
    pub fn run(self) -> Output {
        self.run_polling(|| {})
    }

    /// Like [`Run::run`], calling `poll` every 10 ms while the process runs.
    pub fn run_polling(self, mut poll: impl FnMut()) -> Output {
        let mut running = self.spawn();
        loop {
            if let Some(status) = running.exited() {
                return running.finish(status);
            }
            if running.started.elapsed() > running.timeout {
                let stderr = running.stderr();
                panic!(
                    "aiperf {:?} did not finish within {:?} (killed)\n--- stderr:\n{stderr}",
                    running.args, running.timeout
                );
            }
            poll();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// An `aiperf` process running in the background; killed (and reaped) on drop.
pub struct Running {
    child: Child,
    started: Instant,
    timeout: Duration,
    args: Vec<String>,
    /// The artifact directory of [`Run::profile`] / [`Run::with_artifacts`].
    pub dir: PathBuf,
    /// Holds stdout, stderr and the artifacts; moved to the [`Output`] at the end.
    tmp: Option<tempfile::TempDir>,
}

impl Running {
    fn tmp(&self) -> &Path {
        self.tmp.as_ref().expect("tempdir").path()
    }

    /// The process's stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.tmp().join("stdout")).unwrap_or_default()
    }

    /// The process's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.tmp().join("stderr")).unwrap_or_default()
    }

    /// `profile_export.jsonl` as it is on disk now ("" if not there yet).
    pub fn jsonl_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("profile_export.jsonl")).unwrap_or_default()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until the JSONL on disk holds at least `n` complete lines (at most 60 s).
    pub fn wait_for_lines(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.jsonl_text().matches('\n').count() < n {
            if let Some(st) = self.exited() {
                panic!(
                    "aiperf exited ({st}) before writing {n} records\nstderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {n} JSONL lines within 60 s\nstderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of our own child, which has not been reaped yet (this
        // guard still owns it), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Waits for the process to exit; `None` (and the process killed) if it is still running
    /// after `limit`.
    pub fn wait_within(mut self, limit: Duration) -> Option<Output> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(self.finish(status));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self, status: ExitStatus) -> Output {
        let (stdout, stderr) = (self.stdout(), self.stderr());
        Output {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
            elapsed: self.started.elapsed(),
            dir: self.dir.clone(),
            args: std::mem::take(&mut self.args),
            _tmp: self.tmp.take().expect("tempdir"),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one finished `aiperf` invocation left behind: exit code, output, artifacts.
pub struct Output {
    /// The exit code (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The artifact directory of [`Run::profile`] / [`Run::with_artifacts`].
    pub dir: PathBuf,
    args: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.show())
    }
}

impl Output {
    /// Everything about the run, for failure messages.
    pub fn show(&self) -> String {
        format!(
            "aiperf {:?}\nexit code {} after {:.2?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.code, self.elapsed, self.stdout, self.stderr
        )
    }

    /// Panics with the run's output unless it exited with `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.show());
        self
    }

    /// Panics with the run's output unless it exited with 0.
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// The stderr lines that are not empty.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// Asserts a usage/config error: exit code 2 and exactly one line on stderr starting
    /// with `error: `. Returns that line.
    pub fn assert_usage_error(&self) -> String {
        self.expect_code(2);
        let lines = self.stderr_lines();
        assert_eq!(
            lines.len(),
            1,
            "expected exactly one line on stderr\n{}",
            self.show()
        );
        assert!(
            lines[0].starts_with("error: "),
            "stderr line must start with `error: `: {:?}",
            lines[0]
        );
        lines[0].to_string()
    }

    /// A file of the artifact directory.
    pub fn read(&self, name: &str) -> String {
        let p = self.dir.join(name);
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", p.display(), self.show()))
    }

    /// `profile_export_aiperf.json`.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.read("profile_export_aiperf.json"))
            .expect("profile_export_aiperf.json is JSON")
    }

    /// `profile_export_aiperf.csv`.
    pub fn csv(&self) -> String {
        self.read("profile_export_aiperf.csv")
    }

    /// `profile_export.jsonl`, one value per line.
    pub fn jsonl(&self) -> Vec<Value> {
        self.read("profile_export.jsonl")
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSONL line ({e}): {l}"))
            })
            .collect()
    }

    /// `inputs.json`.
    pub fn inputs(&self) -> Value {
        serde_json::from_str(&self.read("inputs.json")).expect("inputs.json is JSON")
    }

    /// Every payload of `inputs.json`, in order.
    pub fn payloads(&self) -> Vec<Value> {
        let inputs = self.inputs();
        let data = inputs["data"].as_array().expect("inputs.json has data[]");
        data.iter()
            .flat_map(|d| d["payloads"].as_array().expect("payloads[]").clone())
            .collect()
    }

    /// `json[tag][stat]` as a number.
    pub fn stat(&self, tag: &str, stat: &str) -> f64 {
        stat_of(&self.json(), tag, stat)
    }

    /// The `error_summary` entries as `(code, type, message, count)`.
    pub fn errors(&self) -> Vec<(Option<u64>, String, String, u64)> {
        error_entries(&self.json()["error_summary"])
    }

    /// Every file in the artifact directory (recursively) with its contents.
    pub fn all_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        collect_files(&self.dir, &mut out);
        out
    }
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
}

/// `json[tag][stat]` as a number.
pub fn stat_of(json: &Value, tag: &str, stat: &str) -> f64 {
    json.get(tag)
        .and_then(|m| m.get(stat))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no numeric {tag}.{stat} in the JSON summary"))
}

/// `error_summary` entries as `(code, type, message, count)`.
fn error_entries(summary: &Value) -> Vec<(Option<u64>, String, String, u64)> {
    summary
        .as_array()
        .expect("error_summary is an array")
        .iter()
        .map(|e| {
            let d = &e["error_details"];
            (
                d["code"].as_u64(),
                d["type"].as_str().unwrap_or_default().to_string(),
                d["message"].as_str().unwrap_or_default().to_string(),
                e["count"].as_u64().expect("error count"),
            )
        })
        .collect()
}

/// `aiperf mock-server` running as its own process; killed on drop.
pub struct MockServer {
    _process: Running,
    pub port: u16,
    /// Started with `--tls-*`: it serves HTTPS.
    tls: bool,
}

impl MockServer {
    /// Starts `aiperf mock-server --port <free port> EXTRA...` and waits for `GET /health`
    /// (over HTTPS, `--tls-*`: for the port to accept connections).
    pub fn start(extra: &[&str]) -> Self {
        let tls = extra.iter().any(|a| a.starts_with("--tls-"));
        let mut last_problem = String::new();
        // A free port can be taken by someone else before the server binds it: retry.
        for _ in 0..5 {
            let port = super::free_port();
            let port_s = port.to_string();
            let mut args = vec!["mock-server", "--host", "127.0.0.1", "--port", &port_s];
            args.extend_from_slice(extra);
            let mut process = Run::new(&args).spawn();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(st) = process.exited() {
                    last_problem = format!("mock-server exited early with {st}");
                    break;
                }
                let ready = if tls {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                } else {
                    http_get_status(addr, "/health") == Some(200)
                };
                if ready {
                    return Self {
                        _process: process,
                        port,
                        tls,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if last_problem.is_empty() {
                last_problem = "GET /health never succeeded".into();
            }
        }
        panic!("could not start aiperf mock-server: {last_problem}");
    }

    /// Stops the server with Ctrl-C (SIGINT) and waits for it: its `--log-arrivals` file is
    /// flushed on the way out.
    pub fn stop(self) {
        self._process.signal(libc::SIGINT);
        let out = self._process.wait_within(Duration::from_secs(30));
        assert!(
            out.is_some(),
            "mock-server did not stop within 30 s of SIGINT"
        );
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (`https://` with `--tls-*`)
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

/// A plain blocking HTTP/1.1 GET; returns the status code, or `None` if no answer.
fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.lines().next()?.split_whitespace().nth(1)?.parse().ok()
}
