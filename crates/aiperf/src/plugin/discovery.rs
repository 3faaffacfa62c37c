//! Finding plugins: built-ins, executables named `aiperf-plugin-<name>`, and Python entry
//! points served by `aiperf-plugin-python`.
//!
//! Search order (first hit wins): `plugins.<name>.path`, `AIPERF_PLUGIN_PATH`, the directory
//! of the `aiperf` binary, `$VIRTUAL_ENV/bin`, then `PATH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{builtin, PluginKind};

pub const EXECUTABLE_PREFIX: &str = "aiperf-plugin-";
pub const PYTHON_HOST: &str = "aiperf-plugin-python";

/// How to start a plugin that runs as its own process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// What a plugin is, and so how it starts.
#[derive(Debug, Clone)]
pub enum Location {
    Builtin(&'static builtin::BuiltinPlugin),
    /// An `aiperf-plugin-<name>` executable (or an explicit `path:`).
    Executable(Command),
    /// A Python entry point, served by `aiperf-plugin-python --plugin NAME`.
    Python(Command),
}

/// Where a plugin was found and how to start it.
#[derive(Debug, Clone)]
pub struct Located {
    pub location: Location,
    /// Which search location found it (for `plugins list`).
    pub source: String,
}

impl Located {
    fn new(location: Location, source: impl Into<String>) -> Self {
        Self {
            location,
            source: source.into(),
        }
    }

    pub fn kind(&self) -> PluginKind {
        match self.location {
            Location::Builtin(_) => PluginKind::Builtin,
            Location::Executable(_) => PluginKind::External,
            Location::Python(_) => PluginKind::Python,
        }
    }

    /// The process to start, for a plugin that is not built in.
    pub fn command(&self) -> Option<&Command> {
        match &self.location {
            Location::Builtin(_) => None,
            Location::Executable(c) | Location::Python(c) => Some(c),
        }
    }

    /// Whether two finds are the same plugin (same kind, same command).
    pub fn same_plugin(&self, other: &Located) -> bool {
        self.kind() == other.kind() && self.command() == other.command()
    }
}

fn command(path: PathBuf, args: Vec<String>) -> Command {
    Command { path, args }
}

/// The ordered directories to search.
#[derive(Debug, Clone)]
pub struct SearchPath {
    pub dirs: Vec<(PathBuf, &'static str)>,
}

impl SearchPath {
    pub fn from_env() -> Self {
        let mut dirs = Vec::new();
        if let Some(p) = std::env::var_os("AIPERF_PLUGIN_PATH") {
            dirs.extend(std::env::split_paths(&p).map(|d| (d, "AIPERF_PLUGIN_PATH")));
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            dirs.push((dir, "next to aiperf"));
        }
        if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
            dirs.push((PathBuf::from(venv).join("bin"), "VIRTUAL_ENV"));
        }
        if let Some(p) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&p).map(|d| (d, "PATH")));
        }
        Self { dirs }
    }

    /// The first executable file called `file_name`.
    pub fn find(&self, file_name: &str) -> Option<(PathBuf, &'static str)> {
        self.dirs.iter().find_map(|(d, src)| {
            let p = d.join(file_name);
            is_executable(&p).then_some((p, *src))
        })
    }
}

pub fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// Entry points listed by `aiperf-plugin-python --list`, per host.
#[derive(Debug, Default)]
pub struct PythonPlugins {
    listed: Option<Vec<(PathBuf, &'static str, Vec<PythonEntry>)>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PythonEntry {
    pub name: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub dist: Option<String>,
    #[serde(default)]
    pub dist_version: Option<String>,
}

#[derive(Deserialize)]
struct PythonList {
    plugins: Vec<PythonEntry>,
}

impl PythonPlugins {
    /// Every Python host on the search path and what it serves (asked once per run).
    pub async fn hosts(
        &mut self,
        search: &SearchPath,
    ) -> &[(PathBuf, &'static str, Vec<PythonEntry>)] {
        if self.listed.is_none() {
            let mut out = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (dir, src) in &search.dirs {
                let p = dir.join(PYTHON_HOST);
                if !is_executable(&p)
                    || !seen.insert(std::fs::canonicalize(&p).unwrap_or(p.clone()))
                {
                    continue;
                }
                match list_python(&p).await {
                    Ok(entries) => out.push((p, *src, entries)),
                    Err(e) => eprintln!("warning: {} --list failed: {e}", p.display()),
                }
            }
            self.listed = Some(out);
        }
        self.listed.as_deref().unwrap_or_default()
    }
}

async fn list_python(host: &Path) -> Result<Vec<PythonEntry>, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(host)
            .arg("--list")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exit status {}", out.status));
    }
    serde_json::from_slice::<PythonList>(&out.stdout)
        .map(|l| l.plugins)
        .map_err(|e| format!("unreadable output: {e}"))
}

fn executable_names(name: &str) -> Vec<String> {
    let mut names = vec![format!("{EXECUTABLE_PREFIX}{name}")];
    let dashed = name.replace('_', "-");
    if dashed != name {
        names.push(format!("{EXECUTABLE_PREFIX}{dashed}"));
    }
    names
}

/// Finds the plugin configured as `name`.
pub async fn locate(
    name: &str,
    explicit: Option<&Path>,
    search: &SearchPath,
    python: &mut PythonPlugins,
) -> Result<Located, String> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(Located::new(
                Location::Executable(command(p.to_path_buf(), vec![])),
                "plugins.<name>.path",
            ))
        } else {
            Err(format!(
                "not found: `path: {}` is not an executable file",
                p.display()
            ))
        };
    }
    if let Some(b) = builtin::find(name) {
        return Ok(Located::new(Location::Builtin(b), "built in"));
    }
    for file in executable_names(name) {
        if file == PYTHON_HOST {
            continue;
        }
        if let Some((p, src)) = search.find(&file) {
            return Ok(Located::new(Location::Executable(command(p, vec![])), src));
        }
    }
    for (host, src, entries) in python.hosts(search).await {
        if entries.iter().any(|e| e.name == name) {
            return Ok(Located::new(
                Location::Python(command(host.clone(), vec!["--plugin".into(), name.into()])),
                format!("Python entry point via {src}"),
            ));
        }
    }
    Err(format!(
        "not found: no built-in plugin, no `{}` executable in AIPERF_PLUGIN_PATH, next to aiperf, $VIRTUAL_ENV/bin or PATH, and no Python entry point `{name}` (group aiperf.plugins)",
        executable_names(name)[0]
    ))
}

/// Everything discoverable, by name (first hit wins), for `aiperf plugins list`.
pub async fn discover_all(
    search: &SearchPath,
    python: &mut PythonPlugins,
) -> BTreeMap<String, Located> {
    let mut out = BTreeMap::new();
    for b in builtin::BUILTINS {
        out.insert(
            b.name.to_string(),
            Located::new(Location::Builtin(b), "built in"),
        );
    }
    for (dir, src) in &search.dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for p in files {
            let Some(file) = p.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let Some(name) = file.strip_prefix(EXECUTABLE_PREFIX) else {
                continue;
            };
            if file == PYTHON_HOST || name.is_empty() || name.ends_with(".d") || !is_executable(&p)
            {
                continue;
            }
            out.entry(name.to_string()).or_insert(Located::new(
                Location::Executable(command(p.clone(), vec![])),
                *src,
            ));
        }
    }
    for (host, src, entries) in python.hosts(search).await {
        for e in entries {
            out.entry(e.name.clone()).or_insert(Located::new(
                Location::Python(command(
                    host.clone(),
                    vec!["--plugin".into(), e.name.clone()],
                )),
                format!("Python entry point {} via {src}", e.value),
            ));
        }
    }
    out
}
