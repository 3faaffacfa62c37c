//! Reading the YAML config file. Its `benchmark:` keys are the `profile` flags with `-`
//! turned into `_`, so rather than keep a second schema in step with the CLI, each key is
//! rendered back into flags and checked by the same clap definition, right away, so an error
//! can name the file and line.

use std::collections::HashMap;
use std::path::Path;

use clap::{ArgAction, Args};

use super::{env, plugins::parse_plugins, ConfigError};
use crate::cli::ProfileArgs;
use crate::plugin::PluginsSection;

/// `profile` flags the file may set, keyed by their `snake_case` file name.
struct FlagInfo {
    long: String,
    action: ArgAction,
    takes_many: bool,
    /// A comma list in one flag (`--concurrency 1,4`): a YAML list is joined into one value.
    comma_list: bool,
}

pub(super) fn profile_command() -> clap::Command {
    ProfileArgs::augment_args(clap::Command::new("aiperf profile").no_binary_name(true))
        .args_override_self(true)
}

fn file_keys() -> Vec<(String, FlagInfo)> {
    let cmd = profile_command();
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "config" || long == "help" {
            continue;
        }
        let info = || FlagInfo {
            long: long.to_string(),
            action: arg.get_action().clone(),
            takes_many: matches!(arg.get_action(), ArgAction::Append),
            comma_list: arg.get_value_delimiter() == Some(','),
        };
        out.push((long.replace('-', "_"), info()));
        for alias in arg.get_all_aliases().unwrap_or_default() {
            out.push((alias.replace('-', "_"), info()));
        }
    }
    out
}

/// The line (1-based) of each key of the top-level mapping `section` (`None`: of the top
/// level itself), at its first occurrence; read in one pass, so a file with many keys costs
/// linear time. A key it cannot place (flow style) gets the section's own line.
pub(super) struct KeyLines {
    lines: HashMap<String, usize>,
    fallback: usize,
}

impl KeyLines {
    pub(super) fn new(text: &str, section: Option<&str>) -> Self {
        let mut lines = HashMap::new();
        let mut fallback = 1;
        let mut in_section = section.is_none();
        // The indent of the section's keys: that of its first line.
        let mut level = None;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let (0, Some(sec)) = (indent, section) {
                in_section = split_key(trimmed).is_some_and(|(k, _)| k == sec);
                if in_section && level.is_none() {
                    fallback = i + 1;
                }
                continue;
            }
            if !in_section || indent != *level.get_or_insert(indent) {
                continue;
            }
            if let Some((key, _)) = split_key(trimmed) {
                lines.entry(key).or_insert(i + 1);
            }
        }
        Self { lines, fallback }
    }

    pub(super) fn get(&self, key: &str) -> usize {
        self.lines.get(key).copied().unwrap_or(self.fallback)
    }
}

/// Each entry of the top-level mapping `root` (block style: `plugins:` then `  push_a:`):
/// its line and the lines of its own keys, at their first occurrence; read in one pass.
/// An entry it cannot follow (flow style) is absent; a key it cannot place is absent.
pub(super) type EntryLines = HashMap<String, (usize, HashMap<String, usize>)>;

pub(super) fn nested_key_lines(text: &str, root: &str) -> EntryLines {
    let mut out: EntryLines = HashMap::new();
    // The keys open above the current line: (indent, key).
    let mut stack: Vec<(usize, String)> = Vec::new();
    // Inside a block scalar opened at this indent.
    let mut scalar_of: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        match scalar_of {
            Some(ind) if indent > ind => continue,
            _ => scalar_of = None,
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            continue;
        }
        let Some((key, value)) = split_key(trimmed) else {
            continue;
        };
        while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
            stack.pop();
        }
        match stack.as_slice() {
            [(_, r)] if r == root => {
                out.entry(key.clone()).or_insert((i + 1, HashMap::new()));
            }
            [(_, r), (_, entry)] if r == root => {
                if let Some((_, keys)) = out.get_mut(entry) {
                    keys.entry(key.clone()).or_insert(i + 1);
                }
            }
            _ => {}
        }
        if value.starts_with('|') || value.starts_with('>') {
            scalar_of = Some(indent);
        }
        if stack.len() < 2 {
            stack.push((indent, key));
        } else {
            // Deeper keys matter only for their indent; keep the stack short.
            stack.push((indent, String::new()));
        }
    }
    out
}

fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(key, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub(super) fn yaml_scalar(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a config file holds, before it is merged with the command line.
pub(super) struct FileConfig {
    /// Flags rendered from `benchmark:`, grouped per flag id so CLI flags can replace them.
    pub flags: Vec<(String, Vec<String>, usize)>,
    pub plugins: PluginsSection,
}

pub(super) fn read_config_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::FileWhole {
        file: file.clone(),
        message: format!("cannot read config file: {e}"),
    })?;
    let (benchmark, plugins) = sections(&file, &text)?;
    let key_lines = KeyLines::new(&text, Some("benchmark"));
    let known = file_keys();
    let mut flags = Vec::new();
    // Each flag's key and line, so two keys for one flag (an alias) are caught.
    let mut set_by: HashMap<String, (String, usize)> = HashMap::new();
    for (k, v) in benchmark {
        let key = yaml_scalar(&k).unwrap_or_default();
        let line = key_lines.get(&key);
        let at_line = |message: String| ConfigError::File {
            file: file.clone(),
            line,
            message,
        };
        let Some((_, info)) = known.iter().find(|(name, _)| *name == key) else {
            let flag = format!("--{}", key.replace('_', "-"));
            if let Some(why) = crate::cli::aiperf_options::refusal(&flag, &profile_command()) {
                return Err(at_line(format!("`{key}`: {why}")));
            }
            let hint = closest(&key, known.iter().map(|(n, _)| n.as_str()))
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(at_line(format!("unknown key `{key}` in `benchmark`{hint}")));
        };
        if let Some((first, first_line)) = set_by.get(&info.long) {
            return Err(at_line(format!(
                "`{key}` sets the same flag (--{}) as `{first}` on line {first_line}",
                info.long
            )));
        }
        set_by.insert(info.long.clone(), (key.clone(), line));
        let args = flag_args(info, &key, v).map_err(at_line)?;
        flags.push((info.long.clone(), args, line));
    }
    let plugins = parse_plugins(plugins, &file, &text)?;
    Ok(FileConfig { flags, plugins })
}

/// The file's two sections, `benchmark:` and `plugins:` (each may be absent or empty).
fn sections(
    file: &str,
    text: &str,
) -> Result<(serde_yaml::Mapping, serde_yaml::Mapping), ConfigError> {
    if let Some(line) = too_deep(text) {
        return Err(ConfigError::File {
            file: file.into(),
            line,
            message: format!("invalid YAML: brackets nested more than {MAX_NESTING} deep"),
        });
    }
    let root: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| yaml_error(file, text, &e))?;
    let root = match root {
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        serde_yaml::Value::Mapping(m) => m,
        _ => {
            return Err(ConfigError::FileWhole {
                file: file.into(),
                message: "expected a mapping with `benchmark:` and `plugins:` sections".into(),
            })
        }
    };
    let (mut benchmark, mut plugins) = Default::default();
    let key_lines = KeyLines::new(text, None);
    for (k, v) in root {
        let key = yaml_scalar(&k).unwrap_or_default();
        let at_line = |message: String| ConfigError::File {
            file: file.into(),
            line: key_lines.get(&key),
            message,
        };
        let map = match v {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            _ => return Err(at_line(format!("`{key}` must be a mapping"))),
        };
        match key.as_str() {
            "benchmark" => benchmark = map,
            "plugins" => plugins = map,
            other => {
                let hint = closest(other, ["benchmark", "plugins"].into_iter())
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_else(|| "; the sections are `benchmark` and `plugins`".into());
                return Err(at_line(format!("unknown top-level key `{other}`{hint}")));
            }
        }
    }
    Ok((benchmark, plugins))
}

/// Flow collections (`[`, `{`) nested deeper than this are refused before the YAML parser
/// sees them: it takes time quadratic in the depth (100,000 levels: over a minute), and
/// serde_yaml refuses more than 128 levels anyway. Brackets inside strings count too.
const MAX_NESTING: usize = 1000;

/// The line where brackets open past [`MAX_NESTING`] levels, if they do.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        for c in line.chars() {
            match c {
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(i + 1);
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// A YAML syntax error at its line. serde_yaml reports a repeated key at the start of its
/// mapping, so the repeat's own line is found by [`repeated_key`].
fn yaml_error(file: &str, text: &str, e: &serde_yaml::Error) -> ConfigError {
    let message = e.to_string();
    if let Some(rest) = message.split("duplicate entry with key ").nth(1) {
        let key = rest.split(" at line ").next().unwrap_or(rest);
        let key = key.trim_matches('"');
        if let Some((line, first)) = repeated_key(text, key) {
            return ConfigError::File {
                file: file.into(),
                line,
                message: format!("duplicate key `{key}` (first on line {first})"),
            };
        }
    }
    ConfigError::File {
        file: file.into(),
        line: e.location().map(|l| l.line()).unwrap_or(1),
        message: format!("invalid YAML: {message}"),
    }
}

/// The first place where a block mapping of `text` repeats `key`: (the repeat's line, the
/// first one's line), 1-based. Reads block style only (`key: value` lines, `- ` items,
/// `|`/`>` scalars skipped); flow style (`{a: 1, a: 2}`) is left to serde_yaml's location.
pub(super) fn repeated_key(text: &str, key: &str) -> Option<(usize, usize)> {
    // The open block mappings, innermost last: their keys' indent and the keys seen.
    let mut maps: Vec<(usize, HashMap<String, usize>)> = Vec::new();
    // Inside a block scalar opened by a key at this indent.
    let mut scalar_of: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let content = raw.trim_start();
        let mut indent = raw.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        match scalar_of {
            Some(ind) if indent > ind => continue,
            _ => scalar_of = None,
        }
        if content.starts_with("---") || content.starts_with("...") {
            maps.clear();
            continue;
        }
        let mut content = content;
        let mut item = false;
        while let Some(rest) = content.strip_prefix('-').filter(|r| r.starts_with(' ')) {
            // `- key: v` opens a new mapping whose keys sit after the dash.
            let rest_trimmed = rest.trim_start();
            indent += content.len() - rest_trimmed.len();
            content = rest_trimmed;
            item = true;
        }
        let Some((k, value)) = split_key(content) else {
            continue;
        };
        maps.retain(|(ind, _)| if item { *ind < indent } else { *ind <= indent });
        match maps.last_mut() {
            Some((ind, keys)) if *ind == indent => {
                if let Some(first) = keys.get(&k) {
                    if k == key {
                        return Some((i + 1, *first));
                    }
                } else {
                    keys.insert(k, i + 1);
                }
            }
            _ => maps.push((indent, HashMap::from([(k, i + 1)]))),
        }
        if value.starts_with('|') || value.starts_with('>') {
            scalar_of = Some(indent);
        }
    }
    None
}

/// `key: value` (the key plain or quoted) → (key, value trimmed).
fn split_key(content: &str) -> Option<(String, &str)> {
    let (key, rest) = match content.chars().next()? {
        q @ ('"' | '\'') => {
            let end = content[1..].find(q)? + 1;
            (&content[1..end], &content[end + 1..])
        }
        '{' | '[' | '&' | '*' | '!' | '|' | '>' => return None,
        _ => {
            let colon = content
                .match_indices(':')
                .map(|(at, _)| at)
                .find(|&at| content[at + 1..].is_empty() || content[at + 1..].starts_with(' '))?;
            (content[..colon].trim_end(), &content[colon..])
        }
    };
    let value = rest.trim_start().strip_prefix(':')?;
    Some((key.to_string(), value.trim()))
}

/// One `benchmark:` key rendered as the flags it stands for, checked by clap right away so
/// an error can point at the file and line. The error is that line's message.
fn flag_args(info: &FlagInfo, key: &str, mut v: serde_yaml::Value) -> Result<Vec<String>, String> {
    env::substitute_yaml(&mut v, &env::env_lookup).map_err(|var| {
        format!(
            "environment variable `{var}` is not set (used by `{key}`); set it or write `${{{var}:-default}}`"
        )
    })?;
    let flag = format!("--{}", info.long);
    let bad = |what: &str| format!("`{key}` {what}");
    let mut args = Vec::new();
    match (&info.action, &v) {
        (ArgAction::SetTrue, serde_yaml::Value::Bool(b)) => {
            if *b {
                args.push(flag.clone());
            }
        }
        (ArgAction::SetTrue, _) => return Err(bad("must be true or false")),
        (ArgAction::Count, serde_yaml::Value::Number(n)) => {
            let n = n
                .as_u64()
                .filter(|&n| n <= 10)
                .ok_or_else(|| bad("must be a count from 0 to 10"))?;
            args.extend((0..n).map(|_| flag.clone()));
        }
        (_, serde_yaml::Value::Sequence(items)) if info.takes_many => {
            for item in items {
                let s = match yaml_scalar(item) {
                    Some(s) => s,
                    None => serde_json::to_string(item).map_err(|e| bad(&e.to_string()))?,
                };
                args.push(format!("{flag}={s}"));
            }
        }
        (_, serde_yaml::Value::Sequence(items)) if info.comma_list && !items.is_empty() => {
            let values = items
                .iter()
                .map(|item| yaml_scalar(item).ok_or_else(|| bad("must be a list of values")))
                .collect::<Result<Vec<_>, _>>()?;
            args.push(format!("{flag}={}", values.join(",")));
        }
        (_, serde_yaml::Value::Mapping(_)) if info.takes_many => {
            let json = serde_json::to_string(&v).map_err(|e| bad(&e.to_string()))?;
            args.push(format!("{flag}={json}"));
        }
        (_, serde_yaml::Value::Null) => {}
        (_, other) => match yaml_scalar(other) {
            Some(s) => args.push(format!("{flag}={s}")),
            None => return Err(bad("must be a single value")),
        },
    }
    if !args.is_empty() {
        if let Err(e) = profile_command().try_get_matches_from(&args) {
            return Err(format!("`{key}`: {}", first_line(&e.to_string())));
        }
    }
    Ok(args)
}

pub(super) fn first_line(s: &str) -> String {
    s.lines()
        .map(|l| l.trim_start_matches("error: ").trim())
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_found_at_the_repeat() {
        let text = "benchmark:\n  a: 1\n  b: 2\n  a: 3\n";
        assert_eq!(repeated_key(text, "a"), Some((4, 2)));
        assert_eq!(repeated_key(text, "b"), None);
        // Top level, with comments, blank lines and quoted keys.
        let text = "# c\nbenchmark:\n  x: 1\n\nplugins: {}\n\"benchmark\":\n";
        assert_eq!(repeated_key(text, "benchmark"), Some((6, 2)));
        // The same key in different mappings is no repeat.
        let text = "p:\n  a: 1\nq:\n  a: 2\n";
        assert_eq!(repeated_key(text, "a"), None);
        // Sequence items are mappings of their own; a repeat inside one is found.
        let text = "l:\n  - a: 1\n    b: 2\n  - a: 3\n    a: 4\n";
        assert_eq!(repeated_key(text, "a"), Some((5, 4)));
        // Lines of a block scalar are text, not keys.
        let text = "k: |\n  a: 1\n  a: 2\nm: 1\n";
        assert_eq!(repeated_key(text, "a"), None);
        // Nested: found at its depth only.
        let text = "a:\n  b:\n    c: 1\n  c: 2\n  b: 3\n";
        assert_eq!(repeated_key(text, "c"), None);
        assert_eq!(repeated_key(text, "b"), Some((5, 2)));
    }

    #[test]
    fn yaml_duplicates_name_the_repeat_and_the_first() {
        let text = "benchmark:\n  model: m\n  concurrency: 3\n  x: 1\n  concurrency: 4\n";
        let e = serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_err();
        assert_eq!(
            yaml_error("f.yaml", text, &e).to_string(),
            "f.yaml:5: duplicate key `concurrency` (first on line 3)"
        );
        // Flow style is left to serde_yaml's location.
        let text = "benchmark: {a: 1, a: 2}\n";
        let e = serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_err();
        let msg = yaml_error("f.yaml", text, &e).to_string();
        assert!(msg.starts_with("f.yaml:1: invalid YAML"), "{msg}");
    }

    /// Hostile YAML ends in an error naming the file, not a stack overflow or a blow-up.
    #[test]
    fn deep_nesting_and_alias_bombs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.yaml");
        let deep = format!(
            "benchmark:\n  x: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i", "j"])
        {
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        bomb.push_str("benchmark:\n  url: *j\n");
        for text in [deep, bomb] {
            std::fs::write(&path, &text).unwrap();
            let started = std::time::Instant::now();
            let msg = match read_config_file(&path) {
                Ok(_) => panic!("accepted"),
                Err(e) => e.to_string(),
            };
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
            assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        }
    }

    #[test]
    fn nested_key_lines_follow_the_path() {
        let text = "benchmark:\n  file: x\nplugins:\n  a:\n    file: f\n    deep:\n      file: g\n    text: |\n      file: no\n    hooks:\n      - x\n    format: json\n  b:\n    file: h\n";
        let all = nested_key_lines(text, "plugins");
        let (line, keys) = all["a"].clone();
        assert_eq!(line, 4);
        assert_eq!(keys.get("file"), Some(&5));
        assert_eq!(keys.get("deep"), Some(&6));
        assert_eq!(keys.get("format"), Some(&12));
        assert_eq!(keys.len(), 5, "{keys:?}");
        let (line, keys) = all["b"].clone();
        assert_eq!((line, keys.get("file")), (13, Some(&14)));
        assert_eq!(all.len(), 2);
        assert!(nested_key_lines("plugins: {a: {x: 1}}\n", "plugins").is_empty());
    }

    #[test]
    fn key_lines_are_the_sections_own_keys() {
        let text = "plugins:\n  a:\n    b: 1\n  b: 5\nbenchmark: {isl: 3}\n";
        let lines = KeyLines::new(text, Some("plugins"));
        assert_eq!(
            (lines.get("a"), lines.get("b")),
            (2, 4),
            "not the nested `b`"
        );
        assert_eq!(
            KeyLines::new(text, Some("benchmark")).get("isl"),
            5,
            "flow style"
        );
        assert_eq!(KeyLines::new(text, None).get("benchmark"), 5);
        // Through the loader: the plugin `b` is not a mapping, on line 4.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, text).unwrap();
        let msg = read_config_file(&path).err().unwrap().to_string();
        assert!(msg.starts_with(&format!("{}:4:", path.display())), "{msg}");
    }

    /// Looking up each key's line scanned the whole file per key: quadratic in the keys.
    #[test]
    fn many_plugin_sections_read_in_linear_time() {
        let mut text = String::from("plugins:\n");
        for i in 0..50_000 {
            text.push_str(&format!("  p{i}:\n    enabled: false\n"));
        }
        text.push_str("  last: 5\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, &text).unwrap();
        let started = std::time::Instant::now();
        let msg = read_config_file(&path).err().unwrap().to_string();
        assert!(
            msg.starts_with(&format!("{}:100002:", path.display())),
            "{msg}"
        );
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    }
}
