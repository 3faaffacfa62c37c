//! Command-line definitions only: what the user can type. Every number goes through a value
//! parser of `crate::units` (checked once, at parse time, against a documented bound, with
//! the flag or the config file's line named); meaning and checks across flags live in
//! `config`, so the same flags can also come from a YAML file.

pub mod aiperf_options;

use std::path::PathBuf;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::dataset::{CustomDatasetType, SamplingStrategy};
use crate::endpoint::{
    ConnectionReuseStrategy, EndpointType, ModelSelectionStrategy, TransportKind, UrlStrategy,
    WaitMode,
};
use crate::export::{ExportLevel, LogLevel, UiType};
use crate::mock;
use crate::mock::MockConfig;
use crate::timing::schedule::RequestRateMode;
use crate::units;

#[derive(Debug, Parser)]
#[command(
    name = "aiperf",
    version,
    about = "Benchmark LLM inference servers (OpenAI-compatible), with plugins",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Run `profile` with this YAML config file (same as `aiperf profile --config FILE`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a benchmark against an inference server.
    Profile(Box<ProfileArgs>),
    /// Run the built-in mock OpenAI-compatible server.
    ///
    /// It serves POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses,
    /// GET /health, /v1/models, GET /metrics (what it served, in Prometheus text under
    /// vLLM's metric names) and GET /mock/stats (its counters as JSON: `requests` received,
    /// `errors` of --error-rate, `faults` injected). Every flag is also an option
    /// of `aiperf profile --url 'mock?KEY=VALUE&...'` (the in-process mock), checked by the
    /// same code: the flag's name with `_` for `-`, `tokens` for --default-tokens and `seed`
    /// for --random-seed.
    MockServer(MockServerArgs),
    /// Inspect plugins: `list`, `check NAME`.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Rebuild the HTML report, and a picture of each of its charts, from artifact
    /// directories (this tool's or Python AIPerf's). One run directory: its report; several:
    /// one report comparing them; a sweep's directory: the sweep's report.
    Plot(PlotArgs),
    /// Merge the artifact directories of a sharded run's shards (`--shard I/N`) into one,
    /// in the same layout: statistics computed exactly from every shard's per-request
    /// records, counters summed, errors united, each shard's client-health verdict kept.
    Merge(MergeArgs),
    /// Run one benchmark sharded across a Kubernetes cluster: `manifest` prints the objects
    /// to apply (docs/scale-out.md).
    #[command(subcommand)]
    Kube(KubeCommand),
}

#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shards' artifact directories (each holding profile_export_aiperf.json with its
    /// shard section, and profile_export.jsonl): all N shards of one run, in any order.
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where the merged artifacts go (created; not one of the shards).
    #[arg(long, short = 'o', value_name = "DIR", required = true)]
    pub output: PathBuf,
    /// A config file whose `plugins:` section runs on the merged result: `benchmark_start`,
    /// each phase's `phase_complete` and `benchmark_complete`, once (so a Pushgateway gets
    /// one run, not N parts).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Do not write report.html.
    #[arg(long)]
    pub no_html: bool,
}

#[derive(Debug, Subcommand)]
pub enum KubeCommand {
    /// Print (or write) a multi-document YAML manifest: a ConfigMap holding the config file,
    /// an Indexed Job of N shards (`aiperf --config ... --shard $(JOB_COMPLETION_INDEX)/N
    /// --run-id ID --start-at T`), and the results volume they write to.
    Manifest(KubeManifestArgs),
}

/// `--anti-affinity`: how strongly the shards avoid sharing a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AntiAffinity {
    /// Never two shards on one node (a shard stays Pending while no free node is left).
    Required,
    /// The scheduler spreads shards across nodes when it can.
    Preferred,
    /// No rule: shards may share a node.
    None,
}

/// `aiperf kube manifest`. The values are checked by `kube` (bad ones are usage errors).
#[derive(Debug, Clone, Args)]
pub struct KubeManifestArgs {
    /// How many shards (pods) run the benchmark together: 1 to 1024.
    #[arg(long, value_name = "N", value_parser = units::shard_count)]
    pub shards: u32,
    /// The benchmark's YAML config file (validated here; put in a ConfigMap verbatim).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Write the manifest to this file (atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Container image holding the aiperf binary as its entrypoint (default:
    /// aiperf:<this version>).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Name of the Job (and prefix of the other objects): a DNS-1123 label (default:
    /// aiperf-<first 8 characters of the run id>).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Namespace of every object (default: kubectl's current namespace).
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The id every shard of the run shares (default: a new UUID). Letters, digits, `-`, `_`,
    /// `.`, at most 63 characters, starting and ending with a letter or digit.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,
    /// When every shard starts its load, an RFC 3339 time in the future (default: now +
    /// --start-delay).
    #[arg(long, value_name = "TIME", conflicts_with = "start_delay")]
    pub start_at: Option<String>,
    /// Seconds from now to the shards' common start, when --start-at is not given: time to
    /// schedule the pods and pull the image.
    #[arg(long, value_name = "SECONDS", default_value = "120", value_parser = units::positive_seconds)]
    pub start_delay: Duration,
    /// CPU of each shard, request and limit (a Kubernetes quantity: 2, 1.5, 500m).
    #[arg(long, value_name = "QUANTITY", default_value = "2")]
    pub cpu: String,
    /// Memory of each shard, request and limit (a Kubernetes quantity: 2Gi, 512Mi).
    #[arg(long, value_name = "QUANTITY", default_value = "2Gi")]
    pub memory: String,
    /// Pod anti-affinity on kubernetes.io/hostname between the run's shards.
    #[arg(long, value_enum, default_value = "required")]
    pub anti_affinity: AntiAffinity,
    /// An existing PersistentVolumeClaim for the results, mounted by every shard (it must
    /// be writable from every node: ReadWriteMany). Without it, the manifest holds one.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["results_size", "storage_class"])]
    pub results_claim: Option<String>,
    /// Size of the ReadWriteMany PersistentVolumeClaim the manifest creates.
    #[arg(long, value_name = "QUANTITY", default_value = "10Gi")]
    pub results_size: String,
    /// Storage class of that claim (one that offers ReadWriteMany; default: the cluster's).
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// A Secret whose keys become the container's environment variables (for the config's
    /// `${VAR}`s, such as an API key). Repeatable.
    #[arg(long, value_name = "SECRET")]
    pub env_from_secret: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Artifact directories: a run's (holding profile_export_aiperf.json and, for the
    /// distributions and timelines, profile_export.jsonl), a directory of runs, or a
    /// sweep's (holding sweep_aggregate.json).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where report.html and the pictures go (default: DIR/plots for the first DIR).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Picture format of each chart.
    #[arg(long, value_enum, default_value = "png")]
    pub format: crate::report::Format,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Show every discovered plugin and whether it is enabled.
    List {
        /// Config file whose `plugins:` section decides what is enabled.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Start a plugin, run its handshake and print the result.
    Check {
        name: String,
        /// Config file holding the plugin's `plugins.<name>` section.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Every flag of `aiperf profile`, in groups shown under their own heading in `--help`. The
/// names follow NVIDIA AIPerf's so scripts carry over. Each one can also be written under
/// `benchmark:` in the config file, `-` turned into `_`. Every numeric flag has a value
/// parser from `crate::units`, which bounds it.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// YAML config file; flags given after it override its `benchmark:` section.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten, next_help_heading = "Endpoint")]
    pub endpoint: EndpointArgs,
    #[command(flatten, next_help_heading = "Input")]
    pub input: InputArgs,
    #[command(flatten, next_help_heading = "Input Sequence Length (ISL)")]
    pub isl: IslArgs,
    #[command(flatten, next_help_heading = "Output Sequence Length (OSL)")]
    pub osl: OslArgs,
    #[command(flatten, next_help_heading = "Prefix Prompt")]
    pub prefix: PrefixArgs,
    #[command(flatten, next_help_heading = "Load Generator")]
    pub load: LoadArgs,
    #[command(flatten, next_help_heading = "Warmup")]
    pub warmup: WarmupArgs,
    #[command(flatten, next_help_heading = "Conversation Input")]
    pub conversation: ConversationArgs,
    #[command(flatten, next_help_heading = "Request Cancellation")]
    pub cancellation: CancellationArgs,
    #[command(flatten, next_help_heading = "Output")]
    pub output: OutputArgs,
    #[command(flatten, next_help_heading = "Plugins")]
    pub plugins: PluginArgs,
    #[command(flatten, next_help_heading = "Server Metrics")]
    pub server_metrics: ServerMetricsArgs,
    #[command(flatten, next_help_heading = "GPU Telemetry")]
    pub gpu_telemetry: GpuTelemetryArgs,
    #[command(flatten, next_help_heading = "Search")]
    pub search: SearchArgs,
    #[command(flatten, next_help_heading = "Multi-Run")]
    pub multi_run: MultiRunArgs,
    #[command(flatten, next_help_heading = "Scale-out")]
    pub scale: ScaleArgs,
}

/// One run split across processes or machines (docs/scale-out.md).
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Run shard I of N (I from 0): this process makes its exact part of the run (workers,
    /// counts split; a rate's arrivals and a trace's entries dealt round-robin). Merge the
    /// shards' artifact directories with `aiperf merge`.
    #[arg(long, value_name = "I/N", value_parser = crate::shard::parse_shard)]
    pub shard: Option<crate::shard::Shard>,
    /// The id all shards of one run share (the report's benchmark_id; `aiperf merge` checks
    /// it). Default: a new UUID per run; with --shard, derived from the config and
    /// --start-at, so shards started alike agree.
    #[arg(long, value_name = "ID", value_parser = crate::shard::parse_run_id)]
    pub run_id: Option<String>,
    /// Start the load at this wall-clock time (RFC 3339, e.g. 2026-12-02T10:00:00Z) after
    /// preparing; a process that gets there late says by how much, and its open-loop sends
    /// show it as send lag.
    #[arg(long, value_name = "TIME", value_parser = crate::shard::parse_start_at)]
    pub start_at: Option<u64>,
    /// The most worker threads of the async runtime that sends the requests and reads the
    /// responses (AIPerf's worker count), at most one per core. Default: one per core
    /// (tokio's, which TOKIO_WORKER_THREADS overrides). On a small machine shared with the
    /// server, fewer leave it more of the cores.
    #[arg(long, value_name = "N", visible_alias = "max-workers", value_parser = units::workers)]
    pub workers_max: Option<usize>,
}

/// `--search-recipe`: what the search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchRecipe {
    /// The largest --concurrency meeting the SLO (closed loop; AIPerf's name).
    #[value(
        name = "max-concurrency-under-sla",
        alias = "max-concurrency-under-slo"
    )]
    MaxConcurrencyUnderSla,
    /// The largest --request-rate meeting the SLO (open loop).
    #[value(name = "max-rate-under-slo", alias = "max-rate-under-sla")]
    MaxRateUnderSlo,
    /// The Pareto front (throughput vs latency) over the sweep's points: comma lists of
    /// --isl-osl-pairs, --concurrency, --request-rate, --isl, --osl.
    #[value(alias = "pareto-sweep")]
    Pareto,
}

/// The SLO search (docs/sweeps.md#search): runs the benchmark at several loads and reports
/// the largest that meets the SLO.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Search for the largest load meeting the SLO (--goodput with
    /// --slo-attainment-fraction, and/or the SLA flags).
    #[arg(long, value_name = "RECIPE", value_enum)]
    pub search_recipe: Option<SearchRecipe>,
    /// The range searched: LO:HI, or DIMENSION:LO,HI[:int|float] with DIMENSION
    /// `concurrency` or `request_rate` (default: 1 to 1024).
    #[arg(long, value_name = "SPACE", value_parser = crate::search::parse_space)]
    pub search_space: Option<crate::search::SpaceArg>,
    /// At most this many benchmark runs (default 50).
    #[arg(long, visible_alias = "search-max-runs", value_name = "N", value_parser = crate::search::parse_max_runs)]
    pub search_max_iterations: Option<u32>,
    /// The share of requests that must be good (meet every --goodput objective) for a
    /// load to pass, in (0, 1] (default 0.95).
    #[arg(long, visible_alias = "slo-min-good-fraction", value_name = "FRACTION", value_parser = crate::search::parse_fraction)]
    pub slo_attainment_fraction: Option<f64>,
    /// SLA: p95 time to first token below MS.
    #[arg(long, value_name = "MS", value_parser = crate::search::parse_sla_ms)]
    pub ttft_sla_ms: Option<f64>,
    /// SLA: p95 inter-token latency below MS.
    #[arg(long, value_name = "MS", value_parser = crate::search::parse_sla_ms)]
    pub itl_sla_ms: Option<f64>,
    /// SLA: p95 inter-token latency below MS (AIPerf's alias of --itl-sla-ms).
    #[arg(long, value_name = "MS", value_parser = crate::search::parse_sla_ms)]
    pub tpot_sla_ms: Option<f64>,
    /// SLA: p99 request latency below MS.
    #[arg(long, value_name = "MS", value_parser = crate::search::parse_sla_ms)]
    pub e2e_sla_ms: Option<f64>,
    /// An SLA filter on a run's aggregate, TAG:STAT:OP:THRESHOLD (STAT avg, p50, p90, p95 or
    /// p99; OP lt, le, gt or ge), e.g. time_to_first_token:p95:lt:200; repeatable.
    #[arg(long, value_name = "TAG:STAT:OP:THRESHOLD", value_parser = crate::search::parse_sla)]
    pub search_sla: Vec<crate::search::Sla>,
}

/// Sweeps (comma lists of --concurrency, --request-rate, --isl, --osl, --isl-osl-pairs) and
/// repeated runs (docs/sweeps.md).
#[derive(Debug, Clone, Args)]
pub struct MultiRunArgs {
    /// Runs of each point; with more than one, an aggregate with mean, standard deviation
    /// and a Student-t confidence interval of every metric statistic.
    #[arg(long, value_name = "N", default_value = "1", value_parser = units::profile_runs)]
    pub num_profile_runs: u32,
    /// Pause between the runs of a point (seconds).
    #[arg(long, value_name = "S", default_value = "0", value_parser = units::seconds)]
    pub profile_run_cooldown_seconds: Duration,
    /// Confidence level of the intervals of repeated runs.
    #[arg(long, value_name = "P", default_value = "0.95", value_parser = units::confidence_level)]
    pub confidence_level: f64,
    /// Warm up before the first run only (of all points and trials): the default.
    #[arg(long, overrides_with = "no_profile_run_disable_warmup_after_first")]
    pub profile_run_disable_warmup_after_first: bool,
    /// Warm up before every run (every point, every trial).
    #[arg(long)]
    pub no_profile_run_disable_warmup_after_first: bool,
    /// Repeated runs without --random-seed share one seed (the default).
    #[arg(long, overrides_with = "no_set_consistent_seed")]
    pub set_consistent_seed: bool,
    /// Repeated runs without --random-seed each draw their own seed.
    #[arg(long)]
    pub no_set_consistent_seed: bool,
    /// Give each trial its own seed (the seed plus the trial index).
    #[arg(long, overrides_with = "no_vary_seed_per_trial")]
    pub vary_seed_per_trial: bool,
    /// Every trial uses the same seed (the default).
    #[arg(long)]
    pub no_vary_seed_per_trial: bool,
    /// Pause between the points of a sweep (seconds).
    #[arg(long, value_name = "S", default_value = "0", value_parser = units::seconds)]
    pub parameter_sweep_cooldown_seconds: Duration,
    /// Every point of a sweep uses the same seed (the default).
    #[arg(long, overrides_with = "no_parameter_sweep_same_seed")]
    pub parameter_sweep_same_seed: bool,
    /// Give each point its own seed (the seed plus the point index).
    #[arg(long)]
    pub no_parameter_sweep_same_seed: bool,
    /// With --num-profile-runs: `repeated` runs the whole sweep once per trial; `independent`
    /// runs every trial of a point before the next point.
    #[arg(long, value_enum, value_name = "MODE", default_value = "repeated")]
    pub parameter_sweep_mode: crate::sweep::ParameterSweepMode,
    /// How lists combine: `grid` (every combination) or `zip` (index by index; the lists
    /// must have the same length).
    #[arg(long, value_enum, value_name = "TYPE", default_value = "grid")]
    pub sweep_type: crate::sweep::SweepType,
    /// Do not print the table of the sweep's points at the end.
    #[arg(long)]
    pub no_sweep_table: bool,
    /// The throughput axis of the sweep's Pareto front (higher is better):
    /// output_token_throughput or request_throughput.
    #[arg(long, value_name = "METRIC", value_parser = |s: &str| crate::sweep::aggregate::parse_pareto_column(s, true))]
    pub pareto_throughput: Option<&'static str>,
    /// The latency axis of the sweep's Pareto front (lower is better): a key metric such as
    /// request_latency_p50 (the default), time_to_first_token_p99, inter_token_latency_p50.
    #[arg(long, value_name = "METRIC", value_parser = |s: &str| crate::sweep::aggregate::parse_pareto_column(s, false))]
    pub pareto_latency: Option<&'static str>,
    /// ISL/OSL pairs to sweep, e.g. `128/128,2048/512` (instead of --isl and --osl).
    #[arg(long, value_name = "ISL/OSL[,...]", value_delimiter = ',', action = clap::ArgAction::Set, value_parser = units::isl_osl_pair)]
    pub isl_osl_pairs: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// Model name sent in requests; several (comma-separated or repeated) are spread over
    /// the dataset entries by --model-selection-strategy.
    #[arg(
        short = 'm',
        long = "model",
        visible_alias = "model-names",
        value_name = "NAME[,NAME...]",
        value_delimiter = ','
    )]
    pub model: Vec<String>,
    /// With several models: `round_robin` (entry n gets model n mod count) or `random` (a
    /// seeded draw per entry); every turn of a conversation keeps its model.
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub model_selection_strategy: Option<ModelSelectionStrategy>,
    /// Server URL; repeat for several servers (round-robin). `mock` starts the built-in mock.
    #[arg(short = 'u', long = "url", value_name = "URL")]
    pub url: Vec<String>,
    /// API shape of the endpoint.
    #[arg(long, value_enum, default_value = "chat")]
    pub endpoint_type: EndpointType,
    /// Custom path instead of the endpoint type's default (e.g. /v1/chat/completions).
    #[arg(long, visible_alias = "custom-endpoint")]
    pub endpoint: Option<String>,
    /// Ask for a streamed (SSE) response: needed for TTFT and ITL.
    #[arg(long)]
    pub streaming: bool,
    /// Sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "AIPERF_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Extra HTTP header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// Per-request timeout in seconds.
    #[arg(long, value_name = "S", default_value = "600", value_parser = units::positive_seconds)]
    pub request_timeout_seconds: Duration,
    /// Send `max_tokens` instead of `max_completion_tokens`.
    #[arg(long)]
    pub use_legacy_max_tokens: bool,
    /// JSON request template for `--endpoint-type template` (inline, or @FILE): `{{text}}`,
    /// `{{max_tokens}}` and `{{model}}` are filled in.
    #[arg(long, value_name = "JSON|@FILE")]
    pub payload_template: Option<String>,
    /// JSON pointer to the output text in a `template` response (or each SSE event).
    #[arg(long, value_name = "POINTER", default_value = "/choices/0/text")]
    pub response_field: String,
    /// Count tokens from the server's `usage`.
    #[arg(long)]
    pub use_server_token_count: bool,
    /// Do not add `stream_options: {"include_usage": true}` to streamed chat/completions
    /// requests (for servers that reject it).
    #[arg(long)]
    pub no_stream_usage: bool,
    /// Before the first phase, wait up to this many seconds for the server to be ready (0:
    /// do not wait).
    #[arg(long, value_name = "S", default_value = "0", value_parser = units::seconds)]
    pub wait_for_model_timeout: Duration,
    /// What readiness means: `models` (GET /v1/models lists the model), `inference` (a
    /// one-token request is answered below 500) or `both`.
    #[arg(long, value_enum, value_name = "MODE")]
    pub wait_for_model_mode: Option<WaitMode>,
    /// Seconds between readiness probes.
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub wait_for_model_interval: Option<Duration>,
    /// How requests are spread over several --url: round-robin (the only strategy).
    #[arg(long, value_enum, value_name = "STRATEGY")]
    pub url_strategy: Option<UrlStrategy>,
    /// Transport protocol: http (the only one; https URLs included).
    #[arg(
        long,
        value_enum,
        visible_alias = "transport-type",
        value_name = "PROTOCOL"
    )]
    pub transport: Option<TransportKind>,
    /// Also trust the certificates in this PEM file for https:// (a private CA, or the
    /// server's self-signed certificate); repeatable, a file may hold several.
    #[arg(long, value_name = "PATH")]
    pub ssl_ca_file: Vec<PathBuf>,
    /// Do not verify https:// server certificates (warns at start).
    #[arg(long)]
    pub ssl_insecure: bool,
    /// How requests share connections: `pooled` (keep-alive connections reused by any
    /// request), `never` (a new connection per request, closed after it),
    /// `sticky-user-sessions` (one connection per conversation, closed after its last turn).
    #[arg(long, value_enum, default_value = "pooled")]
    pub connection_reuse_strategy: ConnectionReuseStrategy,
    /// The header carrying the conversation's id, in place of `X-Correlation-ID`.
    #[arg(long, value_name = "NAME")]
    pub session_header: Option<String>,
    /// Time responses when this client reads them, not by the kernel's receive stamps
    /// (http:// on Linux uses the stamps: the client's own scheduling delay then stays out
    /// of TTFT and ITL).
    #[arg(long)]
    pub no_kernel_timestamps: bool,
    /// Source addresses for the client's http:// connections, spread round-robin: a range
    /// `127.0.0.2-127.0.0.9` (within one /24, or the last 16 bits of IPv6) or a comma list
    /// (past one address's ephemeral ports; loopback targets get a spread automatically).
    #[arg(long, value_name = "LIST", value_parser = crate::transport::source::LocalAddresses::parse)]
    pub local_addresses: Option<crate::transport::source::LocalAddresses>,
}

#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Extra payload fields: `key:value` (value parsed as JSON when it can be) or a JSON
    /// object; several in one flag (`--extra-inputs temperature:0.7 top_p:0.9`) or repeated.
    #[arg(long, value_name = "KEY:VALUE|JSON", num_args = 1..)]
    pub extra_inputs: Vec<String>,
    /// Requests from a file instead of synthetic prompts (see --custom-dataset-type).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Format of --input-file (default single_turn).
    #[arg(long, value_enum)]
    pub custom_dataset_type: Option<CustomDatasetType>,
    /// Send each request at its trace timestamp (on by default when the file has them).
    #[arg(long, overrides_with = "no_fixed_schedule")]
    pub fixed_schedule: bool,
    /// Ignore trace timestamps; load by --concurrency or --request-rate instead.
    #[arg(long)]
    pub no_fixed_schedule: bool,
    /// Shift the trace so its first timestamp is time zero (AIPerf's default is to take
    /// timestamps as offsets from the start of the run).
    #[arg(long)]
    pub fixed_schedule_auto_offset: bool,
    /// Replay only timestamps at or after this offset (ms); it becomes time zero.
    #[arg(long, value_name = "MS", value_parser = units::offset_ms)]
    pub fixed_schedule_start_offset: Option<f64>,
    /// Replay only timestamps at or before this offset (ms).
    #[arg(long, value_name = "MS", value_parser = units::offset_ms)]
    pub fixed_schedule_end_offset: Option<f64>,
    /// Replay a trace this many times faster (2 = twice as fast).
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = units::speedup)]
    pub replay_speedup: f64,
    /// How dataset entries are picked for each request.
    #[arg(long, value_enum)]
    pub dataset_sampling_strategy: Option<SamplingStrategy>,
    /// Number of distinct prompts (synthetic conversations) generated and cycled through
    /// (default: --conversation-num if given, else 100).
    #[arg(
        long,
        value_name = "N",
        visible_alias = "num-prompts",
        value_parser = units::dataset_entries
    )]
    pub num_dataset_entries: Option<usize>,
    /// Inputs per embeddings request.
    #[arg(
        short = 'b',
        long,
        value_name = "N",
        default_value_t = 1,
        visible_aliases = ["prompt-batch-size", "batch-size-text"],
        value_parser = units::batch_size
    )]
    pub batch_size: u32,
    /// Seed for every random choice, so a run's dataset is reproducible.
    #[arg(long, value_name = "N")]
    pub random_seed: Option<u64>,
    /// Tokenizer: `builtin` (o200k_base, embedded), `builtin:cl100k_base`, a tokenizer.json
    /// path, or a Hugging Face id. Default: the first --model's, when it is a Hugging Face id
    /// ORG/NAME (built-in, with a warning, if it cannot be had); else builtin.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Hugging Face revision (branch, tag or commit) of a hub tokenizer.
    #[arg(long, value_name = "REV")]
    pub tokenizer_revision: Option<String>,
    /// Accepted for AIPerf compatibility: no code is ever run; the tokenizer.json is read.
    #[arg(long)]
    pub tokenizer_trust_remote_code: bool,
    /// Service level objectives for goodput: space-separated `TAG:VALUE` pairs of per-request
    /// metrics in their display unit, e.g. "time_to_first_token:200 request_latency:3000"
    /// (ms). A request is good when it succeeded and meets all of them: at most VALUE, or at
    /// least VALUE for output_token_throughput_per_user and output_sequence_length.
    #[arg(long, value_name = "TAG:VALUE ...", value_parser = crate::metrics::goodput::parse)]
    pub goodput: Option<crate::metrics::Goodput>,
}

#[derive(Debug, Clone, Args)]
pub struct IslArgs {
    /// Mean prompt length in tokens (synthetic prompts).
    #[arg(
        long,
        value_name = "N",
        visible_aliases = ["prompt-input-tokens-mean", "synthetic-input-tokens-mean"],
        default_value = "550",
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        value_parser = units::tokens
    )]
    pub isl: Vec<u32>,
    /// Standard deviation of the prompt length.
    #[arg(
        long,
        value_name = "N",
        visible_aliases = ["prompt-input-tokens-stddev", "synthetic-input-tokens-stddev"],
        default_value_t = 0.0,
        value_parser = units::token_stddev
    )]
    pub isl_stddev: f64,
    /// Tokens per `hash_ids` block in a mooncake trace.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 512,
        visible_aliases = ["prompt-input-tokens-block-size", "synthetic-input-tokens-block-size"],
        value_parser = units::tokens
    )]
    pub isl_block_size: u32,
}

#[derive(Debug, Clone, Args)]
pub struct OslArgs {
    /// Output tokens asked for (max_completion_tokens). Unset: the server decides. A comma
    /// list sweeps it (with an --isl list: zipped or crossed by --sweep-type).
    #[arg(
        long,
        value_name = "N",
        visible_aliases = ["prompt-output-tokens-mean", "output-tokens-mean"],
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        value_parser = units::tokens
    )]
    pub osl: Vec<u32>,
    /// Standard deviation of the output length.
    #[arg(
        long,
        value_name = "N",
        visible_aliases = ["prompt-output-tokens-stddev", "output-tokens-stddev"],
        default_value_t = 0.0,
        value_parser = units::token_stddev
    )]
    pub osl_stddev: f64,
}

#[derive(Debug, Clone, Args)]
pub struct PrefixArgs {
    /// Length in tokens of a shared prefix prepended to synthetic prompts.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        visible_alias = "prompt-prefix-length",
        value_parser = units::tokens_or_zero
    )]
    pub prefix_prompt_length: u32,
    /// Number of distinct shared prefixes (each prompt gets one of them).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        visible_aliases = ["prompt-prefix-pool-size", "prefix-prompt-pool-size"],
        value_parser = units::prefix_prompts
    )]
    pub num_prefix_prompts: u32,
    /// A system message, this text, at the start of every conversation (chat, responses).
    #[arg(long, value_name = "TEXT")]
    pub system_prompt: Option<String>,
    /// Like --system-prompt, with the text read from a UTF-8 file.
    #[arg(long, value_name = "FILE")]
    pub system_prompt_file: Option<PathBuf>,
    /// A synthetic system message of N tokens, the same for every conversation (synthetic
    /// prompts; chat, responses).
    #[arg(long, value_name = "N", value_parser = units::tokens)]
    pub shared_system_prompt_length: Option<u32>,
    /// A synthetic user message of N tokens opening each conversation, different for each
    /// one (synthetic prompts; chat, responses).
    #[arg(long, value_name = "N", value_parser = units::tokens)]
    pub user_context_prompt_length: Option<u32>,
}

/// How many conversations are sent, and synthetic multi-turn conversations (AIPerf's
/// "Conversation Input"). Each turn is one request.
#[derive(Debug, Clone, Args)]
pub struct ConversationArgs {
    /// Conversations in the profiling phase: once this many have started no new one starts,
    /// and those started are sent whole (with --request-count too, whichever limit comes
    /// first). Synthetic prompts: also the number generated, unless --num-dataset-entries.
    #[arg(
        long,
        value_name = "N",
        visible_aliases = ["num-conversations", "num-sessions"],
        value_parser = units::conversation_count
    )]
    pub conversation_num: Option<u64>,
    /// Mean turns of a synthetic conversation (normal, rounded up, at least 1).
    #[arg(
        long,
        value_name = "N",
        visible_alias = "session-turns-mean",
        default_value_t = 1,
        value_parser = units::turns
    )]
    pub conversation_turn_mean: u32,
    /// Standard deviation of the turns of a synthetic conversation.
    #[arg(
        long,
        value_name = "N",
        visible_alias = "session-turns-stddev",
        default_value_t = 0,
        value_parser = units::turns_stddev
    )]
    pub conversation_turn_stddev: u32,
    /// Mean wait in ms after a reply before a synthetic conversation's next turn.
    #[arg(
        long,
        value_name = "MS",
        visible_alias = "session-turn-delay-mean",
        default_value_t = 0.0,
        value_parser = units::delay_ms
    )]
    pub conversation_turn_delay_mean: f64,
    /// Standard deviation of that wait, in ms.
    #[arg(
        long,
        value_name = "MS",
        visible_alias = "session-turn-delay-stddev",
        default_value_t = 0.0,
        value_parser = units::delay_ms
    )]
    pub conversation_turn_delay_stddev: f64,
    /// Every synthetic turn delay is multiplied by this.
    #[arg(
        long,
        value_name = "X",
        visible_alias = "session-delay-ratio",
        default_value_t = 1.0,
        value_parser = units::delay_ratio
    )]
    pub conversation_turn_delay_ratio: f64,
    /// Conversations in the warmup phase (with --warmup-request-count too, whichever limit
    /// comes first).
    #[arg(
        long,
        value_name = "N",
        help_heading = "Warmup",
        value_parser = units::conversation_count
    )]
    pub num_warmup_sessions: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Number of requests in flight at once; a comma list (`1,4,16`) sweeps it.
    #[arg(long, value_name = "N[,N...]", value_delimiter = ',', action = clap::ArgAction::Set, value_parser = units::concurrency)]
    pub concurrency: Vec<usize>,
    /// Requests per second (open loop); combined with --concurrency as a cap. A comma list
    /// (`10,20,40`) sweeps it.
    #[arg(long, value_name = "R[,R...]", value_delimiter = ',', action = clap::ArgAction::Set, value_parser = units::rate)]
    pub request_rate: Vec<f64>,
    /// Arrival process for --request-rate (default poisson).
    #[arg(long, value_enum, visible_alias = "arrival-pattern")]
    pub request_rate_mode: Option<RequestRateMode>,
    /// Gamma shape for `--request-rate-mode gamma`: 1 is Poisson, larger is smoother.
    #[arg(
        long,
        value_name = "K",
        default_value_t = 1.0,
        visible_alias = "vllm-burstiness",
        value_parser = units::smoothness
    )]
    pub arrival_smoothness: f64,
    /// Ramp the request rate linearly from 0 to --request-rate over this many seconds.
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub request_rate_ramp_duration: Option<Duration>,
    /// Ramp concurrency linearly from 1 to --concurrency over this many seconds.
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub concurrency_ramp_duration: Option<Duration>,
    /// Number of requests in the profiling phase (default 10 when no duration is given).
    #[arg(
        long,
        value_name = "N",
        visible_alias = "num-requests",
        value_parser = units::request_count
    )]
    pub request_count: Option<u64>,
    /// Stop sending after this many seconds.
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub benchmark_duration: Option<Duration>,
    /// Stop sending when more than this share (0 to 1) of the profiling requests finished so
    /// far failed, once max(10, --concurrency) have finished; the run then exits 1.
    #[arg(long, value_name = "RATIO", value_parser = units::ratio)]
    pub failed_request_threshold: Option<f64>,
    /// After --benchmark-duration, how long in-flight requests may finish (seconds).
    #[arg(long, value_name = "S", default_value = "30", value_parser = units::seconds)]
    pub benchmark_grace_period: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct WarmupArgs {
    /// Requests in a warmup phase before profiling, kept out of the summary.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        visible_alias = "num-warmup-requests",
        value_parser = units::request_count_or_zero
    )]
    pub warmup_request_count: u64,
    /// Warmup phase length in seconds (instead of, or with, a request count).
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub warmup_duration: Option<Duration>,
    /// Concurrency during warmup (default: --concurrency).
    #[arg(long, value_name = "N", value_parser = units::concurrency)]
    pub warmup_concurrency: Option<usize>,
    /// Request rate during warmup (default: --request-rate).
    #[arg(long, value_name = "R", value_parser = units::rate)]
    pub warmup_request_rate: Option<f64>,
    /// Arrival process of the warmup's request rate (default: --request-rate-mode).
    #[arg(long, value_enum, value_name = "MODE")]
    pub warmup_arrival_pattern: Option<RequestRateMode>,
    /// Ramp the warmup's request rate from 0 over this many seconds.
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub warmup_request_rate_ramp_duration: Option<Duration>,
    /// Ramp the warmup's concurrency from 1 over this many seconds.
    #[arg(long, value_name = "S", value_parser = units::positive_seconds)]
    pub warmup_concurrency_ramp_duration: Option<Duration>,
    /// After a timed warmup, how long its in-flight requests may finish (seconds; default:
    /// --benchmark-grace-period).
    #[arg(long, value_name = "S", value_parser = units::seconds)]
    pub warmup_grace_period: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct CancellationArgs {
    /// Percent of requests to cancel after --request-cancellation-delay.
    #[arg(long, value_name = "PCT", value_parser = units::percent)]
    pub request_cancellation_rate: Option<f64>,
    /// Seconds after sending at which a request chosen for cancellation is cancelled.
    #[arg(long, value_name = "S", default_value = "0", value_parser = units::seconds)]
    pub request_cancellation_delay: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Where artifacts are written (default artifacts/<model>-<endpoint>-<load>).
    #[arg(long, value_name = "DIR", visible_alias = "output-artifact-dir")]
    pub artifact_dir: Option<PathBuf>,
    /// Progress display: `dashboard` (a live terminal dashboard on stdout), `simple` (a
    /// progress bar on stderr) or `none`. Default: dashboard when stdout is a terminal,
    /// simple when only stderr is, else none.
    #[arg(long, value_name = "UI", visible_alias = "ui-type", value_parser = ui_type)]
    pub ui: Option<UiType>,
    /// Base name of the exported files, as AIPerf: `foo` writes foo.json, foo.csv,
    /// foo.jsonl and foo_console.txt (a known suffix such as `.json` is dropped first).
    #[arg(long, value_name = "NAME", visible_alias = "profile-export-file")]
    pub profile_export_prefix: Option<String>,
    /// Which files: `summary` (JSON, CSV, console text, inputs) or `records` (also the
    /// per-request JSONL).
    #[arg(
        long,
        value_enum,
        default_value = "records",
        visible_alias = "profile-export-level"
    )]
    pub export_level: ExportLevel,
    /// Log more (-v: debug, -vv: trace).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Same as -vv.
    #[arg(long)]
    pub extra_verbose: bool,
    /// Also show the HTTP timing metrics (http_req_*: blocked, DNS, connecting, sending,
    /// waiting, receiving, duration) in the console table.
    #[arg(long)]
    pub show_trace_timing: bool,
    /// Write outputs.json: every profiling request's generated text, with its ids, times,
    /// ISL, OSL, latency, TTFT and ITL (held in memory until the end of the run).
    #[arg(long)]
    pub export_outputs_json: bool,
    /// Log level of the console and of logs/aiperf.log (AIPerf's names); wins over -v.
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Split the profiling phase into time slices of this many seconds and report every
    /// metric per slice (profile_export_aiperf_timeslices.json and .csv). A request belongs
    /// to the slice holding its start; slices are aligned on the wall clock, as AIPerf's.
    #[arg(long, value_name = "SECONDS", value_parser = units::slice_seconds)]
    pub slice_duration: Option<Duration>,
    /// Do not write report.html (the run's self-contained HTML report with plots).
    #[arg(long)]
    pub no_html: bool,
    /// Also draw each chart of the report as a PNG under plots/ in the artifact directory
    /// (AIPerf's --auto-plot; off by default).
    #[arg(long, overrides_with = "no_auto_plot")]
    pub auto_plot: bool,
    /// No PNGs after the run (the default).
    #[arg(long)]
    pub no_auto_plot: bool,
    /// A report or plot that cannot be made fails the run (exit 1) instead of a warning.
    #[arg(long)]
    pub plot_required: bool,
}

/// `--ui`: `dashboard`, `simple` or `none`, in any case (AIPerf's values).
fn ui_type(s: &str) -> Result<UiType, String> {
    <UiType as clap::ValueEnum>::from_str(s, true)
        .map_err(|_| format!("{s:?} is not a UI: `dashboard`, `simple` or `none`"))
}

/// The server's Prometheus metrics, scraped during the run (docs/server-metrics.md).
#[derive(Debug, Clone, Args)]
pub struct ServerMetricsArgs {
    /// More Prometheus endpoints to scrape (`host:port` or a URL; `/metrics` when no path
    /// is given), besides each --url's own `/metrics`, which is always tried and skipped
    /// quietly when it does not answer.
    #[arg(long, value_name = "URL", num_args = 0..)]
    pub server_metrics: Option<Vec<String>>,
    /// Scrape no server metrics.
    #[arg(long, conflicts_with = "server_metrics")]
    pub no_server_metrics: bool,
    /// Seconds between scrapes (server metrics and GPU telemetry); one scrape may take as
    /// long, from 0.5 s to 5 s.
    #[arg(long, value_name = "S", value_parser = units::scrape_interval)]
    pub server_metrics_interval: Option<Duration>,
    /// Which files: `json` and `csv` (the profiling window's summary), `jsonl` (every scrape,
    /// written during the run). Default: json csv.
    #[arg(long, value_name = "FORMAT", num_args = 1.., value_enum)]
    pub server_metrics_formats: Option<Vec<crate::servermetrics::Format>>,
}

/// GPU telemetry from DCGM exporters (docs/server-metrics.md#gpu-telemetry).
#[derive(Debug, Clone, Args)]
pub struct GpuTelemetryArgs {
    /// More DCGM exporter endpoints (`host:port` or a URL), besides localhost:9400 and
    /// localhost:9401, which are always tried.
    #[arg(long, value_name = "URL", num_args = 0..)]
    pub gpu_telemetry: Option<Vec<String>>,
    /// Collect no GPU telemetry.
    #[arg(long, conflicts_with = "gpu_telemetry")]
    pub no_gpu_telemetry: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// Disable every plugin.
    #[arg(long)]
    pub no_plugins: bool,
    /// Any plugin failure is an error (exit 1).
    #[arg(long)]
    pub strict_plugins: bool,
}

/// `aiperf mock-server`. Every flag is also a `--url 'mock?KEY=VALUE&…'` option of the
/// in-process mock: the flag's name with `_` for `-` (`tokens` for `--default-tokens`, `seed`
/// for `--random-seed`), parsed by the same code (`mock::config`).
#[derive(Debug, Clone, Args)]
pub struct MockServerArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Time to first token, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "20", value_parser = units::millis)]
    pub ttft_ms: Duration,
    /// Time between tokens, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "5", value_parser = units::millis)]
    pub itl_ms: Duration,
    /// Load model: milliseconds added to the TTFT per request in flight at the mock when a
    /// request arrives, counting itself (in a closed loop at concurrency C: TTFT =
    /// --ttft-ms + this × C).
    #[arg(long, value_name = "MS", default_value = "0", value_parser = units::millis)]
    pub ttft_per_inflight_ms: Duration,
    /// Load model: milliseconds added to the time between tokens per request in flight at
    /// arrival, counting itself.
    #[arg(long, value_name = "MS", default_value = "0", value_parser = units::millis)]
    pub itl_per_inflight_ms: Duration,
    /// Latency step: milliseconds added to the TTFT of every request arriving
    /// --step-after-s or more after the mock's first request (for tests and demos of
    /// drift, e.g. with --slice-duration).
    #[arg(long, value_name = "MS", default_value = "0", value_parser = units::millis)]
    pub ttft_step_ms: Duration,
    /// When the latency step starts: seconds after the mock's first request.
    #[arg(long, value_name = "SECONDS", default_value = "0", value_parser = units::seconds)]
    pub step_after_s: Duration,
    /// The most requests generating at once (vLLM's --max-num-seqs): later ones wait for a
    /// slot (vllm:num_requests_waiting) and their TTFT includes the wait. 0: no limit.
    #[arg(long, value_name = "N", default_value = "0", value_parser = mock::seqs)]
    pub max_num_seqs: u64,
    /// Capacity of the KV-cache model in tokens: vllm:kv_cache_usage_perc is the tokens held
    /// by running requests (prompt and generated) over this.
    #[arg(long, value_name = "TOKENS", default_value = "1000000", value_parser = mock::kv_tokens)]
    pub kv_cache_tokens: u64,
    /// Tokens generated when the request sets no max tokens.
    #[arg(long, value_name = "N", default_value = "16", value_parser = mock::tokens)]
    pub default_tokens: u32,
    /// Seed of the generated words and of which requests fail (`--error-rate`,
    /// `--fault-rate`).
    #[arg(long, value_name = "N", default_value = "0", value_parser = mock::count)]
    pub random_seed: u64,
    /// Append each request's arrival time (Unix ns, one per line; over HTTP/1.x the kernel's
    /// receive stamp of its bytes) to this file.
    #[arg(long, value_name = "FILE")]
    pub log_arrivals: Option<PathBuf>,
    /// Share of requests (percent, a seeded draw per request) answered with
    /// `--error-status`.
    #[arg(long, value_name = "PCT", default_value = "0", value_parser = mock::percent, help_heading = "Faults")]
    pub error_rate: f64,
    /// HTTP status of `--error-rate`, `--fault status` and `--fault endless_error` (400-599).
    #[arg(long, value_name = "CODE", default_value = "500", value_parser = mock::error_status, help_heading = "Faults")]
    pub error_status: u16,
    /// Fault injected into the selected requests. Requests are numbered 1, 2, 3... in the
    /// order the mock reads them (all connections); number K gets the fault when
    /// K > --fault-after, (K - --fault-after) is a multiple of --fault-every, and a draw
    /// seeded by --random-seed and K falls under --fault-rate. "After N tokens" is after
    /// --fault-tokens token events; a non-streamed answer gets the fault where its body would
    /// be sent.
    #[arg(long, value_name = "KIND", value_enum, help_heading = "Faults")]
    pub fault: Option<mock::Fault>,
    /// Percent of the requests allowed by --fault-every/--fault-after that get the fault.
    #[arg(long, value_name = "PCT", default_value = "100", value_parser = mock::percent, help_heading = "Faults")]
    pub fault_rate: f64,
    /// Only every K-th request gets the fault (K, 2K, ... after --fault-after).
    #[arg(long, value_name = "K", default_value = "1", value_parser = mock::every, help_heading = "Faults")]
    pub fault_every: u64,
    /// The first N requests never get the fault.
    #[arg(long, value_name = "N", default_value = "0", value_parser = mock::count, help_heading = "Faults")]
    pub fault_after: u64,
    /// Token events sent before a mid-stream fault (reset, close, stall, bad_json, garbage,
    /// endless_stream).
    #[arg(long, value_name = "N", default_value = "1", value_parser = mock::tokens, help_heading = "Faults")]
    pub fault_tokens: u32,
    /// Wait of close_reused and slow_headers; interval of endless_error (a 16 KiB chunk) and
    /// endless_stream (a keep-alive comment).
    #[arg(long, value_name = "MS", default_value = "100", value_parser = units::millis, help_heading = "Faults")]
    pub fault_ms: Duration,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate for localhost and 127.0.0.1, made at start
    /// (clients need --ssl-insecure).
    #[arg(long, conflicts_with = "tls_cert", help_heading = "TLS")]
    pub tls_self_signed: bool,
    /// The protocols offered by ALPN, in order of preference: h2, http/1.1. `h2` alone makes
    /// an HTTP/2-only server.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "h2,http/1.1",
        help_heading = "TLS"
    )]
    pub tls_alpn: String,
}

impl MockServerArgs {
    /// The TLS configuration of `--tls-*`, `None` for plain HTTP.
    pub fn tls_config(&self) -> Result<Option<rustls::ServerConfig>, String> {
        use mock::tls::Certificate;
        let alpn = mock::tls::alpn(&self.tls_alpn)?;
        let cert = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Certificate::Files { cert, key },
            _ if self.tls_self_signed => Certificate::SelfSigned,
            _ => return Ok(None),
        };
        mock::tls::server_config(cert, alpn).map(Some)
    }

    /// The config of `aiperf mock-server`'s flags, validated like a URL's.
    pub fn to_mock_config(&self) -> Result<MockConfig, String> {
        let a = self;
        let cfg = MockConfig {
            ttft: a.ttft_ms,
            itl: a.itl_ms,
            ttft_per_inflight: a.ttft_per_inflight_ms,
            itl_per_inflight: a.itl_per_inflight_ms,
            default_tokens: a.default_tokens,
            seed: a.random_seed,
            error_rate: a.error_rate,
            error_status: a.error_status,
            fault: a.fault,
            fault_rate: a.fault_rate,
            fault_every: a.fault_every,
            fault_after: a.fault_after,
            fault_tokens: a.fault_tokens,
            fault_delay: a.fault_ms,
            log_arrivals: a.log_arrivals.clone(),
            max_num_seqs: a.max_num_seqs,
            kv_cache_tokens: a.kv_cache_tokens,
            ttft_step: a.ttft_step_ms,
            step_after: a.step_after_s,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
