//! `aiperf kube manifest`: the manifests checked offline against the Kubernetes API's schema
//! by `kubernetes-validate --strict` (unknown fields are errors; the check is shown to fail on
//! a broken manifest), their structure parsed back, and bad flags and configs refused as
//! usage errors.
//!
//! `kubernetes-validate` comes from the Python venv that `python/run-tests.sh` builds
//! (`target/py-venv`, or `$AIPERF_PY_VENV`). Without it these schema checks skip with a loud
//! message, unless `AIPERF_REQUIRE_KUBE_VALIDATE` is set (CI sets it): then they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::{self, Output, Run};

/// The Kubernetes versions whose schemas the manifests must pass.
const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.34.0"];

/// The venv's `kubernetes-validate`, or `None` with a loud message (only when it is missing
/// and `AIPERF_REQUIRE_KUBE_VALIDATE` is unset).
fn validator() -> Option<PathBuf> {
    let venv = match std::env::var_os("AIPERF_PY_VENV") {
        Some(v) => PathBuf::from(v),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venv"),
    };
    let bin = venv.join("bin").join("kubernetes-validate");
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("AIPERF_REQUIRE_KUBE_VALIDATE").is_some() {
        panic!(
            "{} is missing but AIPERF_REQUIRE_KUBE_VALIDATE is set (run `bash python/run-tests.sh`, \
             which installs it into the venv)",
            bin.display()
        );
    }
    eprintln!(
        "\n!!!!!!!! SKIPPED: {} is missing; the Kubernetes manifests were NOT validated against \
         the API schema (run `bash python/run-tests.sh`, or set AIPERF_REQUIRE_KUBE_VALIDATE=1 to \
         fail instead) !!!!!!!!\n",
        bin.display()
    );
    None
}

/// Runs the validator in strict mode on `file` for `version`: (success, its output).
fn validate(bin: &Path, version: &str, file: &Path) -> (bool, String) {
    let out = Command::new(bin)
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .collect()
}

fn manifest(args: &[&str]) -> Output {
    let mut all = vec!["kube", "manifest"];
    all.extend_from_slice(args);
    Run::new(&all).run()
}

/// A time an hour from now, as RFC 3339.
fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const CONFIG: &str = "# A sharded run: 4 workers per shard.\nbenchmark:\n  model: m\n  \
                      url: http://vllm.inference.svc:8000\n  concurrency: 4\n  \
                      request_count: 400\n  isl: 128\n  osl: 64\n";

/// The arguments of the Job's container.
fn job_args(job: &Value) -> Vec<String> {
    job["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn manifests_pass_the_kubernetes_schema_and_hold_the_run() {
    let _gate = support::shared();
    let Some(bin) = validator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = support::write_file(tmp.path(), "benchmark.yaml", CONFIG);
    let config = config.to_str().unwrap();
    let start = in_an_hour();
    let cases: Vec<(u32, Vec<&str>)> = vec![
        (1, vec![]),
        (4, vec![]),
        (
            4,
            vec![
                "--anti-affinity",
                "preferred",
                "--namespace",
                "bench",
                "--results-claim",
                "shared-results",
                "--run-id",
                "nightly-42",
                "--env-from-secret",
                "openai-key",
            ],
        ),
        (
            1,
            vec![
                "--anti-affinity",
                "none",
                "--cpu",
                "500m",
                "--memory",
                "512Mi",
                "--results-size",
                "50Gi",
                "--storage-class",
                "nfs-client",
                "--image",
                "registry.example.com/aiperf:1.0",
                "--name",
                "my-bench",
                "--start-at",
                &start,
            ],
        ),
        (
            16,
            vec!["--cpu", "4", "--memory", "8Gi", "--start-delay", "600"],
        ),
    ];
    for (i, (n, extra)) in cases.iter().enumerate() {
        let out_file = tmp.path().join(format!("manifest-{i}.yaml"));
        let shards = n.to_string();
        let mut args = vec![
            "--shards",
            &shards,
            "--config",
            config,
            "--output",
            out_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = manifest(&args);
        out.ok();
        assert!(
            out.stdout.is_empty(),
            "--output: nothing on stdout\n{}",
            out.show()
        );
        let yaml = std::fs::read_to_string(&out_file).unwrap();
        for version in KUBE_VERSIONS {
            let (ok, text) = validate(&bin, version, &out_file);
            assert!(
                ok,
                "case {i} ({extra:?}) against {version}:\n{text}\n{yaml}"
            );
        }
        let d = docs(&yaml);
        let own_claim = !extra.contains(&"--results-claim");
        assert_eq!(d.len(), if own_claim { 3 } else { 2 }, "{yaml}");
        let job = d.last().unwrap();
        assert_eq!(job["kind"], "Job");
        let run_id = job["metadata"]["labels"]["aiperf/run-id"]
            .as_str()
            .expect("the run id label")
            .to_string();
        for doc in &d {
            assert_eq!(
                doc["metadata"]["labels"]["app.kubernetes.io/name"],
                "aiperf"
            );
            assert_eq!(doc["metadata"]["labels"]["aiperf/run-id"], run_id.as_str());
            if extra.contains(&"bench") {
                assert_eq!(doc["metadata"]["namespace"], "bench");
            } else {
                assert!(doc["metadata"].get("namespace").is_none());
            }
        }
        // The ConfigMap holds the config file byte for byte.
        assert_eq!(d[0]["kind"], "ConfigMap");
        assert_eq!(d[0]["data"]["benchmark.yaml"].as_str(), Some(CONFIG));
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(spec["completions"].as_u64(), Some(u64::from(*n)));
        assert_eq!(spec["parallelism"].as_u64(), Some(u64::from(*n)));
        assert_eq!(spec["backoffLimit"].as_u64(), Some(0));
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        let args = job_args(job);
        let after = |flag: &str| {
            let i = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} in {args:?}"));
            args[i + 1].clone()
        };
        assert_eq!(after("--config"), "/etc/aiperf/benchmark.yaml");
        assert_eq!(after("--shard"), format!("$(JOB_COMPLETION_INDEX)/{n}"));
        assert_eq!(after("--run-id"), run_id);
        assert_eq!(
            after("--artifact-dir"),
            format!("/results/{run_id}/shard-$(JOB_COMPLETION_INDEX)")
        );
        assert_eq!(after("--ui"), "none");
        let start_arg = args
            .iter()
            .find_map(|a| a.strip_prefix("--start-at="))
            .expect("--start-at=T");
        if extra.contains(&"--start-at") {
            assert_eq!(start_arg, start);
        }
        if extra.contains(&"nightly-42") {
            assert_eq!(run_id, "nightly-42");
            let from = &pod["containers"][0]["envFrom"][0]["secretRef"]["name"];
            assert_eq!(from, "openai-key");
        }
        let container = &pod["containers"][0];
        assert_eq!(container["env"][0]["name"], "JOB_COMPLETION_INDEX");
        let (cpu, memory) = match extra.iter().position(|a| *a == "--cpu") {
            Some(i) => (extra[i + 1], extra[i + 3]),
            None => ("2", "2Gi"),
        };
        for kind in ["requests", "limits"] {
            assert_eq!(container["resources"][kind]["cpu"], cpu);
            assert_eq!(container["resources"][kind]["memory"], memory);
        }
        let anti = &pod["affinity"]["podAntiAffinity"];
        let term = if extra.contains(&"preferred") {
            anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"].clone()
        } else if extra.contains(&"none") {
            assert!(pod.get("affinity").is_none());
            continue;
        } else {
            anti["requiredDuringSchedulingIgnoredDuringExecution"][0].clone()
        };
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            term["labelSelector"]["matchLabels"]["aiperf/run-id"],
            run_id.as_str()
        );
    }
}

/// The schema check can fail: a manifest with an unknown field, or a wrong type, is refused.
#[test]
fn the_schema_check_refuses_a_broken_manifest() {
    let _gate = support::shared();
    let Some(bin) = validator() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = support::write_file(tmp.path(), "benchmark.yaml", CONFIG);
    let out = manifest(&["--shards", "2", "--config", config.to_str().unwrap()]);
    out.ok();
    let good = docs(&out.stdout);
    let write = |docs: &[Value], name: &str| {
        let text: String = docs
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
            .collect();
        support::write_file(tmp.path(), name, &text)
    };
    let (ok, text) = validate(&bin, KUBE_VERSIONS[0], &write(&good, "good.yaml"));
    assert!(ok, "the untouched manifest passes\n{text}");

    let mut unknown = good.clone();
    let pod = &mut unknown[2]["spec"]["template"]["spec"];
    pod.as_mapping_mut()
        .unwrap()
        .insert("shardCount".into(), 2.into());
    let (ok, text) = validate(&bin, KUBE_VERSIONS[0], &write(&unknown, "unknown.yaml"));
    assert!(!ok, "an unknown field must fail the strict check\n{text}");
    assert!(text.contains("shardCount"), "{text}");

    let mut wrong_type = good;
    wrong_type[2]["spec"]["completions"] = "four".into();
    let (ok, text) = validate(&bin, KUBE_VERSIONS[0], &write(&wrong_type, "type.yaml"));
    assert!(!ok, "a string for completions must fail\n{text}");
}

#[test]
fn bad_flags_and_configs_are_usage_errors() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let config = support::write_file(tmp.path(), "benchmark.yaml", CONFIG);
    let config = config.to_str().unwrap();
    for (args, expect) in [
        (vec!["--shards", "0"], "--shards"),
        (vec!["--shards", "1025"], "--shards"),
        (vec!["--shards", "NaN"], "--shards"),
        (vec!["--shards", "2.5"], "--shards"),
        (vec!["--shards", "2", "--cpu", "2 cores"], "invalid --cpu"),
        (
            vec!["--shards", "2", "--memory", "100m"],
            "not a whole number of bytes",
        ),
        (vec!["--shards", "2", "--name", "Bench"], "invalid --name"),
        (
            vec!["--shards", "2", "--start-at", "2001-01-01T00:00:00Z"],
            "is in the past",
        ),
        (
            vec!["--shards", "2", "--start-at", "noon"],
            "invalid --start-at",
        ),
        (
            vec!["--shards", "2", "--anti-affinity", "maybe"],
            "--anti-affinity",
        ),
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&["--config", config]);
        let line = manifest(&all).assert_usage_error();
        assert!(line.contains(expect), "{args:?}: {line}");
    }
    // A bad config: the message `aiperf --config` gives, exit 2, nothing printed.
    let bad = support::write_file(
        tmp.path(),
        "bad.yaml",
        "benchmark:\n  url: mock\n  concurrancy: 4\n",
    );
    let bad = bad.to_str().unwrap();
    let out = manifest(&["--shards", "2", "--config", bad]);
    let line = out.assert_usage_error();
    assert!(out.stdout.is_empty());
    let profile = Run::new(&["--config", bad]).run();
    assert_eq!(line, profile.assert_usage_error());
    assert!(line.contains("did you mean `concurrency`"), "{line}");
    let missing = tmp.path().join("missing.yaml");
    let line =
        manifest(&["--shards", "2", "--config", missing.to_str().unwrap()]).assert_usage_error();
    assert!(line.contains("cannot read config file"), "{line}");
    // An --output that cannot be written.
    let out = manifest(&[
        "--shards",
        "2",
        "--config",
        config,
        "--output",
        tmp.path().join("no/such/dir/m.yaml").to_str().unwrap(),
    ]);
    assert!(out.assert_usage_error().contains("cannot write"));
}

/// With fixed run id and start, the manifest is a pure function of the flags and the
/// config: stdout and --output agree byte for byte, and no temporary file is left.
/// A `mock` URL is allowed, with a note that each shard runs its own mock.
#[test]
fn output_is_deterministic_and_a_mock_config_is_a_dry_run() {
    let _gate = support::shared();
    let tmp = tempfile::tempdir().unwrap();
    let text = "benchmark:\n  url: mock\n  request_count: 40\n  api_key: ${API_KEY:-none}\n";
    let config = support::write_file(tmp.path(), "mock.yaml", text);
    let start = in_an_hour();
    let common = [
        "--shards",
        "3",
        "--config",
        config.to_str().unwrap(),
        "--run-id",
        "fixed",
        "--start-at",
        &start,
    ];
    let printed = manifest(&common);
    printed.ok();
    assert!(
        printed
            .stderr
            .contains("each of the 3 shards will run its own in-process mock"),
        "{}",
        printed.show()
    );
    assert!(printed.stderr.contains("API_KEY"), "{}", printed.show());
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("m.yaml");
    let mut args = common.to_vec();
    args.extend_from_slice(&["-o", file.to_str().unwrap()]);
    manifest(&args).ok();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), printed.stdout);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["m.yaml"]);
    let d = docs(&printed.stdout);
    assert_eq!(d[0]["data"]["benchmark.yaml"].as_str(), Some(text));
    assert_eq!(d[2]["metadata"]["name"], "aiperf-fixed");
    // With a Secret for the variables, no warning about them.
    let mut with_secret = common.to_vec();
    with_secret.extend_from_slice(&["--env-from-secret", "api"]);
    let out = manifest(&with_secret);
    out.ok();
    assert!(!out.stderr.contains("API_KEY"), "{}", out.show());
    // A real server's URL: no note about the mock.
    let real = support::write_file(tmp.path(), "real.yaml", CONFIG);
    let out = manifest(&["--shards", "2", "--config", real.to_str().unwrap()]);
    out.ok();
    assert!(!out.stderr.contains("mock"), "{}", out.show());
}
