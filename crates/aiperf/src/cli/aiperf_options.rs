//! Every option of NVIDIA AIPerf 0.13's `aiperf profile` (its 264, in its help's order and
//! groups), and what this tool does with each: supported (every name of it, aliases
//! included, is a flag of [`super::ProfileArgs`]), or refused with the reason, planned
//! (with the issue) or not supported. An AIPerf option that is not supported is never
//! silently ignored: on the command line or as a config-file key it is a usage error that
//! says why ([`refusal`]). `docs/config.md`'s option table is generated from this list
//! ([`markdown_table`]), and a test keeps the two equal.

/// What this tool does with one AIPerf option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every name is a flag here, with AIPerf's meaning.
    Supported,
    /// Refused for now: the issue that adds it, and what it is.
    Planned(u32, &'static str),
    /// Refused, with the reason.
    NotSupported(&'static str),
}

/// One AIPerf option: its `--help` group, its names (primary first), and its status here.
#[derive(Debug, Clone, Copy)]
pub struct AiperfOption {
    pub group: &'static str,
    pub names: &'static [&'static str],
    pub status: Status,
}

const fn o(group: &'static str, names: &'static [&'static str], status: Status) -> AiperfOption {
    AiperfOption {
        group,
        names,
        status,
    }
}

use Status::{NotSupported as N, Planned as P, Supported as S};

const MULTIMODAL: &str = "text only: no audio, image or video inputs or endpoints";
const AGENTIC: &str =
    "agentic/Weka trace replay is not supported (mooncake traces are, with --fixed-schedule)";
const TRACKERS: &str =
    "no MLflow or W&B exporter and no OpenTelemetry flags: the built-in `otlp` plugin exports to an OpenTelemetry collector, a plugin can send results elsewhere (docs/plugins.md)";
const PROFILER: &str =
    "no server-profiler control: a plugin's phase_start/phase_complete hooks can call the server (docs/plugins.md)";
const PUBLIC: &str = "public datasets are not downloaded: convert one to a file and use --input-file (sharegpt, multi_turn, ...)";
const PREFILL: &str =
    "a separate limit on requests in prefill is not supported; --concurrency caps all requests";
const USER_RATE: &str = "user-centric rate is not supported: use --request-rate, or --concurrency with multi-turn sessions";
const DIST: &str = "ISL/OSL come from --isl/--osl with a normal --isl-stddev/--osl-stddev; other distributions are not supported";
const CORPUS: &str =
    "synthetic prompts are cut from the built-in corpus; other corpora are not supported";
const SERVICES: &str =
    "one process, no worker services or message bus: the tool sizes its threads to the machine (--workers-max caps them)";
const NETLAT: &str = "network latency probing is not supported: run against the server's own host to leave the network out";
const ACCURACY: &str = "accuracy benchmarks are not supported: this tool measures performance";
const VARIANT: &str = "named sweep variants are not supported: give the lists on the command line or in the config file (docs/sweeps.md)";
const KV_RESET: &str = "no KV-cache reset between points: warm the server once (the default) or per point (--no-profile-run-disable-warmup-after-first)";
const CONVERGENCE: &str = "repeated runs do not stop early on convergence: give --num-profile-runs and read the confidence intervals (docs/sweeps.md)";
const BAYES: &str = "the search's metric comes from its SLO (--goodput, the SLA flags, --search-sla); no Bayesian recipes (docs/sweeps.md#search)";

/// Every `aiperf profile` option of AIPerf 0.13.
pub const OPTIONS: &[AiperfOption] = &[
    // Endpoint
    o("Endpoint", &["--model-names", "--model", "-m"], S),
    o("Endpoint", &["--model-selection-strategy"], S),
    o("Endpoint", &["--custom-endpoint", "--endpoint"], S),
    o("Endpoint", &["--endpoint-type"], S),
    o("Endpoint", &["--streaming"], S),
    o("Endpoint", &["--url", "-u"], S),
    o("Endpoint", &["--url-strategy"], S),
    o("Endpoint", &["--request-timeout-seconds"], S),
    o("Endpoint", &["--wait-for-model-timeout"], S),
    o("Endpoint", &["--wait-for-model-mode"], S),
    o("Endpoint", &["--wait-for-model-interval"], S),
    o("Endpoint", &["--reset-kv-cache"], N(KV_RESET)),
    o("Endpoint", &["--reset-kv-cache-timeout-seconds"], N(KV_RESET)),
    o("Endpoint", &["--reset-kv-cache-path"], N(KV_RESET)),
    o("Endpoint", &["--server-profiler"], N(PROFILER)),
    o("Endpoint", &["--server-profiler-timeout-seconds"], N(PROFILER)),
    o("Endpoint", &["--server-profiler-start-path"], N(PROFILER)),
    o("Endpoint", &["--server-profiler-stop-path"], N(PROFILER)),
    o("Endpoint", &["--api-key"], S),
    o("Endpoint", &["--transport", "--transport-type"], S),
    o("Endpoint", &["--use-legacy-max-tokens"], S),
    o("Endpoint", &["--use-server-token-count"], S),
    o("Endpoint", &["--per-chunk-usage"], N("per-chunk usage (stream_options.continuous_usage_stats) is not requested: ITL is (latency - TTFT) / (OSL - 1) from the final counts")),
    o("Endpoint", &["--connection-reuse-strategy"], S),
    o("Endpoint", &["--download-video-content"], N(MULTIMODAL)),
    o("Endpoint", &["--request-content-type"], N("requests are always sent as application/json (no multipart form bodies)")),
    o("Endpoint", &["--session-header"], S),
    o("Endpoint", &["--uuid-and-strip"], N(MULTIMODAL)),
    // Input
    o("Input", &["--extra-inputs"], S),
    o("Input", &["--header", "-H"], S),
    o("Input", &["--input-file"], S),
    o("Input", &["--public-dataset"], N(PUBLIC)),
    o("Input", &["--hf-subset"], N(PUBLIC)),
    o("Input", &["--hf-weka-dataset"], N(PUBLIC)),
    o("Input", &["--dataset-filter"], N(PUBLIC)),
    o("Input", &["--custom-dataset-type"], S),
    o("Input", &["--ignore-trace-delays"], N(AGENTIC)),
    o("Input", &["--use-think-time-only"], N(AGENTIC)),
    o("Input", &["--max-context-length"], N(AGENTIC)),
    o("Input", &["--dataset-sampling-strategy"], S),
    o("Input", &["--allow-dataset-wrap", "--no-allow-dataset-wrap"], N(AGENTIC)),
    o("Input", &["--random-seed"], S),
    o("Input", &["--trace-session-sample-ratio"], N(AGENTIC)),
    o("Input", &["--config", "-f"], S),
    // Fixed Schedule
    o("Fixed Schedule", &["--fixed-schedule"], S),
    o("Fixed Schedule", &["--no-fixed-schedule"], S),
    o("Fixed Schedule", &["--fixed-schedule-auto-offset"], S),
    o("Fixed Schedule", &["--fixed-schedule-start-offset"], S),
    o("Fixed Schedule", &["--fixed-schedule-end-offset"], S),
    // Goodput
    o("Goodput", &["--goodput"], S),
    // Output
    o("Output", &["--output-artifact-dir", "--artifact-dir"], S),
    o("Output", &["--profile-export-prefix", "--profile-export-file"], S),
    o("Output", &["--export-level", "--profile-export-level"], S),
    o("Output", &["--slice-duration"], S),
    o("Output", &["--auto-plot", "--no-auto-plot"], S),
    o("Output", &["--plot-required"], S),
    o("Output", &["--export-outputs-json"], S),
    o("Output", &["--otel-url"], N(TRACKERS)),
    o("Output", &["--stream"], N(TRACKERS)),
    o("Output", &["--otel-resource-attributes"], N(TRACKERS)),
    o("Output", &["--gen-ai-provider"], N(TRACKERS)),
    o("Output", &["--mlflow-tracking-uri"], N(TRACKERS)),
    o("Output", &["--mlflow-experiment"], N(TRACKERS)),
    o("Output", &["--mlflow-run-name"], N(TRACKERS)),
    o("Output", &["--mlflow-tag"], N(TRACKERS)),
    o("Output", &["--mlflow-parent-run-id"], N(TRACKERS)),
    o("Output", &["--mlflow-artifact-glob"], N(TRACKERS)),
    o("Output", &["--wandb-project"], N(TRACKERS)),
    o("Output", &["--wandb-entity"], N(TRACKERS)),
    o("Output", &["--wandb-run-name"], N(TRACKERS)),
    o("Output", &["--wandb-tag"], N(TRACKERS)),
    // HTTP Trace
    o("HTTP Trace", &["--export-http-trace"], N("the HTTP timing metrics (http_req_*) are always in profile_export.jsonl; raw socket traces and headers are not exported")),
    o("HTTP Trace", &["--show-trace-timing"], S),
    // Tokenizer
    o("Tokenizer", &["--tokenizer"], S),
    o("Tokenizer", &["--tokenizer-revision"], S),
    o("Tokenizer", &["--tokenizer-trust-remote-code"], S),
    o("Tokenizer", &["--apply-chat-template"], N("prompts are counted as plain text; no chat template is applied before counting")),
    // Load Generator
    o("Load Generator", &["--benchmark-duration"], S),
    o("Load Generator", &["--benchmark-grace-period"], S),
    o("Load Generator", &["--concurrency"], S),
    o("Load Generator", &["--prefill-concurrency"], N(PREFILL)),
    o("Load Generator", &["--request-rate"], S),
    o("Load Generator", &["--arrival-pattern", "--request-rate-mode"], S),
    o("Load Generator", &["--arrival-smoothness", "--vllm-burstiness"], S),
    o("Load Generator", &["--request-count", "--num-requests"], S),
    o("Load Generator", &["--concurrency-ramp-duration"], S),
    o("Load Generator", &["--prefill-concurrency-ramp-duration"], N(PREFILL)),
    o("Load Generator", &["--request-rate-ramp-duration"], S),
    o("Load Generator", &["--request-rate-series"], N("a piecewise rate series is not supported: use --request-rate with --request-rate-ramp-duration, or a trace with --fixed-schedule")),
    o("Load Generator", &["--failed-request-threshold"], S),
    o("Load Generator", &["--trajectory-start-min-ratio"], N(AGENTIC)),
    o("Load Generator", &["--trajectory-start-max-ratio"], N(AGENTIC)),
    o("Load Generator", &["--burst-phase-starts"], N(AGENTIC)),
    o("Load Generator", &["--trace-idle-gap-cap-seconds"], N(AGENTIC)),
    o("Load Generator", &["--system-idle-gap-cap-seconds"], N(AGENTIC)),
    // Scenario
    o("Scenario", &["--scenario"], N("scenario presets are not supported: write the settings in a config file (--config)")),
    o("Scenario", &["--unsafe-override"], N("scenario presets are not supported: write the settings in a config file (--config)")),
    // Warmup
    o("Warmup", &["--warmup-request-count", "--num-warmup-requests"], S),
    o("Warmup", &["--warmup-duration"], S),
    o("Warmup", &["--agentic-cache-warmup-duration"], N(AGENTIC)),
    o("Warmup", &["--agentic-warmup-grace-period"], N(AGENTIC)),
    o("Warmup", &["--num-warmup-sessions"], S),
    o("Warmup", &["--warmup-concurrency"], S),
    o("Warmup", &["--warmup-prefill-concurrency"], N(PREFILL)),
    o("Warmup", &["--warmup-request-rate"], S),
    o("Warmup", &["--warmup-arrival-pattern"], S),
    o("Warmup", &["--warmup-grace-period"], S),
    o("Warmup", &["--warmup-concurrency-ramp-duration"], S),
    o("Warmup", &["--warmup-prefill-concurrency-ramp-duration"], N(PREFILL)),
    o("Warmup", &["--warmup-request-rate-ramp-duration"], S),
    // User-Centric Rate
    o("User-Centric Rate", &["--user-centric-rate"], N(USER_RATE)),
    o("User-Centric Rate", &["--num-users"], N(USER_RATE)),
    // Request Cancellation
    o("Request Cancellation", &["--request-cancellation-rate"], S),
    o("Request Cancellation", &["--request-cancellation-delay"], S),
    // Conversation Input
    o("Conversation Input", &["--conversation-num", "--num-conversations", "--num-sessions"], S),
    o("Conversation Input", &["--num-dataset-entries", "--num-prompts"], S),
    o("Conversation Input", &["--conversation-turn-mean", "--session-turns-mean"], S),
    o("Conversation Input", &["--conversation-turn-stddev", "--session-turns-stddev"], S),
    o("Conversation Input", &["--conversation-turn-delay-mean", "--session-turn-delay-mean"], S),
    o("Conversation Input", &["--conversation-turn-delay-stddev", "--session-turn-delay-stddev"], S),
    o("Conversation Input", &["--conversation-turn-delay-ratio", "--session-delay-ratio"], S),
    o("Conversation Input", &["--inter-turn-delay-cap-seconds"], N(AGENTIC)),
    o("Conversation Input", &["--max-idle-gap-cap-seconds"], N(AGENTIC)),
    o("Conversation Input", &["--replay-speedup"], S),
    o("Conversation Input", &["--open-loop-replay", "--no-open-loop-replay"], N(AGENTIC)),
    o("Conversation Input", &["--open-loop-strict"], N(AGENTIC)),
    o("Conversation Input", &["--omit-kv-hints"], N(AGENTIC)),
    o("Conversation Input", &["--force-min-tokens", "--no-force-min-tokens"], N("only for baseten traces (Parquet), which are not read; set min_tokens with --extra-inputs")),
    // Input Sequence Length (ISL)
    o("Input Sequence Length (ISL)", &["--prompt-input-tokens-mean", "--synthetic-input-tokens-mean", "--isl"], S),
    o("Input Sequence Length (ISL)", &["--prompt-input-tokens-stddev", "--synthetic-input-tokens-stddev", "--isl-stddev"], S),
    o("Input Sequence Length (ISL)", &["--prompt-input-tokens-block-size", "--synthetic-input-tokens-block-size", "--isl-block-size"], S),
    o("Input Sequence Length (ISL)", &["--seq-dist", "--sequence-distribution"], N(DIST)),
    o("Input Sequence Length (ISL)", &["--random-range-ratio"], N(DIST)),
    o("Input Sequence Length (ISL)", &["--random-corpus-style"], N(CORPUS)),
    // Output Sequence Length (OSL)
    o("Output Sequence Length (OSL)", &["--prompt-output-tokens-mean", "--output-tokens-mean", "--osl"], S),
    o("Output Sequence Length (OSL)", &["--prompt-output-tokens-stddev", "--output-tokens-stddev", "--osl-stddev"], S),
    // Prompt
    o("Prompt", &["--prompt-batch-size", "--batch-size-text", "--batch-size", "-b"], S),
    o("Prompt", &["--prompt-corpus"], N(CORPUS)),
    // Prefix Prompt
    o("Prefix Prompt", &["--system-prompt"], S),
    o("Prefix Prompt", &["--system-prompt-file"], S),
    o("Prefix Prompt", &["--prompt-prefix-pool-size", "--prefix-prompt-pool-size", "--num-prefix-prompts"], S),
    o("Prefix Prompt", &["--prompt-prefix-length", "--prefix-prompt-length"], S),
    o("Prefix Prompt", &["--shared-system-prompt-length"], S),
    o("Prefix Prompt", &["--user-context-prompt-length"], S),
    // Cache Bust
    o("Cache Bust", &["--cache-bust"], N("cache-bust markers are not injected; vary prompts with --random-seed or --num-dataset-entries")),
    // Rankings
    o("Rankings", &["--rankings-passages-mean"], N("ranking endpoints (passages and queries) are not supported")),
    o("Rankings", &["--rankings-passages-stddev"], N("ranking endpoints (passages and queries) are not supported")),
    o("Rankings", &["--rankings-passages-prompt-token-mean"], N("ranking endpoints (passages and queries) are not supported")),
    o("Rankings", &["--rankings-passages-prompt-token-stddev"], N("ranking endpoints (passages and queries) are not supported")),
    o("Rankings", &["--rankings-query-prompt-token-mean"], N("ranking endpoints (passages and queries) are not supported")),
    o("Rankings", &["--rankings-query-prompt-token-stddev"], N("ranking endpoints (passages and queries) are not supported")),
    // Synthesis
    o("Synthesis", &["--synthesis-speedup-ratio"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    o("Synthesis", &["--synthesis-prefix-len-multiplier"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    o("Synthesis", &["--synthesis-prefix-root-multiplier"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    o("Synthesis", &["--synthesis-prompt-len-multiplier"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    o("Synthesis", &["--synthesis-output-len-multiplier"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    o("Synthesis", &["--synthesis-max-isl"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    o("Synthesis", &["--synthesis-max-osl"], N("trace synthesis (rescaling a mooncake trace) is not supported; --replay-speedup scales its time")),
    // Audio Input
    o("Audio Input", &["--audio-batch-size", "--batch-size-audio"], N(MULTIMODAL)),
    o("Audio Input", &["--audio-length-mean"], N(MULTIMODAL)),
    o("Audio Input", &["--audio-length-stddev"], N(MULTIMODAL)),
    o("Audio Input", &["--audio-format"], N(MULTIMODAL)),
    o("Audio Input", &["--audio-depths"], N(MULTIMODAL)),
    o("Audio Input", &["--audio-sample-rates"], N(MULTIMODAL)),
    o("Audio Input", &["--audio-num-channels"], N(MULTIMODAL)),
    // Image Input
    o("Image Input", &["--image-width-mean"], N(MULTIMODAL)),
    o("Image Input", &["--image-width-stddev"], N(MULTIMODAL)),
    o("Image Input", &["--image-height-mean"], N(MULTIMODAL)),
    o("Image Input", &["--image-height-stddev"], N(MULTIMODAL)),
    o("Image Input", &["--image-batch-size", "--batch-size-image"], N(MULTIMODAL)),
    o("Image Input", &["--image-format"], N(MULTIMODAL)),
    o("Image Input", &["--image-source"], N(MULTIMODAL)),
    o("Image Input", &["--image-source-sampling"], N(MULTIMODAL)),
    // Video Input
    o("Video Input", &["--video-batch-size", "--batch-size-video"], N(MULTIMODAL)),
    o("Video Input", &["--video-duration"], N(MULTIMODAL)),
    o("Video Input", &["--video-fps"], N(MULTIMODAL)),
    o("Video Input", &["--video-width"], N(MULTIMODAL)),
    o("Video Input", &["--video-height"], N(MULTIMODAL)),
    o("Video Input", &["--video-synth-type"], N(MULTIMODAL)),
    o("Video Input", &["--video-format"], N(MULTIMODAL)),
    o("Video Input", &["--video-codec"], N(MULTIMODAL)),
    o("Video Input", &["--video-audio-sample-rate"], N(MULTIMODAL)),
    o("Video Input", &["--video-audio-num-channels"], N(MULTIMODAL)),
    o("Video Input", &["--video-audio-codec"], N(MULTIMODAL)),
    o("Video Input", &["--video-audio-depth"], N(MULTIMODAL)),
    // Service
    o("Service", &["--log-level"], S),
    o("Service", &["--verbose", "-v"], S),
    o("Service", &["--extra-verbose", "-vv"], S),
    o("Service", &["--record-processor-service-count", "--record-processors"], N(SERVICES)),
    o("Service", &["--api-port"], N("there is no HTTP API while a run goes on; plugins get live progress (docs/plugins.md)")),
    o("Service", &["--api-host"], N("there is no HTTP API while a run goes on; plugins get live progress (docs/plugins.md)")),
    o("Service", &["--stats-interval"], P(16, "periodic live statistics come with the live dashboard")),
    // Server Metrics
    o("Server Metrics", &["--server-metrics"], S),
    o("Server Metrics", &["--no-server-metrics"], S),
    o("Server Metrics", &["--server-metrics-formats"], S),
    // Network Latency
    o("Network Latency", &["--network-latency-automatic"], N(NETLAT)),
    o("Network Latency", &["--network-latency-mean"], N(NETLAT)),
    o("Network Latency", &["--network-latency-ping-interval"], N(NETLAT)),
    // GPU Telemetry
    o("GPU Telemetry", &["--gpu-telemetry"], S),
    o("GPU Telemetry", &["--no-gpu-telemetry"], S),
    // UI
    o("UI", &["--ui-type", "--ui"], S),
    // Workers
    o("Workers", &["--workers-max", "--max-workers"], S),
    // ZMQ Communication
    o("ZMQ Communication", &["--zmq-host"], N(SERVICES)),
    o("ZMQ Communication", &["--zmq-ipc-path"], N(SERVICES)),
    o("ZMQ Communication", &["--zmq-dual-bind"], N(SERVICES)),
    // Accuracy
    o("Accuracy", &["--accuracy-benchmark"], N(ACCURACY)),
    o("Accuracy", &["--accuracy-tasks"], N(ACCURACY)),
    o("Accuracy", &["--accuracy-n-shots"], N(ACCURACY)),
    o("Accuracy", &["--accuracy-enable-cot", "--accuracy-no-enable-cot"], N(ACCURACY)),
    o("Accuracy", &["--accuracy-grader"], N(ACCURACY)),
    o("Accuracy", &["--accuracy-system-prompt"], N(ACCURACY)),
    o("Accuracy", &["--accuracy-verbose"], N(ACCURACY)),
    // Multi-Run
    o("Multi-Run", &["--num-profile-runs"], S),
    o("Multi-Run", &["--profile-run-cooldown-seconds"], S),
    o("Multi-Run", &["--confidence-level"], S),
    o("Multi-Run", &["--profile-run-disable-warmup-after-first", "--no-profile-run-disable-warmup-after-first"], S),
    o("Multi-Run", &["--set-consistent-seed", "--no-set-consistent-seed"], S),
    o("Multi-Run", &["--vary-seed-per-trial", "--no-vary-seed-per-trial"], S),
    o("Multi-Run", &["--convergence-metric"], N(CONVERGENCE)),
    o("Multi-Run", &["--convergence-stat"], N(CONVERGENCE)),
    o("Multi-Run", &["--convergence-threshold"], N(CONVERGENCE)),
    o("Multi-Run", &["--convergence-mode"], N(CONVERGENCE)),
    o("Multi-Run", &["--parameter-sweep-cooldown-seconds"], S),
    o("Multi-Run", &["--parameter-sweep-same-seed", "--no-parameter-sweep-same-seed"], S),
    o("Multi-Run", &["--parameter-sweep-mode"], S),
    o("Multi-Run", &["--sweep-type"], S),
    o("Multi-Run", &["--no-sweep-table"], S),
    o("Multi-Run", &["--search-space"], S),
    o("Multi-Run", &["--search-metric"], N(BAYES)),
    o("Multi-Run", &["--search-stat"], N(BAYES)),
    o("Multi-Run", &["--search-direction"], N(BAYES)),
    o("Multi-Run", &["--search-max-iterations"], S),
    o("Multi-Run", &["--search-initial-points"], N(BAYES)),
    o("Multi-Run", &["--search-random-seed"], N(BAYES)),
    o("Multi-Run", &["--search-planner"], N(BAYES)),
    o("Multi-Run", &["--optuna-sampler"], N(BAYES)),
    o("Multi-Run", &["--optuna-acquisition"], N(BAYES)),
    o("Multi-Run", &["--optuna-terminator"], N(BAYES)),
    o("Multi-Run", &["--search-percentile-pooling"], N(BAYES)),
    o("Multi-Run", &["--bo-constraint-mode"], N(BAYES)),
    o("Multi-Run", &["--variant", "--sweep-variant"], N(VARIANT)),
    o("Multi-Run", &["--search-sla"], S),
    o("Multi-Run", &["--search-sla-tier"], N(BAYES)),
    o("Multi-Run", &["--search-recipe"], S),
    o("Multi-Run", &["--ttft-sla-ms"], S),
    o("Multi-Run", &["--isl-osl-pairs"], S),
    o("Multi-Run", &["--itl-sla-ms"], S),
    o("Multi-Run", &["--tpot-sla-ms"], S),
    o("Multi-Run", &["--e2e-sla-ms"], S),
    o("Multi-Run", &["--error-rate-sla"], N(BAYES)),
    o("Multi-Run", &["--slo-attainment-fraction"], S),
    o("Multi-Run", &["--search-style"], N("one search style: monotonic (bracket, then bisect; docs/sweeps.md#search)")),
    o("Multi-Run", &["--degradation-threshold"], N(BAYES)),
    o("Multi-Run", &["--degradation-metric-tag"], N(BAYES)),
    o("Multi-Run", &["--degradation-stat"], N(BAYES)),
    o("Multi-Run", &["--isl-min"], N(BAYES)),
    o("Multi-Run", &["--isl-max"], N(BAYES)),
    o("Multi-Run", &["--isl-steps"], N(BAYES)),
    o("Multi-Run", &["--concurrency-min"], N(BAYES)),
    o("Multi-Run", &["--concurrency-max"], N(BAYES)),
    o("Multi-Run", &["--concurrency-steps"], N(BAYES)),
    o("Multi-Run", &["--osl-min"], N(BAYES)),
    o("Multi-Run", &["--osl-max"], N(BAYES)),
    o("Multi-Run", &["--osl-steps"], N(BAYES)),
];

/// The option names `cmd` accepts: `--long` and its aliases, `-s` and its aliases; `-vv`
/// for a counted `-v`.
fn accepted(cmd: &clap::Command) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    for arg in cmd.get_arguments() {
        for long in arg
            .get_long()
            .into_iter()
            .chain(arg.get_all_aliases().unwrap_or_default())
        {
            names.insert(format!("--{long}"));
        }
        for short in arg
            .get_short()
            .into_iter()
            .chain(arg.get_all_short_aliases().unwrap_or_default())
        {
            names.insert(format!("-{short}"));
            if matches!(arg.get_action(), clap::ArgAction::Count) {
                names.insert(format!("-{short}{short}"));
            }
        }
    }
    names
}

/// Whether every name of `opt` is accepted by `cmd` (the `profile` command).
pub fn is_supported(opt: &AiperfOption, cmd: &clap::Command) -> bool {
    let names = accepted(cmd);
    opt.names.iter().all(|n| names.contains(*n))
}

/// The AIPerf option one of whose names is `name` (`--flag`, or `-f`).
pub fn find(name: &str) -> Option<&'static AiperfOption> {
    OPTIONS.iter().find(|o| o.names.contains(&name))
}

/// Why `name` (`--flag` as typed, without `=value`) is refused: `Some` when it is an AIPerf
/// option that `cmd` does not accept.
pub fn refusal(name: &str, cmd: &clap::Command) -> Option<String> {
    let opt = find(name)?;
    if accepted(cmd).contains(name) {
        return None;
    }
    Some(match opt.status {
        Status::Planned(issue, what) => format!(
            "`{name}` is an AIPerf option this tool does not support yet ({what}: planned in issue {issue})"
        ),
        Status::NotSupported(why) => {
            format!("`{name}` is an AIPerf option this tool does not support: {why}")
        }
        Status::Supported => format!("`{name}` is an AIPerf option this tool does not support"),
    })
}

/// The first AIPerf option in `args` (the `profile` arguments as typed, up to a `--`) that
/// `cmd` does not accept, with the reason.
pub fn first_refusal(args: &[String], cmd: &clap::Command) -> Option<String> {
    args.iter()
        .take_while(|a| a.as_str() != "--")
        .filter(|a| a.starts_with('-'))
        .find_map(|a| refusal(a.split('=').next().unwrap_or(a), cmd))
}

/// Counts of AIPerf's options by what this tool does with them: (supported, planned, not
/// supported).
pub fn counts(cmd: &clap::Command) -> (usize, usize, usize) {
    let names = accepted(cmd);
    let mut c = (0, 0, 0);
    for opt in OPTIONS {
        if opt.names.iter().all(|n| names.contains(*n)) {
            c.0 += 1;
        } else if matches!(opt.status, Status::Planned(..)) {
            c.1 += 1;
        } else {
            c.2 += 1;
        }
    }
    c
}

/// `docs/config.md`'s table of AIPerf's options, as Markdown.
pub fn markdown_table(cmd: &clap::Command) -> String {
    let names = accepted(cmd);
    let (s, p, n) = counts(cmd);
    let mut out = format!(
        "Of AIPerf 0.13's {} `profile` options, {s} are supported, {p} are planned and {n} are \
         not supported; the last two are refused with the reason shown here.\n\n\
         | Group | Option (AIPerf's names) | Here |\n|---|---|---|\n",
        OPTIONS.len()
    );
    for opt in OPTIONS {
        let shown: Vec<String> = opt.names.iter().map(|n| format!("`{n}`")).collect();
        let here = if opt.names.iter().all(|n| names.contains(*n)) {
            "supported".to_string()
        } else {
            match opt.status {
                Status::Planned(issue, what) => format!("planned (issue {issue}): {what}"),
                Status::NotSupported(why) => format!("not supported: {why}"),
                Status::Supported => "not supported".to_string(),
            }
        };
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            opt.group,
            shown.join(" "),
            here.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Args;

    fn profile() -> clap::Command {
        super::super::ProfileArgs::augment_args(clap::Command::new("profile"))
    }

    const BEGIN: &str = "<!-- aiperf-options:begin (generated by `AIPERF_UPDATE_DOCS=1 cargo test -p aiperf --lib aiperf_options`) -->\n";
    const END: &str = "<!-- aiperf-options:end -->";

    #[test]
    fn the_list_is_aiperf_0_13s_264_options_each_named_once() {
        assert_eq!(OPTIONS.len(), 264);
        let mut seen = std::collections::HashSet::new();
        for opt in OPTIONS {
            for n in opt.names {
                assert!(n.starts_with('-'), "{n}");
                assert!(seen.insert(*n), "{n} listed twice");
            }
        }
    }

    /// A supported option has every name (aliases included) as a flag; a refused one has a
    /// reason. When a flag is added, its entry here must say so (and the reverse).
    #[test]
    fn statuses_match_the_flags() {
        let cmd = profile();
        let names = accepted(&cmd);
        let mut wrong = Vec::new();
        for opt in OPTIONS {
            let all = opt.names.iter().all(|n| names.contains(*n));
            let any = opt.names.iter().any(|n| names.contains(*n));
            let listed = opt.status == Status::Supported;
            if all != listed || (any && !all) {
                let missing: Vec<&str> = opt
                    .names
                    .iter()
                    .copied()
                    .filter(|n| !names.contains(*n))
                    .collect();
                wrong.push(format!(
                    "{:?} listed {:?}, missing here: {missing:?}",
                    opt.names, opt.status
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn refused_options_say_why() {
        let cmd = profile();
        let r = refusal("--audio-format", &cmd).unwrap();
        assert!(
            r.contains("`--audio-format`") && r.contains("no audio"),
            "{r}"
        );
        let r = refusal("--stats-interval", &cmd).unwrap();
        assert!(r.contains("planned in issue 16"), "{r}");
        assert_eq!(refusal("--concurrency", &cmd), None, "supported");
        assert_eq!(
            refusal("--not-an-aiperf-option", &cmd),
            None,
            "left to clap"
        );
        let args: Vec<String> = ["--concurrency", "4", "--zmq-host=x", "--", "--audio-format"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = first_refusal(&args, &cmd).unwrap();
        assert!(r.starts_with("`--zmq-host`"), "{r}");
    }

    /// `docs/config.md` holds the generated table; `AIPERF_UPDATE_DOCS=1` rewrites it.
    #[test]
    fn docs_table_is_generated_from_this_list() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/config.md lacks the generated-table markers");
        };
        let table = markdown_table(&profile());
        let now = &doc[b + BEGIN.len()..e];
        if now != table {
            if std::env::var_os("AIPERF_UPDATE_DOCS").is_some() {
                let fresh = format!("{}{BEGIN}{table}{}", &doc[..b], &doc[e..]);
                std::fs::write(path, fresh).unwrap();
            } else {
                panic!(
                    "docs/config.md's AIPerf option table is stale: run \
                     `AIPERF_UPDATE_DOCS=1 cargo test -p aiperf --lib aiperf_options`"
                );
            }
        }
    }
}
