//! What one frame of the dashboard shows ([`Snapshot`], plain data) and how it is drawn
//! ([`render`], a pure function of the snapshot and the frame's size, tested against text
//! snapshots with ratatui's `TestBackend`).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

/// One frame's data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Model, URL, endpoint.
    pub title: String,
    /// `None` before the first phase starts.
    pub phase: Option<PhaseView>,
    /// The rolling window's span in seconds (shorter than asked at a phase's start).
    pub window_sec: f64,
    pub request_throughput: f64,
    pub token_throughput: f64,
    /// TTFT, ITL, request latency, send lag over the window.
    pub latencies: Vec<(&'static str, Option<Percentiles>)>,
    /// Errors of the phase by type, most frequent first.
    pub errors: Vec<(String, u64)>,
    pub health: HealthView,
    /// Requests finished per second, oldest first.
    pub throughput_history: Vec<u64>,
    /// TTFT p50 per second (ms, rounded), oldest first.
    pub ttft_history: Vec<u64>,
    /// The latest lines written to stderr.
    pub log: Vec<String>,
    /// A first Ctrl-C was received: no new requests, in-flight ones finishing.
    pub stopping: bool,
}

/// The running phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseView {
    pub name: String,
    /// "concurrency 4", "request rate 50/s (Poisson)", …
    pub load: String,
    pub elapsed_sec: f64,
    pub progress: Progress,
    pub sent: u64,
    pub completed: u64,
    pub errors: u64,
    pub cancelled: u64,
    pub in_flight: u64,
    /// Open loop only: sends more than 1 ms late, and the largest lag.
    pub late_sends: u64,
    pub max_send_lag_ms: Option<f64>,
    pub sending_complete: bool,
}

/// How far a phase is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Progress {
    /// Requests finished (or cancelled) of the count.
    Requests { done: u64, total: u64 },
    /// Seconds of the duration.
    Time { elapsed: f64, total: f64 },
    /// Bounded otherwise (conversations): no fraction to show.
    #[default]
    Open,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub count: u64,
}

/// The client-health verdict over the last seconds, with its figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthView {
    pub ok: bool,
    pub reasons: Vec<String>,
    pub runtime_lag_p99_ms: Option<f64>,
    pub process_cpu_percent: Option<f64>,
    pub machine_cpu_busy_percent: Option<f64>,
}

/// A duration in ms, with as many decimals as it is worth.
fn ms(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 1000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn titled(title: &str) -> Block<'static> {
    Block::bordered().title(Span::styled(
        format!(" {title} "),
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

/// Draws `s` over the whole frame.
pub fn render(f: &mut Frame, s: &Snapshot) {
    let log_rows = if s.log.is_empty() { 3 } else { 6 };
    let [header, gauge, middle, lower, sparks, log, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(9),
        Constraint::Min(5),
        Constraint::Length(5),
        Constraint::Length(log_rows),
        Constraint::Length(1),
    ])
    .areas(f.area());
    render_header(f, header, s);
    render_progress(f, gauge, s);
    let [load, latency] =
        Layout::horizontal([Constraint::Length(30), Constraint::Min(20)]).areas(middle);
    render_load(f, load, s);
    render_latency(f, latency, s);
    let [errors, health] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(lower);
    render_errors(f, errors, s);
    render_health(f, health, s);
    let [tput, ttft] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(sparks);
    render_sparkline(
        f,
        tput,
        "Throughput (requests/s)",
        &s.throughput_history,
        Color::Cyan,
    );
    render_sparkline(f, ttft, "TTFT p50 (ms)", &s.ttft_history, Color::Magenta);
    render_log(f, log, s);
    let footer_text = if s.stopping {
        Line::from(
            " Stopping: no new requests; waiting for in-flight requests. Ctrl-C again quits now.",
        )
        .yellow()
    } else {
        Line::from(" Ctrl-C: stop sending and finish the in-flight requests · twice: quit now")
            .dim()
    };
    f.render_widget(Paragraph::new(footer_text), footer);
}

fn render_header(f: &mut Frame, area: Rect, s: &Snapshot) {
    let line = Line::from(vec![
        Span::styled(" aiperf ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(s.title.as_str()),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn render_progress(f: &mut Frame, area: Rect, s: &Snapshot) {
    let Some(p) = &s.phase else {
        let block = titled("Phase");
        f.render_widget(
            Paragraph::new(" waiting for the first phase to start").block(block),
            area,
        );
        return;
    };
    let state = match (s.stopping, p.sending_complete) {
        (true, _) => ", stopping",
        (false, true) => ", all sent: finishing",
        _ => "",
    };
    let title = format!(
        "Phase: {} · {} · {}{state}",
        p.name,
        p.load,
        clock(p.elapsed_sec)
    );
    let (ratio, label) = match p.progress {
        Progress::Requests { done, total } => (
            if total > 0 {
                done as f64 / total as f64
            } else {
                0.0
            },
            format!("{done} / {total} requests"),
        ),
        Progress::Time { elapsed, total } => (
            if total > 0.0 { elapsed / total } else { 0.0 },
            format!("{:.0} s / {:.0} s", elapsed.min(total), total),
        ),
        Progress::Open => (0.0, format!("{} requests sent", p.sent)),
    };
    let gauge = Gauge::default()
        .block(titled(&title))
        .gauge_style(Style::default().fg(Color::Green).bg(Color::DarkGray))
        .ratio(ratio.clamp(0.0, 1.0))
        .label(label);
    f.render_widget(gauge, area);
}

fn render_load(f: &mut Frame, area: Rect, s: &Snapshot) {
    let p = s.phase.clone().unwrap_or_default();
    let row =
        |name: &str, value: String| Row::new(vec![Cell::from(name.to_string()), Cell::from(value)]);
    let rows = vec![
        row("requests/s", format!("{:.1}", s.request_throughput)),
        row("output tokens/s", format!("{:.0}", s.token_throughput)),
        row("in flight", p.in_flight.to_string()),
        row("sent", p.sent.to_string()),
        row("finished", p.completed.to_string()),
        row("errors", p.errors.to_string()),
        row("cancelled", p.cancelled.to_string()),
    ];
    let table = Table::new(rows, [Constraint::Length(16), Constraint::Min(6)])
        .block(titled(&format!("Load, last {:.0} s", s.window_sec)));
    f.render_widget(table, area);
}

fn render_latency(f: &mut Frame, area: Rect, s: &Snapshot) {
    let header = Row::new(["", "p50", "p90", "p99", "max", "n"]).bold();
    let rows: Vec<Row> = s
        .latencies
        .iter()
        .map(|(name, p)| match p {
            Some(p) => Row::new(vec![
                name.to_string(),
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max),
                p.count.to_string(),
            ]),
            None => Row::new(vec![name.to_string(), "-".into()]).dim(),
        })
        .collect();
    let widths = [
        Constraint::Length(16),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Min(5),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(titled(&format!("Latency (ms), last {:.0} s", s.window_sec)));
    f.render_widget(table, area);
}

fn render_errors(f: &mut Frame, area: Rect, s: &Snapshot) {
    let block = titled("Errors by type");
    if s.errors.is_empty() {
        f.render_widget(Paragraph::new(" none").green().block(block), area);
        return;
    }
    let rows: Vec<Row> = s
        .errors
        .iter()
        .map(|(kind, n)| Row::new(vec![n.to_string(), kind.clone()]))
        .collect();
    let table = Table::new(rows, [Constraint::Length(8), Constraint::Min(10)])
        .block(block)
        .red();
    f.render_widget(table, area);
}

fn render_health(f: &mut Frame, area: Rect, s: &Snapshot) {
    let h = &s.health;
    let fig = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.0}{unit}"));
    let mut lines = vec![if h.ok {
        Line::from(" ok").green().bold()
    } else {
        Line::from(" client may be the bottleneck").red().bold()
    }];
    lines.push(Line::from(format!(
        " runtime lag p99 {} ms · CPU {} of a core · machine {} busy",
        h.runtime_lag_p99_ms.map_or("-".into(), ms),
        fig(h.process_cpu_percent, " %"),
        fig(h.machine_cpu_busy_percent, " %"),
    )));
    if let Some(p) = &s.phase {
        if let Some(max) = p.max_send_lag_ms {
            lines.push(Line::from(format!(
                " late sends (> 1 ms) {} · max send lag {} ms",
                p.late_sends,
                ms(max)
            )));
        }
    }
    for r in &h.reasons {
        lines.push(Line::from(format!(" · {r}")).red());
    }
    let text = Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(titled("Client health, last 5 s"));
    f.render_widget(text, area);
}

fn render_sparkline(f: &mut Frame, area: Rect, title: &str, data: &[u64], color: Color) {
    let width = area.width.saturating_sub(2) as usize;
    let shown = &data[data.len().saturating_sub(width)..];
    let last = shown.last().map_or("-".to_string(), |v| v.to_string());
    let max = shown
        .iter()
        .max()
        .map_or("-".to_string(), |v| v.to_string());
    let spark = Sparkline::default()
        .block(titled(&format!("{title}: {last} (max {max})")))
        .data(shown)
        .style(Style::default().fg(color));
    f.render_widget(spark, area);
}

fn render_log(f: &mut Frame, area: Rect, s: &Snapshot) {
    let rows = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = if s.log.is_empty() {
        vec![Line::from(" (no messages)").dim()]
    } else {
        s.log[s.log.len().saturating_sub(rows)..]
            .iter()
            .map(|l| Line::from(format!(" {l}")))
            .collect()
    };
    f.render_widget(
        Paragraph::new(lines).block(titled("Log (printed again when the dashboard closes)")),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// The frame as text: one line per row, trailing spaces cut.
    fn text(s: &Snapshot, width: u16, height: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(width, height)).unwrap();
        t.draw(|f| render(f, s)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..height {
            let mut line = String::new();
            for x in 0..width {
                line.push_str(buf[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Compares with `src/ui/snapshots/NAME.txt`; `UPDATE_SNAPSHOTS=1` writes it instead.
    fn assert_snapshot(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/ui/snapshots")
            .join(format!("{name}.txt"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (UPDATE_SNAPSHOTS=1 writes it); got:\n{got}",
                path.display()
            )
        });
        assert!(
            want == got,
            "{} differs (UPDATE_SNAPSHOTS=1 rewrites it)\n--- want\n{want}\n--- got\n{got}",
            path.display()
        );
    }

    fn pct(p50: f64, count: u64) -> Option<Percentiles> {
        Some(Percentiles {
            p50,
            p90: p50 * 1.5,
            p99: p50 * 2.0,
            max: p50 * 3.0,
            count,
        })
    }

    /// A count-bounded, open-loop phase with errors and a client falling behind.
    fn busy() -> Snapshot {
        Snapshot {
            title: "mock-model · http://127.0.0.1:8000/v1/chat/completions (chat, streaming)"
                .into(),
            phase: Some(PhaseView {
                name: "profiling".into(),
                load: "request rate 50/s (Poisson)".into(),
                elapsed_sec: 72.4,
                progress: Progress::Requests {
                    done: 3_600,
                    total: 10_000,
                },
                sent: 3_610,
                completed: 3_598,
                errors: 42,
                cancelled: 2,
                in_flight: 10,
                late_sends: 17,
                max_send_lag_ms: Some(4.25),
                sending_complete: false,
            }),
            window_sec: 10.0,
            request_throughput: 49.7,
            token_throughput: 6_361.0,
            latencies: vec![
                ("TTFT", pct(41.5, 497)),
                ("ITL", pct(5.02, 497)),
                ("Request latency", pct(680.0, 497)),
                ("Send lag", pct(0.04, 500)),
            ],
            errors: vec![
                ("InternalServerError".into(), 30),
                ("ConnectionClosedBeforeResponse".into(), 12),
            ],
            health: HealthView {
                ok: false,
                reasons: vec!["requests left late (send lag p99 2.50 ms)".into()],
                runtime_lag_p99_ms: Some(0.31),
                process_cpu_percent: Some(38.0),
                machine_cpu_busy_percent: Some(97.0),
            },
            throughput_history: vec![0, 12, 40, 48, 52, 50, 47, 49, 51, 50],
            ttft_history: vec![0, 35, 40, 44, 41, 39, 42, 41],
            log: vec![" WARN plugin slow: progress skipped".into()],
            stopping: false,
        }
    }

    #[test]
    fn a_busy_phase() {
        assert_snapshot("busy_100x32", &text(&busy(), 100, 32));
    }

    /// Before any request finished, in a timed warmup: nothing to show yet, said plainly.
    #[test]
    fn a_timed_phase_before_any_result() {
        let s = Snapshot {
            title: "m · http://127.0.0.1:9/v1/completions (completions)".into(),
            phase: Some(PhaseView {
                name: "warmup".into(),
                load: "concurrency 8".into(),
                elapsed_sec: 3.0,
                progress: Progress::Time {
                    elapsed: 3.0,
                    total: 20.0,
                },
                sent: 8,
                in_flight: 8,
                ..PhaseView::default()
            }),
            window_sec: 3.0,
            latencies: vec![
                ("TTFT", None),
                ("ITL", None),
                ("Request latency", None),
                ("Send lag", None),
            ],
            health: HealthView {
                ok: true,
                runtime_lag_p99_ms: Some(0.05),
                ..HealthView::default()
            },
            ..Snapshot::default()
        };
        assert_snapshot("warmup_start_90x28", &text(&s, 90, 28));
    }

    /// After a first Ctrl-C: the footer and the phase title say so.
    #[test]
    fn stopping_after_ctrl_c() {
        let s = Snapshot {
            stopping: true,
            ..busy()
        };
        let t = text(&s, 100, 32);
        assert!(t.contains("profiling · request rate 50/s (Poisson) · 00:01:12, stopping"));
        assert!(t.contains("Ctrl-C again quits now"), "{t}");
    }

    /// Tiny terminals and a snapshot before the first phase draw without panicking.
    #[test]
    fn small_or_empty_frames_draw() {
        for (w, h) in [(20, 5), (1, 1), (40, 12), (300, 80)] {
            text(&busy(), w, h);
            text(&Snapshot::default(), w, h);
        }
        assert!(text(&Snapshot::default(), 80, 30).contains("waiting for the first phase"));
    }

    #[test]
    fn figures_are_formatted_to_their_size() {
        assert_eq!(
            [ms(0.123), ms(41.56), ms(1234.5), ms(f64::NAN)],
            ["0.12", "41.6", "1234", "-"]
        );
        assert_eq!(clock(3725.9), "01:02:05");
    }
}
