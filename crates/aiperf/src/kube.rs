//! `aiperf kube manifest`: the Kubernetes objects that run one benchmark as N shards
//! (docs/scale-out.md). A ConfigMap holds the config file verbatim; an Indexed Job runs one
//! pod per shard, each `aiperf --config … --shard $(JOB_COMPLETION_INDEX)/N --run-id ID
//! --start-at=T --artifact-dir /results/ID/shard-$(JOB_COMPLETION_INDEX) --ui none`; every pod
//! mounts one ReadWriteMany results volume. The objects are typed structs serialised with
//! serde_yaml, in the field names of the Kubernetes API (checked offline against its schema
//! by `tests/it/kube.rs`).
//!
//! The shard index reaches the arguments through Kubernetes' own `$(VAR)` expansion of
//! container arguments, from an environment variable set by the downward API from the pod's
//! completion-index annotation: no shell is needed, so the image can be a lone static binary.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::cli::{AntiAffinity, KubeManifestArgs};
use crate::config::ConfigError;

/// Where the ConfigMap is mounted in each pod, and the key (file name) holding the config.
pub const CONFIG_DIR: &str = "/etc/aiperf";
pub const CONFIG_KEY: &str = "benchmark.yaml";
/// Where the results volume is mounted; shard I writes `/results/<run id>/shard-I`.
pub const RESULTS_DIR: &str = "/results";
/// The environment variable holding the pod's shard index (Kubernetes' own name for it).
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The pod annotation the Job controller sets to the completion index.
const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The label naming the application on every object.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label holding the run id on every object (and selecting the shards of one run).
pub const RUN_ID_LABEL: &str = "aiperf/run-id";
/// The user and group the container runs as: not root (the image's `USER`, Dockerfile).
const RUN_AS: i64 = 65532;
/// A ConfigMap holds at most 1 MiB (etcd's object limit); keep room for its metadata.
const MAX_CONFIG_BYTES: usize = 1024 * 1024 - 16 * 1024;
/// The longest DNS-1123 label (names of Jobs, namespaces, pod host names).
const MAX_LABEL: usize = 63;
/// The longest DNS-1123 subdomain (names of claims, storage classes).
const MAX_SUBDOMAIN: usize = 253;

fn usage(msg: impl Into<String>) -> ConfigError {
    ConfigError::Usage(msg.into())
}

/// Where the shards' results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Results {
    /// An existing PersistentVolumeClaim, by name.
    Claim(String),
    /// A new ReadWriteMany claim of this size, in this storage class (else the default).
    New {
        size: String,
        storage_class: Option<String>,
    },
}

/// Every choice of a manifest, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub shards: u32,
    pub run_id: String,
    pub name: String,
    pub namespace: Option<String>,
    pub image: String,
    pub start_at: DateTime<Utc>,
    pub cpu: String,
    pub memory: String,
    pub anti_affinity: AntiAffinity,
    pub results: Results,
    /// Secrets whose keys become environment variables of the container.
    pub env_secrets: Vec<String>,
}

impl Plan {
    /// Checks the flags (`now` decides the default start and what is in the past).
    pub fn from_args(a: &KubeManifestArgs, now: DateTime<Utc>) -> Result<Self, ConfigError> {
        if !(1..=crate::units::MAX_SHARDS).contains(&u64::from(a.shards)) {
            return Err(usage(format!(
                "--shards must be from 1 to {}",
                crate::units::MAX_SHARDS
            )));
        }
        let run_id = match &a.run_id {
            Some(id) => {
                check_run_id(id)?;
                id.clone()
            }
            None => uuid::Uuid::new_v4().to_string(),
        };
        let name = match &a.name {
            Some(n) => n.clone(),
            None => default_name(&run_id),
        };
        check_job_name(&name, a.shards)?;
        if let Some(ns) = &a.namespace {
            check_label_name("--namespace", ns)?;
        }
        let image = a
            .image
            .clone()
            .unwrap_or_else(|| format!("aiperf:{}", env!("CARGO_PKG_VERSION")));
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(usage(format!(
                "invalid --image `{image}`: an image reference has no spaces"
            )));
        }
        let start_at = match &a.start_at {
            Some(t) => {
                let t = DateTime::parse_from_rfc3339(t.trim())
                    .map_err(|e| {
                        usage(format!(
                            "invalid --start-at `{t}`: {e} (an RFC 3339 time, e.g. \
                             2026-01-31T12:00:00Z)"
                        ))
                    })?
                    .with_timezone(&Utc);
                if t <= now {
                    return Err(usage(format!(
                        "--start-at {} is in the past (it is now {})",
                        t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                        now.to_rfc3339_opts(SecondsFormat::Secs, true)
                    )));
                }
                t
            }
            None => default_start(now, a.start_delay)?,
        };
        check_cpu(&a.cpu)?;
        check_bytes("--memory", &a.memory)?;
        let results = match &a.results_claim {
            Some(claim) => {
                check_subdomain("--results-claim", claim)?;
                Results::Claim(claim.clone())
            }
            None => {
                check_bytes("--results-size", &a.results_size)?;
                if let Some(class) = &a.storage_class {
                    check_subdomain("--storage-class", class)?;
                }
                Results::New {
                    size: a.results_size.clone(),
                    storage_class: a.storage_class.clone(),
                }
            }
        };
        for secret in &a.env_from_secret {
            check_subdomain("--env-from-secret", secret)?;
        }
        Ok(Plan {
            env_secrets: a.env_from_secret.clone(),
            shards: a.shards,
            run_id,
            name,
            namespace: a.namespace.clone(),
            image,
            start_at,
            cpu: a.cpu.clone(),
            memory: a.memory.clone(),
            anti_affinity: a.anti_affinity,
            results,
        })
    }

    /// The start time as the shards get it.
    pub fn start_text(&self) -> String {
        self.start_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    pub fn config_map_name(&self) -> String {
        format!("{}-config", self.name)
    }

    pub fn claim_name(&self) -> String {
        match &self.results {
            Results::Claim(c) => c.clone(),
            Results::New { .. } => format!("{}-results", self.name),
        }
    }

    /// The container's arguments (after the image's entrypoint, `/aiperf`).
    pub fn args(&self) -> Vec<String> {
        let index = format!("$({INDEX_ENV})");
        vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
            "--shard".into(),
            format!("{index}/{}", self.shards),
            "--run-id".into(),
            self.run_id.clone(),
            // One argument: alone, the time would be a plain YAML scalar that YAML 1.1
            // readers (PyYAML, hence kubernetes-validate) take for a timestamp, not a string.
            format!("--start-at={}", self.start_text()),
            "--artifact-dir".into(),
            format!("{RESULTS_DIR}/{}/shard-{index}", self.run_id),
            "--ui".into(),
            "none".into(),
        ]
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_string(), "aiperf".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            (RUN_ID_LABEL.to_string(), self.run_id.clone()),
        ])
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name,
            namespace: self.namespace.clone(),
            labels: self.labels(),
        }
    }
}

/// `now + delay`, rounded up to a whole second.
fn default_start(
    now: DateTime<Utc>,
    delay: std::time::Duration,
) -> Result<DateTime<Utc>, ConfigError> {
    let delay =
        chrono::Duration::from_std(delay).map_err(|_| usage("--start-delay is too long"))?;
    let t = now
        .checked_add_signed(delay)
        .ok_or_else(|| usage("--start-delay is too long"))?;
    let whole = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
    DateTime::from_timestamp(whole, 0).ok_or_else(|| usage("--start-delay is too long"))
}

/// `aiperf-` and the run id's first 8 characters, made a DNS label.
pub fn default_name(run_id: &str) -> String {
    let part: String = run_id
        .chars()
        .take(8)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let part = part.trim_matches('-');
    if part.is_empty() {
        "aiperf".into()
    } else {
        format!("aiperf-{part}")
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn check_label_name(flag: &str, s: &str) -> Result<(), ConfigError> {
    if is_label_name(s) {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid {flag} `{s}`: a DNS-1123 label is 1 to {MAX_LABEL} lowercase letters, \
             digits and `-`, starting and ending with a letter or digit"
        )))
    }
}

fn check_subdomain(flag: &str, s: &str) -> Result<(), ConfigError> {
    if s.len() <= MAX_SUBDOMAIN && s.split('.').all(is_label_name) {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid {flag} `{s}`: a DNS-1123 name is at most {MAX_SUBDOMAIN} characters, \
             dot-separated parts of lowercase letters, digits and `-`, each starting and \
             ending with a letter or digit"
        )))
    }
}

/// The Job's name: a DNS label that leaves room for the pods' host names, `NAME-INDEX`.
fn check_job_name(name: &str, shards: u32) -> Result<(), ConfigError> {
    check_label_name("--name", name)?;
    let host = format!("{name}-{}", shards - 1);
    if host.len() > MAX_LABEL {
        return Err(usage(format!(
            "--name `{name}` is too long for {shards} shards: the pods' host names \
             (`{host}`) must be at most {MAX_LABEL} characters"
        )));
    }
    Ok(())
}

/// A run id is a label value (it labels every object) and a directory name.
fn check_run_id(id: &str) -> Result<(), ConfigError> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(usage(format!(
            "invalid --run-id `{id}`: 1 to {MAX_LABEL} letters, digits, `-`, `_` and `.`, \
             starting and ending with a letter or digit"
        )))
    }
}

/// The value of a Kubernetes quantity (`<number><suffix>`: `2`, `1.5`, `500m`, `2Gi`,
/// `1e3`), for checks: the text itself goes into the manifest. Signs are refused: every
/// quantity here is positive.
pub fn quantity(s: &str) -> Result<f64, String> {
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let valid_number = !number.is_empty() && number != "." && number.matches('.').count() <= 1;
    if !valid_number {
        return Err(format!(
            "`{s}` is not a quantity (a number and an optional suffix: 500m, 2, 1.5, 512Mi, 2Gi)"
        ));
    }
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a quantity"))?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) || digits.len() > 3
            {
                return Err(format!("`{s}` has a bad exponent"));
            }
            let exp: i32 = exp
                .parse()
                .map_err(|_| format!("`{s}` has a bad exponent"))?;
            10f64.powi(exp)
        }
        other => {
            return Err(format!(
                "`{s}` has an unknown suffix `{other}` (one of m, k, M, G, T, P, E, Ki, Mi, Gi, \
                 Ti, Pi, Ei)"
            ))
        }
    };
    let v = n * scale;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("`{s}` must be more than zero"));
    }
    Ok(v)
}

/// `--cpu`: a quantity of at least one millicore, Kubernetes' finest CPU unit.
fn check_cpu(s: &str) -> Result<f64, ConfigError> {
    let v = quantity(s).map_err(|e| usage(format!("invalid --cpu: {e}")))?;
    if v < 1e-3 {
        return Err(usage(format!(
            "invalid --cpu: `{s}` is less than 1m, the smallest CPU quantity"
        )));
    }
    Ok(v)
}

/// A size in bytes: a quantity that is a whole number of bytes (so `100m`, a tenth of a
/// byte, is refused rather than rounded by the cluster).
fn check_bytes(flag: &str, s: &str) -> Result<f64, ConfigError> {
    let v = quantity(s).map_err(|e| usage(format!("invalid {flag}: {e}")))?;
    if v.fract() != 0.0 {
        let hint = if s.ends_with('m') {
            format!(
                " (`m` is a thousandth; did you mean `{}i`?)",
                s.to_uppercase()
            )
        } else {
            String::new()
        };
        return Err(usage(format!(
            "invalid {flag}: `{s}` is not a whole number of bytes{hint}"
        )));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// The objects, in the Kubernetes API's field names (only the fields used).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectMeta {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMap {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    data: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PersistentVolumeClaim {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: ClaimSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimSpec {
    access_modes: Vec<&'static str>,
    resources: ClaimResources,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_class_name: Option<String>,
}

#[derive(Serialize)]
struct ClaimResources {
    requests: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    api_version: &'static str,
    kind: &'static str,
    metadata: ObjectMeta,
    spec: JobSpec,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JobSpec {
    completion_mode: &'static str,
    completions: u32,
    parallelism: u32,
    backoff_limit: u32,
    template: PodTemplate,
}

#[derive(Serialize)]
struct PodTemplate {
    metadata: TemplateMeta,
    spec: PodSpec,
}

#[derive(Serialize)]
struct TemplateMeta {
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    restart_policy: &'static str,
    security_context: PodSecurityContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    affinity: Option<Affinity>,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSecurityContext {
    run_as_non_root: bool,
    run_as_user: i64,
    run_as_group: i64,
    /// The results volume is made writable by this group (where the volume type allows).
    fs_group: i64,
    seccomp_profile: SeccompProfile,
}

#[derive(Serialize)]
struct SeccompProfile {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Affinity {
    pod_anti_affinity: PodAntiAffinity,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodAntiAffinity {
    #[serde(
        rename = "requiredDuringSchedulingIgnoredDuringExecution",
        skip_serializing_if = "Option::is_none"
    )]
    required: Option<Vec<PodAffinityTerm>>,
    #[serde(
        rename = "preferredDuringSchedulingIgnoredDuringExecution",
        skip_serializing_if = "Option::is_none"
    )]
    preferred: Option<Vec<WeightedPodAffinityTerm>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodAffinityTerm {
    label_selector: LabelSelector,
    topology_key: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WeightedPodAffinityTerm {
    weight: u32,
    pod_affinity_term: PodAffinityTerm,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LabelSelector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    name: &'static str,
    image: String,
    args: Vec<String>,
    env: Vec<EnvVar>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env_from: Vec<EnvFromSource>,
    resources: Resources,
    volume_mounts: Vec<VolumeMount>,
    security_context: ContainerSecurityContext,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    name: &'static str,
    value_from: EnvVarSource,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvFromSource {
    secret_ref: SecretRef,
}

#[derive(Serialize)]
struct SecretRef {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvVarSource {
    field_ref: FieldRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FieldRef {
    field_path: String,
}

#[derive(Serialize)]
struct Resources {
    requests: BTreeMap<&'static str, String>,
    limits: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VolumeMount {
    name: &'static str,
    mount_path: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerSecurityContext {
    allow_privilege_escalation: bool,
    capabilities: Capabilities,
}

#[derive(Serialize)]
struct Capabilities {
    drop: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_map: Option<ConfigMapVolume>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_volume_claim: Option<ClaimVolume>,
}

#[derive(Serialize)]
struct ConfigMapVolume {
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimVolume {
    claim_name: String,
}

/// The manifest: the ConfigMap (holding `config_text` under [`CONFIG_KEY`]), the results
/// claim (unless an existing one is used) and the Job, as one multi-document YAML.
pub fn manifest(plan: &Plan, config_text: &str) -> Result<String, String> {
    let config_map = ConfigMap {
        api_version: "v1",
        kind: "ConfigMap",
        metadata: plan.meta(plan.config_map_name()),
        data: BTreeMap::from([(CONFIG_KEY.to_string(), config_text.to_string())]),
    };
    let claim = match &plan.results {
        Results::Claim(_) => None,
        Results::New {
            size,
            storage_class,
        } => Some(PersistentVolumeClaim {
            api_version: "v1",
            kind: "PersistentVolumeClaim",
            metadata: plan.meta(plan.claim_name()),
            spec: ClaimSpec {
                access_modes: vec!["ReadWriteMany"],
                resources: ClaimResources {
                    requests: BTreeMap::from([("storage", size.clone())]),
                },
                storage_class_name: storage_class.clone(),
            },
        }),
    };
    let shards_of_this_run = || PodAffinityTerm {
        label_selector: LabelSelector {
            match_labels: BTreeMap::from([
                (NAME_LABEL.to_string(), "aiperf".to_string()),
                (RUN_ID_LABEL.to_string(), plan.run_id.clone()),
            ]),
        },
        topology_key: "kubernetes.io/hostname",
    };
    let affinity = match plan.anti_affinity {
        AntiAffinity::None => None,
        AntiAffinity::Required => Some(PodAntiAffinity {
            required: Some(vec![shards_of_this_run()]),
            preferred: None,
        }),
        AntiAffinity::Preferred => Some(PodAntiAffinity {
            required: None,
            preferred: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: shards_of_this_run(),
            }]),
        }),
    }
    .map(|pod_anti_affinity| Affinity { pod_anti_affinity });
    let resources = BTreeMap::from([("cpu", plan.cpu.clone()), ("memory", plan.memory.clone())]);
    let job = Job {
        api_version: "batch/v1",
        kind: "Job",
        metadata: plan.meta(plan.name.clone()),
        spec: JobSpec {
            completion_mode: "Indexed",
            completions: plan.shards,
            parallelism: plan.shards,
            // A failed shard is not run again: a second attempt would send its part twice.
            backoff_limit: 0,
            template: PodTemplate {
                metadata: TemplateMeta {
                    labels: plan.labels(),
                },
                spec: PodSpec {
                    restart_policy: "Never",
                    security_context: PodSecurityContext {
                        run_as_non_root: true,
                        run_as_user: RUN_AS,
                        run_as_group: RUN_AS,
                        fs_group: RUN_AS,
                        seccomp_profile: SeccompProfile {
                            kind: "RuntimeDefault",
                        },
                    },
                    affinity,
                    containers: vec![Container {
                        name: "aiperf",
                        image: plan.image.clone(),
                        args: plan.args(),
                        env: vec![EnvVar {
                            name: INDEX_ENV,
                            value_from: EnvVarSource {
                                field_ref: FieldRef {
                                    field_path: format!(
                                        "metadata.annotations['{INDEX_ANNOTATION}']"
                                    ),
                                },
                            },
                        }],
                        env_from: plan
                            .env_secrets
                            .iter()
                            .map(|name| EnvFromSource {
                                secret_ref: SecretRef { name: name.clone() },
                            })
                            .collect(),
                        resources: Resources {
                            requests: resources.clone(),
                            limits: resources,
                        },
                        volume_mounts: vec![
                            VolumeMount {
                                name: "config",
                                mount_path: CONFIG_DIR,
                                read_only: true,
                            },
                            VolumeMount {
                                name: "results",
                                mount_path: RESULTS_DIR,
                                read_only: false,
                            },
                        ],
                        security_context: ContainerSecurityContext {
                            allow_privilege_escalation: false,
                            capabilities: Capabilities { drop: vec!["ALL"] },
                        },
                    }],
                    volumes: vec![
                        Volume {
                            name: "config",
                            config_map: Some(ConfigMapVolume {
                                name: plan.config_map_name(),
                            }),
                            persistent_volume_claim: None,
                        },
                        Volume {
                            name: "results",
                            config_map: None,
                            persistent_volume_claim: Some(ClaimVolume {
                                claim_name: plan.claim_name(),
                            }),
                        },
                    ],
                },
            },
        },
    };
    let yaml = |r: Result<String, serde_yaml::Error>| r.map_err(|e| e.to_string());
    let mut docs = vec![yaml(serde_yaml::to_string(&config_map))?];
    if let Some(c) = &claim {
        docs.push(yaml(serde_yaml::to_string(c))?);
    }
    docs.push(yaml(serde_yaml::to_string(&job))?);
    Ok(docs
        .iter()
        .map(|d| format!("---\n{d}"))
        .collect::<Vec<_>>()
        .join(""))
}

/// What the pods will not have that the config relies on: files named by path (only the
/// config file is mounted) and environment variables (`${VAR}`), for warnings.
fn pod_caveats(cfg: &crate::config::BenchmarkConfig, text: &str, has_secrets: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut files: Vec<String> = Vec::new();
    if let Some(f) = &cfg.input.input_file {
        files.push(format!("--input-file {}", f.display()));
    }
    if let Some(f) = &cfg.input.system_prompt_file {
        files.push(format!("--system-prompt-file {}", f.display()));
    }
    for f in &cfg.endpoint.ssl_ca_files {
        files.push(format!("--ssl-ca-file {}", f.display()));
    }
    let tok = &cfg.input.tokenizer.name;
    if Path::new(tok).exists() {
        files.push(format!("--tokenizer {tok}"));
    }
    if !files.is_empty() {
        out.push(format!(
            "the config names local files that the pods do not have (only the config file is \
             mounted, at {CONFIG_DIR}/{CONFIG_KEY}): {}; put them in the image or a volume at \
             the same paths",
            files.join(", ")
        ));
    }
    let vars = env_references(text);
    if !vars.is_empty() && !has_secrets {
        out.push(format!(
            "the config reads environment variables ({}), which the pods do not inherit from \
             this shell: give them with --env-from-secret SECRET (or add them to the Job's \
             container `env`), or a shard without a default fails",
            vars.join(", ")
        ));
    }
    out
}

/// The `${VAR}` names in the config's string values.
fn env_references(text: &str) -> Vec<String> {
    type Names = std::cell::RefCell<std::collections::BTreeSet<String>>;
    fn walk(v: &serde_yaml::Value, out: &Names) {
        match v {
            serde_yaml::Value::String(s) => {
                // Every name is "set" (to nothing), so the walk goes through the whole value.
                let record = |name: &str| {
                    out.borrow_mut().insert(name.to_string());
                    Some(String::new())
                };
                let _ = crate::config::env::substitute(s, &record);
            }
            serde_yaml::Value::Sequence(items) => items.iter().for_each(|i| walk(i, out)),
            serde_yaml::Value::Mapping(m) => m.iter().for_each(|(k, v)| {
                walk(k, out);
                walk(v, out);
            }),
            serde_yaml::Value::Tagged(t) => walk(&t.value, out),
            _ => {}
        }
    }
    let names = Names::default();
    if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text) {
        walk(&v, &names);
    }
    names.into_inner().into_iter().collect()
}

/// `aiperf kube manifest`: checks the flags and the config, then prints the manifest (or
/// writes it to `--output`, atomically); notes and warnings go to stderr.
pub fn run(a: &KubeManifestArgs) -> crate::Result<u8> {
    let plan = Plan::from_args(a, Utc::now())?;
    let path = a.config.to_str().ok_or_else(|| {
        usage(format!(
            "--config {}: the path is not UTF-8",
            a.config.display()
        ))
    })?;
    // Checked as `aiperf --config FILE` checks it: the same message and exit code.
    let cfg = crate::config::load(&["--config".to_string(), path.to_string()])?;
    let text = std::fs::read_to_string(&a.config).map_err(|e| {
        usage(format!(
            "{}: cannot read config file: {e}",
            a.config.display()
        ))
    })?;
    if text.len() > MAX_CONFIG_BYTES {
        return Err(usage(format!(
            "{}: {} bytes is too large for a ConfigMap (at most {MAX_CONFIG_BYTES})",
            a.config.display(),
            text.len()
        ))
        .into());
    }
    if cfg
        .endpoint
        .urls
        .iter()
        .any(|u| crate::mock::is_mock_url(u))
    {
        eprintln!(
            "note: the config's URL is `mock`: each of the {} shards will run its own \
             in-process mock server (a dry run of the Job, not a test of a server)",
            plan.shards
        );
    }
    for caveat in pod_caveats(&cfg, &text, !plan.env_secrets.is_empty()) {
        eprintln!("warning: {caveat}");
    }
    let yaml = manifest(&plan, &text).map_err(crate::Error::Internal)?;
    match &a.output {
        Some(out) => {
            write_atomic(out, &yaml)
                .map_err(|e| usage(format!("cannot write {}: {e}", out.display())))?;
            eprintln!("Manifest: {}", out.display());
        }
        None => print!("{yaml}"),
    }
    eprintln!(
        "Job {}: {} shard(s), run id {}, start at {}; results in {RESULTS_DIR}/{} of claim {}",
        plan.name,
        plan.shards,
        plan.run_id,
        plan.start_text(),
        plan.run_id,
        plan.claim_name()
    );
    Ok(0)
}

/// Writes through a temporary file in the same directory, then renames it into place, so a
/// reader (or `kubectl apply`) never sees half a manifest.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        a: KubeManifestArgs,
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T12:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn args(extra: &[&str]) -> Result<KubeManifestArgs, String> {
        let mut all = vec!["kube", "--config", "b.yaml"];
        all.extend_from_slice(extra);
        Wrap::try_parse_from(all)
            .map(|w| w.a)
            .map_err(|e| e.to_string())
    }

    fn plan(extra: &[&str]) -> Result<Plan, String> {
        Plan::from_args(&args(extra)?, now()).map_err(|e| e.to_string())
    }

    #[test]
    fn shards_are_a_whole_number_from_1_to_1024() {
        assert_eq!(plan(&["--shards", "1"]).unwrap().shards, 1);
        assert_eq!(plan(&["--shards", "1024"]).unwrap().shards, 1024);
        assert_eq!(plan(&["--shards", "1e2"]).unwrap().shards, 100);
        for bad in ["0", "1025", "-1", "NaN", ".nan", "4.5", "four", "", "1e9"] {
            let e = plan(&["--shards", bad]).unwrap_err();
            assert!(e.contains("--shards"), "{bad}: {e}");
        }
        assert!(plan(&[]).unwrap_err().contains("--shards"), "required");
    }

    #[test]
    fn defaults_name_image_run_id_and_start() {
        let p = plan(&["--shards", "3"]).unwrap();
        assert!(uuid::Uuid::parse_str(&p.run_id).is_ok(), "{}", p.run_id);
        assert_eq!(p.name, format!("aiperf-{}", &p.run_id[..8]));
        assert_eq!(p.image, format!("aiperf:{}", env!("CARGO_PKG_VERSION")));
        // now + 120 s, rounded up to the second.
        assert_eq!(p.start_text(), "2026-06-01T12:02:01Z");
        assert_eq!((p.cpu.as_str(), p.memory.as_str()), ("2", "2Gi"));
        assert_eq!(p.anti_affinity, AntiAffinity::Required);
        assert_eq!(
            p.results,
            Results::New {
                size: "10Gi".into(),
                storage_class: None
            }
        );
        let q = plan(&["--shards", "3", "--start-delay", "30"]).unwrap();
        assert_eq!(q.start_text(), "2026-06-01T12:00:31Z");
        assert_ne!(p.run_id, q.run_id, "a new id per manifest");
        let e = plan(&["--shards", "3", "--start-delay", "0"]).unwrap_err();
        assert!(e.contains("--start-delay"), "{e}");
    }

    #[test]
    fn start_at_is_rfc3339_in_the_future() {
        let p = plan(&["--shards", "2", "--start-at", "2026-06-01T14:00:00+02:00"]);
        assert!(p.unwrap_err().contains("is in the past"));
        let p = plan(&["--shards", "2", "--start-at", "2026-06-01T12:30:00.5+02:00"]);
        assert!(p.unwrap_err().contains("in the past"));
        let p = plan(&["--shards", "2", "--start-at", "2026-06-01T15:30:00.5+02:00"]).unwrap();
        assert_eq!(p.start_text(), "2026-06-01T13:30:00.500Z");
        for bad in ["tomorrow", "2026-06-01 15:30", "2026-13-01T00:00:00Z", ""] {
            let e = plan(&["--shards", "2", "--start-at", bad]).unwrap_err();
            assert!(e.contains("--start-at"), "{bad}: {e}");
        }
        let e = plan(&[
            "--shards",
            "2",
            "--start-at",
            "2027-01-01T00:00:00Z",
            "--start-delay",
            "5",
        ])
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn names_are_dns_labels_with_room_for_the_pod_index() {
        let ok = plan(&["--shards", "2", "--name", "bench-1", "--namespace", "load"]).unwrap();
        assert_eq!(
            (ok.name.as_str(), ok.namespace.as_deref()),
            ("bench-1", Some("load"))
        );
        for bad in ["Bench", "-a", "a-", "a_b", "a.b", ""] {
            let e = plan(&["--shards", "2", &format!("--name={bad}")]).unwrap_err();
            assert!(e.contains("invalid --name"), "{bad}: {e}");
            let e = plan(&["--shards", "2", &format!("--namespace={bad}")]).unwrap_err();
            assert!(e.contains("invalid --namespace"), "{bad}: {e}");
        }
        let long = "a".repeat(61);
        assert!(plan(&["--shards", "10", "--name", &long]).is_ok());
        let e = plan(&["--shards", "11", "--name", &long]).unwrap_err();
        assert!(e.contains("too long for 11 shards"), "{e}");
        // A run id that is not a label yields a usable default name.
        let p = plan(&["--shards", "1", "--run-id", "My_Run.7-x"]).unwrap();
        assert_eq!(
            (p.run_id.as_str(), p.name.as_str()),
            ("My_Run.7-x", "aiperf-my-run-7")
        );
        assert_eq!(default_name("--------"), "aiperf");
    }

    #[test]
    fn run_ids_are_label_values() {
        let long = "r".repeat(63);
        assert!(plan(&["--shards", "1", "--run-id", &long]).is_ok());
        for bad in ["", "-x", "x.", "a/b", "..", "a b", &"r".repeat(64)] {
            let e = plan(&["--shards", "1", &format!("--run-id={bad}")]).unwrap_err();
            assert!(e.contains("invalid --run-id"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        let cases = [
            ("2", 2.0),
            ("500m", 0.5),
            ("1.5", 1.5),
            (".5", 0.5),
            ("2.", 2.0),
            ("2Gi", 2.0 * 1024f64.powi(3)),
            ("512Mi", 512.0 * 1024f64.powi(2)),
            ("1k", 1e3),
            ("3M", 3e6),
            ("1e3", 1e3),
            ("1E-3", 1e-3),
        ];
        for (s, v) in cases {
            assert_eq!(quantity(s), Ok(v), "{s}");
        }
        for bad in [
            "", "0", "0Gi", "-1", "+1", "2gb", "2g", "Gi", ".", "1.2.3", "NaN", "inf", "1e", "1e+",
            "1 Gi", "1e9999", "2GiB",
        ] {
            assert!(quantity(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cpu_memory_and_sizes_are_checked() {
        let p = plan(&["--shards", "1", "--cpu", "750m", "--memory", "1.5Gi"]).unwrap();
        assert_eq!((p.cpu.as_str(), p.memory.as_str()), ("750m", "1.5Gi"));
        let e = plan(&["--shards", "1", "--cpu", "0.0001"]).unwrap_err();
        assert!(e.contains("less than 1m"), "{e}");
        let e = plan(&["--shards", "1", "--cpu", "two"]).unwrap_err();
        assert!(e.starts_with("invalid --cpu"), "{e}");
        let e = plan(&["--shards", "1", "--memory", "512m"]).unwrap_err();
        assert!(
            e.contains("not a whole number of bytes") && e.contains("512Mi"),
            "{e}"
        );
        let e = plan(&["--shards", "1", "--memory", "2GB"]).unwrap_err();
        assert!(
            e.starts_with("invalid --memory") && e.contains("unknown suffix"),
            "{e}"
        );
        let e = plan(&["--shards", "1", "--results-size", "0"]).unwrap_err();
        assert!(e.starts_with("invalid --results-size"), "{e}");
    }

    #[test]
    fn results_claim_or_a_new_one() {
        let p = plan(&["--shards", "2", "--results-claim", "shared.results"]).unwrap();
        assert_eq!(p.results, Results::Claim("shared.results".into()));
        assert_eq!(p.claim_name(), "shared.results");
        let p = plan(&[
            "--shards",
            "2",
            "--results-size",
            "1Ti",
            "--storage-class",
            "nfs",
        ]);
        assert_eq!(
            p.unwrap().results,
            Results::New {
                size: "1Ti".into(),
                storage_class: Some("nfs".into())
            }
        );
        let e = plan(&[
            "--shards",
            "2",
            "--results-claim",
            "x",
            "--results-size",
            "1Gi",
        ]);
        assert!(e.unwrap_err().contains("cannot be used with"));
        let e = plan(&["--shards", "2", "--results-claim", "Bad_Claim"]).unwrap_err();
        assert!(e.contains("invalid --results-claim"), "{e}");
        let e = plan(&["--shards", "2", "--storage-class", "a..b"]).unwrap_err();
        assert!(e.contains("invalid --storage-class"), "{e}");
        let e = plan(&["--shards", "2", "--image", "my image"]).unwrap_err();
        assert!(e.contains("invalid --image"), "{e}");
        let e = plan(&["--shards", "2", "--env-from-secret", "Not_A_Name"]).unwrap_err();
        assert!(e.contains("invalid --env-from-secret"), "{e}");
        let e = plan(&["--shards", "2", "--anti-affinity", "sometimes"]).unwrap_err();
        assert!(e.contains("--anti-affinity"), "{e}");
    }

    fn docs(yaml: &str) -> Vec<serde_yaml::Value> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect()
    }
    use serde::Deserialize;

    #[test]
    fn the_manifest_holds_the_config_verbatim_and_the_job_its_shards() {
        let texts = [
            "benchmark:\n  url: mock\n",
            "# comment\nbenchmark:\r\n  url: mock   \n\tx: 'y'\n",
            "---\nbenchmark:\n  url: \"mock\"\n...\n",
            "  leading spaces\nunicode: é ✓\ntrailing newlines\n\n\n",
            "no newline at the end",
            "key: |\n  block\n---\nother: doc\n",
        ];
        for text in texts {
            let p = plan(&["--shards", "4", "--run-id", "run-1", "--name", "b"]).unwrap();
            let yaml = manifest(&p, text).unwrap();
            let d = docs(&yaml);
            assert_eq!(d.len(), 3, "{yaml}");
            assert_eq!(d[0]["kind"], "ConfigMap");
            assert_eq!(d[0]["data"][CONFIG_KEY].as_str(), Some(text), "{yaml}");
            assert_eq!(d[1]["kind"], "PersistentVolumeClaim");
            assert_eq!(d[2]["kind"], "Job");
            for doc in &d {
                assert_eq!(doc["metadata"]["labels"][RUN_ID_LABEL], "run-1");
                assert_eq!(doc["metadata"]["labels"][NAME_LABEL], "aiperf");
            }
        }
        let p = plan(&["--shards", "4", "--run-id", "run-1", "--name", "b"]).unwrap();
        let job = &docs(&manifest(&p, "x: 1\n").unwrap())[2];
        let spec = &job["spec"];
        assert_eq!(spec["completionMode"], "Indexed");
        assert_eq!(
            (spec["completions"].as_u64(), spec["parallelism"].as_u64()),
            (Some(4), Some(4))
        );
        assert_eq!(spec["backoffLimit"].as_u64(), Some(0));
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        let c = &pod["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--config",
                "/etc/aiperf/benchmark.yaml",
                "--shard",
                "$(JOB_COMPLETION_INDEX)/4",
                "--run-id",
                "run-1",
                "--start-at=2026-06-01T12:02:01Z",
                "--artifact-dir",
                "/results/run-1/shard-$(JOB_COMPLETION_INDEX)",
                "--ui",
                "none"
            ]
        );
        assert_eq!(c["env"][0]["name"], INDEX_ENV);
        assert_eq!(
            c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
        assert!(c.get("envFrom").is_none(), "no secret, no envFrom");
        let p = plan(&[
            "--shards",
            "1",
            "--env-from-secret",
            "openai",
            "--env-from-secret",
            "hf",
        ])
        .unwrap();
        let job = &docs(&manifest(&p, "x: 1\n").unwrap())[2];
        let from = &job["spec"]["template"]["spec"]["containers"][0]["envFrom"];
        assert_eq!(from[0]["secretRef"]["name"], "openai");
        assert_eq!(from[1]["secretRef"]["name"], "hf");
        assert_eq!(pod["volumes"][0]["configMap"]["name"], "b-config");
        assert_eq!(
            pod["volumes"][1]["persistentVolumeClaim"]["claimName"],
            "b-results"
        );
    }

    #[test]
    fn anti_affinity_and_an_existing_claim() {
        let base = ["--shards", "2", "--run-id", "r", "--results-claim", "c"];
        let pod = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            let d = docs(&manifest(&plan(&a).unwrap(), "x: 1\n").unwrap());
            assert_eq!(d.len(), 2, "no claim of its own");
            d[1]["spec"]["template"]["spec"].clone()
        };
        let required = pod(&[]);
        let term = &required["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(term["labelSelector"]["matchLabels"][RUN_ID_LABEL], "r");
        let preferred = pod(&["--anti-affinity", "preferred"]);
        let anti = &preferred["affinity"]["podAntiAffinity"];
        assert!(anti
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .is_none());
        let w = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            w["podAffinityTerm"]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert!(pod(&["--anti-affinity", "none"]).get("affinity").is_none());
        assert_eq!(
            required["volumes"][1]["persistentVolumeClaim"]["claimName"],
            "c"
        );
    }

    #[test]
    fn env_references_are_found_in_values() {
        let text = "benchmark:\n  api_key: ${KEY}\n  header: ['A:${H:-x}', plain]\n  \
                    literal: $${NOT}\n# ${COMMENT}\n";
        assert_eq!(env_references(text), ["H", "KEY"]);
    }
}
