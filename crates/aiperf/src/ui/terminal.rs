//! The terminal while the dashboard is up, and how it is given back in every ending.
//!
//! [`enter`] switches the terminal to the alternate screen, hides the cursor and turns echo
//! off (typed keys would otherwise land on the screen; `ISIG` stays on, so Ctrl-C is still a
//! SIGINT to the process and the run's signal handling is unchanged). When stderr is a
//! terminal too, fd 2 is redirected into a pipe for as long as the screen is up: logs,
//! warnings and anything a child process writes there are kept (the latest lines are shown
//! in the dashboard's log panel) and written to the real stderr, in order, when the terminal
//! is restored.
//!
//! [`restore`] undoes all of it once, whoever calls it first: the dashboard at the end of a
//! run, the second Ctrl-C before `process::exit(130)`, an `atexit` handler (any other
//! `exit`), or the panic hook installed by [`enter`] (the panic's message then prints on the
//! normal screen and the run goes on without the dashboard). [`DRAWING`] is held by the
//! render thread while it writes a frame and by [`restore`], so a frame is never cut in two
//! by the switch back.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, TryLockError};
use std::time::{Duration, Instant};

/// Held while a frame is written and while the terminal is restored.
pub static DRAWING: Mutex<()> = Mutex::new(());

/// The session being shown, if any.
static SESSION: Mutex<Option<Session>> = Mutex::new(None);
/// Whether a session is up (read by the render thread before each frame).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Alternate screen on, cursor hidden, screen cleared.
const ENTER: &[u8] = b"\x1b[?1049h\x1b[?25l\x1b[2J";
/// Cursor shown, alternate screen left, cursor shown again (leaving the alternate screen
/// restores the cursor state some terminals saved on entering it).
const LEAVE: &[u8] = b"\x1b[?25h\x1b[?1049l\x1b[?25h";
/// The most captured stderr bytes kept for the end of the screen (the rest are counted).
const MAX_CAPTURED: usize = 1 << 20;
/// The most captured lines kept for the log panel.
const MAX_LINES: usize = 200;

struct Session {
    /// The terminal drawn on (stdout in a run).
    fd: RawFd,
    saved: Option<libc::termios>,
    capture: Option<Capture>,
}

/// fd 2 redirected into a pipe: the original fd 2 (a duplicate of it) and what was read.
struct Capture {
    original: RawFd,
    captured: Arc<Mutex<Captured>>,
}

/// What was written to stderr while the screen was up.
#[derive(Default)]
pub struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
    lines: VecDeque<String>,
    partial: Vec<u8>,
    /// Set by [`restore`]: from then on the reader passes output straight through.
    restored: bool,
    original: RawFd,
}

impl Captured {
    fn take(&mut self, chunk: &[u8]) {
        if self.restored {
            write_all(self.original, chunk);
            return;
        }
        let room = MAX_CAPTURED.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
        self.dropped += chunk.len().saturating_sub(room);
        for &b in chunk {
            if b == b'\n' {
                let line = strip_ansi(&String::from_utf8_lossy(&self.partial));
                self.partial.clear();
                self.lines.push_back(line);
                if self.lines.len() > MAX_LINES {
                    self.lines.pop_front();
                }
            } else if self.partial.len() < 4096 {
                self.partial.push(b);
            }
        }
    }

    /// The last `n` complete lines.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip).cloned().collect()
    }
}

/// The latest lines written to stderr since [`enter`] (empty when stderr is not captured).
#[derive(Clone, Default)]
pub struct LogLines(Option<Arc<Mutex<Captured>>>);

impl LogLines {
    pub fn last(&self, n: usize) -> Vec<String> {
        self.0.as_ref().map_or_else(Vec::new, |c| {
            c.lock().unwrap_or_else(|e| e.into_inner()).last_lines(n)
        })
    }
}

/// Drops escape sequences (colours) from a log line, for the log panel.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, up to the final byte (@ to ~).
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else if matches!(chars.next(), Some('(' | ')' | '*' | '+')) {
                // A character-set designation: one more character.
                chars.next();
            }
        } else if c == '\t' {
            out.push(' ');
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: a valid slice; a bad fd only makes write fail.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if n == 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

fn os_check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Whether a dashboard session is up.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Takes the terminal `fd` for the dashboard; with `capture_stderr`, fd 2 goes into a pipe
/// until [`restore`]. Fails (changing nothing) when a session is already up or `fd` is not
/// a terminal.
pub fn enter(fd: RawFd, capture_stderr: bool) -> std::io::Result<LogLines> {
    install_hooks();
    let mut session = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    if session.is_some() {
        return Err(std::io::Error::other("the dashboard is already up"));
    }
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    os_check(unsafe { libc::tcgetattr(fd, &mut saved) })?;
    let mut quiet = saved;
    quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
    // SAFETY: fd was just checked to be a terminal; quiet is a valid termios.
    os_check(unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) })?;
    let capture = if capture_stderr {
        match capture() {
            Ok(c) => Some(c),
            Err(e) => {
                // SAFETY: as above, with the saved settings.
                unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
                return Err(e);
            }
        }
    } else {
        None
    };
    write_all(fd, ENTER);
    let lines = LogLines(capture.as_ref().map(|c| c.captured.clone()));
    *session = Some(Session {
        fd,
        saved: Some(saved),
        capture,
    });
    ACTIVE.store(true, Ordering::Release);
    Ok(lines)
}

/// fd 2 into a new pipe, read by a thread of its own.
fn capture() -> std::io::Result<Capture> {
    let mut ends = [0 as RawFd; 2];
    // SAFETY: ends has room for the two descriptors.
    os_check(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [read_end, write_end] = ends;
    let close_both = || {
        // SAFETY: both were just opened by pipe2 and are ours.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
    };
    // SAFETY: fcntl on fd 2 (which may be closed: then it fails).
    let original = match os_check(unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) }) {
        Ok(fd) => fd,
        Err(e) => {
            close_both();
            return Err(e);
        }
    };
    let captured = Arc::new(Mutex::new(Captured {
        original,
        ..Captured::default()
    }));
    let reader = captured.clone();
    let spawned = std::thread::Builder::new()
        .name("aiperf-stderr".into())
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                // SAFETY: buf is valid for its length; read_end is ours until closed below.
                let n = unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                    continue;
                }
                if n <= 0 {
                    break;
                }
                reader
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take(&buf[..n as usize]);
            }
            // SAFETY: the read end is this thread's alone.
            unsafe { libc::close(read_end) };
        });
    if let Err(e) = spawned {
        close_both();
        // SAFETY: original was duplicated above and is ours.
        unsafe { libc::close(original) };
        return Err(e);
    }
    // Flush what Rust buffered for stderr (nothing: it is unbuffered) and switch.
    // SAFETY: write_end is open; dup2 replaces fd 2 atomically.
    let switched = os_check(unsafe { libc::dup2(write_end, 2) });
    // SAFETY: fd 2 (when switched) holds its own reference to the pipe.
    unsafe { libc::close(write_end) };
    if let Err(e) = switched {
        // The reader sees end of file and stops.
        // SAFETY: original is ours.
        unsafe { libc::close(original) };
        return Err(e);
    }
    Ok(Capture { original, captured })
}

/// Locks `m`, waiting at most `limit` (a panicking thread may hold it: then go on without).
fn lock_within<T>(m: &'static Mutex<T>, limit: Duration) -> Option<MutexGuard<'static, T>> {
    let until = Instant::now() + limit;
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// Gives the terminal back, if a session is up: the frame being drawn is finished first,
/// then the cursor is shown, the alternate screen left, echo restored, typed-ahead input
/// discarded, and stderr put back, with everything captured written to it. Returns whether
/// there was a session. Safe to call from any thread, a signal-handling task, `atexit` and
/// the panic hook.
pub fn restore() -> bool {
    let drawing = lock_within(&DRAWING, Duration::from_millis(500));
    let Some(mut slot) = lock_within(&SESSION, Duration::from_millis(500)) else {
        return false;
    };
    let Some(session) = slot.take() else {
        return false;
    };
    ACTIVE.store(false, Ordering::Release);
    drop(drawing);
    write_all(session.fd, LEAVE);
    if let Some(saved) = session.saved {
        // SAFETY: the settings read from this fd at enter.
        unsafe {
            libc::tcsetattr(session.fd, libc::TCSANOW, &saved);
            libc::tcflush(session.fd, libc::TCIFLUSH);
        }
    }
    if let Some(c) = session.capture {
        let mut captured = c.captured.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: original is the duplicate of the real stderr made at enter.
        unsafe { libc::dup2(c.original, 2) };
        captured.restored = true;
        captured.original = 2;
        let bytes = std::mem::take(&mut captured.bytes);
        write_all(2, &bytes);
        if captured.dropped > 0 {
            let note = format!(
                "({} more bytes of log output were written while the dashboard was up and are not shown; logs/aiperf.log has the log)\n",
                captured.dropped
            );
            write_all(2, note.as_bytes());
        }
        // SAFETY: fd 2 now holds the real stderr; the duplicate is no longer needed.
        unsafe { libc::close(c.original) };
    }
    true
}

extern "C" fn restore_at_exit() {
    restore();
}

/// The panic hook (before the previous one, so its message lands on the normal screen) and
/// the `atexit` handler, installed once.
fn install_hooks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(restore_at_exit) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-terminal: (controller, terminal) ends.
    fn pty() -> (RawFd, RawFd) {
        let (mut controller, mut terminal) = (0, 0);
        // SAFETY: openpty fills both descriptors or fails.
        let r = unsafe {
            libc::openpty(
                &mut controller,
                &mut terminal,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
        (controller, terminal)
    }

    fn lflag(fd: RawFd) -> libc::tcflag_t {
        // SAFETY: plain data filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
        t.c_lflag
    }

    /// Everything the controller side can read now.
    fn drain(fd: RawFd) -> String {
        // SAFETY: fd is the controller end, made non-blocking for the test.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Entering, a second enter refused, a panic on another thread restoring the screen,
    /// restore done once. The panic hook is process-wide and other tests panic on purpose,
    /// so the checks run in a child process of this test binary, alone.
    #[test]
    fn a_panic_gives_the_terminal_back_once() {
        const CHILD: &str = "AIPERF_TERMINAL_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            return panic_restores_in_this_process();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "ui::terminal::tests::a_panic_gives_the_terminal_back_once",
                "--exact",
                "--test-threads",
                "1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "the child ran the test: {text}");
    }

    fn panic_restores_in_this_process() {
        let (controller, terminal) = pty();
        let before = lflag(terminal);
        assert_ne!(before & libc::ECHO, 0, "a new pty echoes");
        enter(terminal, false).expect("enter");
        assert!(active());
        assert_eq!(lflag(terminal) & libc::ECHO, 0, "echo off while up");
        assert_ne!(lflag(terminal) & libc::ISIG, 0, "Ctrl-C still a signal");
        assert!(enter(terminal, false).is_err(), "one session at a time");
        let shown = drain(controller);
        assert!(
            shown.contains("\x1b[?1049h") && shown.contains("\x1b[?25l"),
            "{shown:?}"
        );
        let t = std::thread::spawn(|| panic!("boom in a dashboard test"));
        assert!(t.join().is_err());
        assert!(!active(), "the panic hook restored the terminal");
        let shown = drain(controller);
        assert!(shown.contains("\x1b[?25h\x1b[?1049l"), "{shown:?}");
        assert_eq!(lflag(terminal), before, "termios as before");
        assert!(!restore(), "nothing left to restore");
        assert_eq!(drain(controller), "", "and nothing written again");
        // SAFETY: both ends are ours.
        unsafe {
            libc::close(controller);
            libc::close(terminal);
        }
    }

    #[test]
    fn a_non_terminal_is_refused_unchanged() {
        let f = tempfile::tempfile().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // (Another test may hold the session: either way enter fails.)
        assert!(enter(fd, false).is_err());
    }

    #[test]
    fn captured_output_keeps_lines_without_colours_and_bounds_memory() {
        let mut c = Captured::default();
        c.take(b"\x1b[33m WARN\x1b[0m first\nsecond");
        assert_eq!(c.last_lines(5), [" WARN first"]);
        c.take(b" half\n");
        assert_eq!(c.last_lines(1), ["second half"]);
        let big = vec![b'x'; MAX_CAPTURED];
        c.take(&big);
        assert_eq!(c.bytes.len(), MAX_CAPTURED);
        assert_eq!(c.dropped, "\x1b[33m WARN\x1b[0m first\nsecond half\n".len());
        for i in 0..(MAX_LINES + 5) {
            c.take(format!("l{i}\n").as_bytes());
        }
        assert_eq!(c.lines.len(), MAX_LINES);
        assert_eq!(c.last_lines(1), [format!("l{}", MAX_LINES + 4)]);
        assert_eq!(strip_ansi("a\tb\x1b[1;31mc\x1b(B"), "a bc");
    }
}
