//! The `output` section of the config: where artifacts go, under which names, and what the
//! console and the log show.

use std::path::PathBuf;

use serde::Serialize;

/// Progress display (AIPerf's `--ui-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UiType {
    /// Nothing while the run goes on (for CI and logs).
    None,
    /// A progress bar on stderr.
    Simple,
    /// The live terminal dashboard on stdout (`ui`).
    Dashboard,
}

impl UiType {
    /// The default, as AIPerf's (`dashboard`) where it makes sense: the dashboard when
    /// stdout is a terminal (and `TERM` is not `dumb`), the progress bar when only stderr
    /// is, nothing otherwise.
    pub fn for_this_terminal() -> Self {
        use std::io::IsTerminal;
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stdout().is_terminal() && !dumb {
            UiType::Dashboard
        } else if std::io::stderr().is_terminal() {
            UiType::Simple
        } else {
            UiType::None
        }
    }
}

/// Which files a run writes (AIPerf's `--export-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportLevel {
    /// The summaries only: the JSON, the CSV, the console text and `inputs.json`.
    Summary,
    /// Also `profile_export.jsonl`, one line per request (the default).
    Records,
    /// AIPerf's raw request/response export: refused at config time, with the reason.
    Raw,
}

/// AIPerf's `--log-level` values, mapped onto this tool's four levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Notice,
    Warning,
    Success,
    Error,
    Critical,
}

impl LogLevel {
    /// The `tracing` filter directive of this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info | LogLevel::Notice | LogLevel::Success => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical => "error",
        }
    }
}

/// The names of a run's files inside the artifact directory. With AIPerf's
/// `--profile-export-prefix foo`: `foo.json`, `foo.csv`, `foo.jsonl`, `foo_console.txt`;
/// without: `profile_export_aiperf.json`, `profile_export_aiperf.csv`,
/// `profile_export.jsonl`, `profile_export_console.txt`. `inputs.json` and
/// `logs/aiperf.log` keep their names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactNames {
    pub json: String,
    pub csv: String,
    pub jsonl: String,
    pub console_txt: String,
    /// `--slice-duration`'s files.
    pub timeslices_json: String,
    pub timeslices_csv: String,
}

/// Suffixes dropped from a prefix, so `--profile-export-prefix foo.json` (or
/// `foo_raw.jsonl`) still means `foo`, as in AIPerf. Longest first.
const PREFIX_SUFFIXES: &[&str] = &[
    "_server_metrics.jsonl",
    "_server_metrics.json",
    "_server_metrics.csv",
    "_gpu_telemetry.jsonl",
    "_timeslices.csv",
    "_timeslices.json",
    "_console.txt",
    "_raw.jsonl",
    ".jsonl",
    ".json",
    ".csv",
];

impl ArtifactNames {
    pub fn new(prefix: Option<&str>) -> Self {
        let base = prefix.map(|p| {
            PREFIX_SUFFIXES
                .iter()
                .find_map(|s| p.strip_suffix(s))
                .unwrap_or(p)
        });
        match base {
            Some(b) => Self {
                json: format!("{b}.json"),
                csv: format!("{b}.csv"),
                jsonl: format!("{b}.jsonl"),
                console_txt: format!("{b}_console.txt"),
                timeslices_json: format!("{b}_timeslices.json"),
                timeslices_csv: format!("{b}_timeslices.csv"),
            },
            None => Self {
                json: super::JSON_FILE.into(),
                csv: super::CSV_FILE.into(),
                jsonl: super::JSONL_FILE.into(),
                console_txt: super::CONSOLE_FILE.into(),
                timeslices_json: super::TIMESLICES_JSON_FILE.into(),
                timeslices_csv: super::TIMESLICES_CSV_FILE.into(),
            },
        }
    }
}

impl Default for ArtifactNames {
    fn default() -> Self {
        Self::new(None)
    }
}

/// The resolved output settings, serialized as the export's `input_config.output`.
#[derive(Debug, Clone, Serialize)]
pub struct OutputSpec {
    pub artifact_directory: PathBuf,
    #[serde(skip)]
    pub names: ArtifactNames,
    #[serde(skip)]
    pub export_level: ExportLevel,
    #[serde(skip)]
    pub ui: UiType,
    /// `-v` count: log more.
    #[serde(skip)]
    pub verbose: u8,
    /// `--export-outputs-json`: every profiling response's text in `outputs.json`.
    #[serde(skip)]
    pub export_outputs_json: bool,
    /// `--show-trace-timing`: the HTTP timing metrics in the console table.
    #[serde(skip)]
    pub show_trace_timing: bool,
    /// `--log-level`: wins over `-v`.
    #[serde(skip)]
    pub log_level: Option<LogLevel>,
    /// `--slice-duration`: time slices of the profiling phase (seconds in `input_config`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::units::opt_secs"
    )]
    pub slice_duration: Option<std::time::Duration>,
    /// `report.html` is written (not `--no-html`).
    #[serde(skip)]
    pub html: bool,
    /// `--auto-plot`: each chart of the report as a PNG under `plots/`.
    #[serde(skip)]
    pub auto_plot: bool,
    /// `--plot-required`: a report that cannot be made fails the run.
    #[serde(skip)]
    pub plot_required: bool,
}

impl OutputSpec {
    /// Whether `profile_export.jsonl` is written.
    pub fn writes_records(&self) -> bool {
        self.export_level != ExportLevel::Summary
    }

    /// The log file: `logs/aiperf.log` in the artifact directory, as AIPerf.
    pub fn log_file(&self) -> PathBuf {
        self.artifact_directory.join("logs").join("aiperf.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_names_as_aiperf() {
        let d = ArtifactNames::new(None);
        assert_eq!(d.json, "profile_export_aiperf.json");
        assert_eq!(d.jsonl, "profile_export.jsonl");
        assert_eq!(d.console_txt, "profile_export_console.txt");
        for p in [
            "foo",
            "foo.json",
            "foo_raw.jsonl",
            "foo.csv",
            "foo_console.txt",
        ] {
            let n = ArtifactNames::new(Some(p));
            assert_eq!(
                (n.json.as_str(), n.csv.as_str(), n.jsonl.as_str()),
                ("foo.json", "foo.csv", "foo.jsonl"),
                "{p}"
            );
            assert_eq!(n.console_txt, "foo_console.txt");
        }
    }
}
