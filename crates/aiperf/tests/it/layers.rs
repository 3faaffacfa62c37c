//! The module layering of `crates/aiperf/src` (docs/architecture.md, "Layers"): no import
//! cycle between top-level modules, and the leaves import nothing from the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
                out.push(path);
            }
        }
    }
    out
}

/// Files that are test-only modules (`#[cfg(test)] mod x;` declared in a sibling file).
fn test_only_files(files: &[std::path::PathBuf]) -> BTreeSet<std::path::PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).expect("read source");
        for (i, _) in text.match_indices("#[cfg(test)]\n") {
            let rest = text[i..].lines().nth(1).unwrap_or("").trim();
            let Some(name) = rest
                .strip_prefix("mod ")
                .or_else(|| rest.strip_prefix("pub mod "))
                .and_then(|r| r.strip_suffix(';'))
            else {
                continue;
            };
            let dir = f.parent().expect("a parent");
            out.insert(dir.join(format!("{name}.rs")));
        }
    }
    out
}

/// Top-level module → the top-level modules its non-test code names as `crate::x`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = sources(&src);
    let test_only = test_only_files(&files);
    for path in files.into_iter().filter(|f| !test_only.contains(f)) {
        let rel = path.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a component");
        let top = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let text = std::fs::read_to_string(&path).expect("read source");
        // Test modules may reach anywhere; only the code that ships counts.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let deps = graph.entry(top.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                deps.insert(name);
            }
        }
    }
    graph
}

#[test]
fn no_import_cycles_between_modules() {
    let graph = import_graph();
    assert!(graph.contains_key("timing") && graph.contains_key("config"));
    // Depth-first search; a back edge to a module on the stack is a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == m) {
            panic!("import cycle: {} -> {m}", stack[at..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        stack.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, stack, done);
        }
        stack.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn leaves_import_nothing_from_the_crate() {
    let graph = import_graph();
    for leaf in ["clock", "mix", "units", "secret", "shard", "sweep"] {
        let deps = graph
            .get(leaf)
            .unwrap_or_else(|| panic!("no module {leaf}"));
        assert!(deps.is_empty(), "{leaf} imports {deps:?}");
    }
    for low in [
        "endpoint",
        "dataset",
        "metrics",
        "transport",
        "plugin",
        "mock",
        "timing",
        "servermetrics",
    ] {
        let deps = &graph[low];
        for high in ["config", "cli", "benchmark", "export"] {
            assert!(!deps.contains(high), "{low} imports {high}");
        }
    }
}
