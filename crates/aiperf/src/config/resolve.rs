//! Meaning for parsed flags: defaults that depend on other flags, checks across flags, and
//! one typed section per consumer. Every number was already checked against its bound by its
//! value parser (`crate::units`), so what is left here is what no single flag can know.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{usage, BenchmarkConfig, ConfigError};
use crate::cli::{EndpointArgs, InputArgs, OutputArgs, ProfileArgs, SearchRecipe};
use crate::dataset::{ConversationSpec, InputSpec, Lengths, PromptSpec};
use crate::endpoint::{
    EndpointSpec, EndpointType, ModelSelectionStrategy, WaitForModel, WaitMode,
    DEFAULT_SESSION_HEADER,
};
use crate::export::{ArtifactNames, ExportLevel, OutputSpec, UiType};
use crate::mock::{is_mock_url, MockConfig};
use crate::plugin::PluginsSection;
use crate::search::{self, Criteria, Dimension, SearchSpec};
use crate::servermetrics::ServerMetricsSpec;
use crate::sweep::{aggregate::ParetoAxes, SweepSpec};
use crate::timing::{LoadSpec, RequestRateMode};
use crate::tokenizer::{hub, TokenizerSpec, BUILTIN};
use crate::units::MAX_DATASET_TOKENS;

pub(super) fn resolve(
    a: ProfileArgs,
    mut plugins: PluginsSection,
    cli_command: String,
) -> Result<BenchmarkConfig, ConfigError> {
    let seed = a.input.random_seed.unwrap_or_else(rand::random);
    let mut sweep = sweep(&a)?;
    let endpoint = endpoint(a.endpoint.clone(), &a.input, seed)?;
    let load = load(&a)?;
    let input = input(&a, &endpoint, seed)?;
    let search = search(&a, &endpoint, &input)?;
    if a.search.search_recipe == Some(SearchRecipe::Pareto) {
        if sweep.points().map_or(0, |p| p.len()) < 2 {
            return Err(usage(
                "--search-recipe pareto compares the points of a sweep: give comma lists, e.g. --isl-osl-pairs 128/128,2048/512 --concurrency 1,8,32",
            ));
        }
        sweep.pareto_recipe = true;
    }
    if search.is_some() && sweep.is_multi() {
        return Err(usage(
            "--search-recipe runs its own loads: give single values, not comma lists or --num-profile-runs",
        ));
    }
    let server_metrics = server_metrics(&a)?;
    let scale = scale(&a, &load, &sweep, search.is_some())?;
    let output = output(a.output, &endpoint, &load, &sweep)?;
    plugins.no_plugins = a.plugins.no_plugins;
    plugins.strict = a.plugins.strict_plugins;
    Ok(BenchmarkConfig {
        endpoint,
        input,
        load,
        output,
        plugins,
        server_metrics,
        cli_command,
        search,
        sweep,
        scale,
    })
}

/// `--shard`, `--run-id`, `--start-at`. A shard needs something of every count to split:
/// at least N closed-loop workers (or an open-loop cap of N), N requests, N conversations,
/// N warmup requests, when those are given. Sweeps and searches are not sharded.
fn scale(
    a: &ProfileArgs,
    load: &LoadSpec,
    sweep: &crate::sweep::SweepSpec,
    search: bool,
) -> Result<crate::shard::ScaleSpec, ConfigError> {
    let spec = crate::shard::ScaleSpec {
        shard: a.scale.shard,
        run_id: a.scale.run_id.clone(),
        start_at_ns: a.scale.start_at,
        workers_max: a.scale.workers_max,
    };
    let Some(sh) = spec.shard else {
        return Ok(spec);
    };
    if sweep.is_multi() || search {
        return Err(usage(
            "--shard splits one run: sweeps (comma lists, --num-profile-runs) and --search-recipe are not sharded; run each point as its own sharded run",
        ));
    }
    let n = u64::from(sh.count);
    let too_few = |what: &str, v: u64| -> Result<(), ConfigError> {
        if v < n {
            Err(usage(format!(
                "--shard {sh}: {what} {v} cannot be split over {n} shards (each needs at least 1)"
            )))
        } else {
            Ok(())
        }
    };
    // Closed loop (no rate, no trace) runs --concurrency workers, 1 by default; open loop
    // splits its cap when there is one.
    let open_loop = load.request_rate.is_some() || a.input.fixed_schedule;
    if let Some(c) = load.concurrency {
        too_few("--concurrency", c as u64)?;
    } else if !open_loop && n > 1 {
        return Err(usage(format!(
            "--shard {sh}: a closed-loop run needs --concurrency of at least {n} to split (or --request-rate, or --fixed-schedule for a trace)"
        )));
    }
    if let Some(c) = load.warmup_concurrency {
        too_few("--warmup-concurrency", c as u64)?;
    }
    if let Some(r) = load.request_count {
        too_few("--request-count", r)?;
    }
    if let Some(c) = load.conversation_num {
        too_few("--conversation-num", c)?;
    }
    if load.warmup_request_count > 0 {
        too_few("--warmup-request-count", load.warmup_request_count)?;
    }
    if let Some(c) = load.warmup_num_sessions {
        too_few("--num-warmup-sessions", c)?;
    }
    Ok(spec)
}

/// `--server-metrics`, `--gpu-telemetry` and their companions: URLs normalised (a bad one is
/// a usage error).
fn server_metrics(a: &ProfileArgs) -> Result<ServerMetricsSpec, ConfigError> {
    use crate::servermetrics::normalize_url;
    let (s, g) = (&a.server_metrics, &a.gpu_telemetry);
    let urls = |given: &Option<Vec<String>>, flag: &str| -> Result<Vec<String>, ConfigError> {
        let mut out: Vec<String> = Vec::new();
        for u in given.iter().flatten() {
            for part in u.split(',').filter(|p| !p.trim().is_empty()) {
                let n = normalize_url(part).map_err(|e| usage(format!("{flag}: {e}")))?;
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    };
    let mut spec = ServerMetricsSpec {
        enabled: !s.no_server_metrics,
        urls: urls(&s.server_metrics, "--server-metrics")?,
        gpu_telemetry: !g.no_gpu_telemetry,
        gpu_urls: urls(&g.gpu_telemetry, "--gpu-telemetry")?,
        ..ServerMetricsSpec::default()
    };
    if let Some(i) = s.server_metrics_interval {
        spec.interval = i;
    }
    if let Some(f) = &s.server_metrics_formats {
        let mut formats = Vec::new();
        for x in f {
            if !formats.contains(x) {
                formats.push(*x);
            }
        }
        spec.formats = formats;
    }
    Ok(spec)
}

/// The comma lists and the Multi-Run flags, checked: lists that combine (`--sweep-type zip`
/// needs equal lengths), a bounded number of runs.
fn sweep(a: &ProfileArgs) -> Result<SweepSpec, ConfigError> {
    let m = &a.multi_run;
    let spec = SweepSpec {
        concurrency: a.load.concurrency.clone(),
        request_rate: a.load.request_rate.clone(),
        isl: a.isl.isl.clone(),
        osl: a.osl.osl.clone(),
        isl_osl_pairs: m.isl_osl_pairs.clone(),
        sweep_type: m.sweep_type,
        mode: m.parameter_sweep_mode,
        trials: m.num_profile_runs,
        trial_cooldown: m.profile_run_cooldown_seconds,
        point_cooldown: m.parameter_sweep_cooldown_seconds,
        confidence_level: m.confidence_level,
        warmup_once: !m.no_profile_run_disable_warmup_after_first,
        same_seed_per_point: !m.no_parameter_sweep_same_seed,
        vary_seed_per_trial: m.vary_seed_per_trial,
        consistent_seed: !m.no_set_consistent_seed,
        seed_given: a.input.random_seed.is_some(),
        table: !m.no_sweep_table,
        pareto: ParetoAxes {
            throughput: m
                .pareto_throughput
                .unwrap_or(ParetoAxes::default().throughput),
            latency: m.pareto_latency.unwrap_or(ParetoAxes::default().latency),
        },
        pareto_recipe: false,
    };
    spec.check().map_err(usage)?;
    Ok(spec)
}

/// The first point's ISL: the first pair's, else the first `--isl`.
fn first_isl(a: &ProfileArgs) -> u32 {
    (a.multi_run.isl_osl_pairs.first().map(|p| p.0))
        .or(a.isl.isl.first().copied())
        .unwrap_or(550)
}

/// The first point's OSL: the first pair's, else the first `--osl`, else unset.
fn first_osl(a: &ProfileArgs) -> Option<u32> {
    (a.multi_run.isl_osl_pairs.first().map(|p| p.1)).or(a.osl.osl.first().copied())
}

/// `--search-recipe` and its flags: the search to run, if any. Every search flag needs the
/// recipe; the recipe needs an SLO (`--goodput` and/or an SLA flag) and a load it can vary.
fn search(
    a: &ProfileArgs,
    endpoint: &EndpointSpec,
    input: &InputSpec,
) -> Result<Option<SearchSpec>, ConfigError> {
    let s = &a.search;
    let given = [
        ("--search-space", s.search_space.is_some()),
        ("--search-max-iterations", s.search_max_iterations.is_some()),
        (
            "--slo-attainment-fraction",
            s.slo_attainment_fraction.is_some(),
        ),
        ("--ttft-sla-ms", s.ttft_sla_ms.is_some()),
        ("--itl-sla-ms", s.itl_sla_ms.is_some()),
        ("--tpot-sla-ms", s.tpot_sla_ms.is_some()),
        ("--e2e-sla-ms", s.e2e_sla_ms.is_some()),
        ("--search-sla", !s.search_sla.is_empty()),
    ];
    // A flag of the SLO searches, if one was given.
    let slo_flag = given.iter().find(|(_, set)| *set).map(|(flag, _)| *flag);
    let Some(recipe) = s.search_recipe else {
        if let Some(flag) = slo_flag {
            return Err(usage(format!(
                "{flag} applies only to a search: add --search-recipe max-concurrency-under-sla or max-rate-under-slo"
            )));
        }
        return Ok(None);
    };
    let (name, dimension) = match recipe {
        SearchRecipe::MaxConcurrencyUnderSla => {
            ("max-concurrency-under-sla", Dimension::Concurrency)
        }
        SearchRecipe::MaxRateUnderSlo => ("max-rate-under-slo", Dimension::RequestRate),
        SearchRecipe::Pareto => {
            if let Some(flag) = slo_flag {
                return Err(usage(format!(
                    "{flag} belongs to the SLO searches (max-concurrency-under-sla, max-rate-under-slo), not to --search-recipe pareto"
                )));
            }
            return Ok(None);
        }
    };
    if a.input.fixed_schedule {
        return Err(usage(format!(
            "--search-recipe {name} varies the load; a --fixed-schedule replays its own timing"
        )));
    }
    if dimension == Dimension::Concurrency && !a.load.request_rate.is_empty() {
        return Err(usage(format!(
            "--search-recipe {name} searches --concurrency in a closed loop: drop --request-rate (or use max-rate-under-slo)"
        )));
    }
    let space = s
        .search_space
        .unwrap_or(search::DEFAULT_SPACE)
        .space(dimension)
        .map_err(usage)?;
    if s.itl_sla_ms.is_some() && s.tpot_sla_ms.is_some() {
        return Err(usage(
            "--itl-sla-ms and --tpot-sla-ms are the same SLA: give one",
        ));
    }
    let mut slas = Vec::new();
    if let Some(ms) = s.ttft_sla_ms {
        slas.push(search::sla_flag("time_to_first_token", "p95", ms));
    }
    if let Some(ms) = s.itl_sla_ms.or(s.tpot_sla_ms) {
        slas.push(search::sla_flag("inter_token_latency", "p95", ms));
    }
    if let Some(ms) = s.e2e_sla_ms {
        slas.push(search::sla_flag("request_latency", "p99", ms));
    }
    slas.extend(s.search_sla.iter().cloned());
    let goodput = input.goodput.is_some();
    if !goodput && slas.is_empty() {
        return Err(usage(format!(
            "--search-recipe {name} needs an SLO: --goodput (with --slo-attainment-fraction) and/or --ttft-sla-ms, --itl-sla-ms, --e2e-sla-ms, --search-sla"
        )));
    }
    if !goodput && s.slo_attainment_fraction.is_some() {
        return Err(usage(
            "--slo-attainment-fraction is the share of requests meeting --goodput: add --goodput",
        ));
    }
    if !endpoint.streaming {
        let streamed = ["time_to_first_token", "inter_token_latency"];
        if let Some(sla) = slas.iter().find(|sla| streamed.contains(&sla.tag.as_str())) {
            return Err(usage(format!(
                "the SLA {sla} needs --streaming (no {} without it)",
                sla.tag
            )));
        }
    }
    Ok(Some(SearchSpec {
        recipe: name,
        space,
        criteria: Criteria {
            goodput,
            min_good_fraction: s.slo_attainment_fraction.unwrap_or(0.95),
            slas,
        },
        max_runs: s.search_max_iterations.unwrap_or(search::DEFAULT_MAX_RUNS),
    }))
}

/// Adds `http://` when a URL has no scheme.
pub fn normalize_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    }
}

/// `--url`s, checked: `mock…` (alone) or http(s) URLs. Default `http://localhost:8000`.
fn urls(given: &[String]) -> Result<Vec<String>, ConfigError> {
    if given.is_empty() {
        return Ok(vec!["http://localhost:8000".into()]);
    }
    let mut urls = Vec::new();
    for u in given {
        if is_mock_url(u) {
            u.parse::<MockConfig>()
                .map_err(|e| usage(format!("invalid --url `{u}`: {e}")))?;
            urls.push(u.trim().to_string());
            continue;
        }
        let u = normalize_url(u);
        let parsed =
            reqwest::Url::parse(&u).map_err(|e| usage(format!("invalid --url `{u}`: {e}")))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err(usage(format!(
                "invalid --url `{u}`: scheme must be http or https"
            )));
        }
        urls.push(u);
    }
    if urls.len() > 1 && urls.iter().any(|u| is_mock_url(u)) {
        return Err(usage("--url mock cannot be combined with other URLs"));
    }
    Ok(urls)
}

fn parse_header(h: &str) -> Result<(String, String), ConfigError> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| usage(format!("invalid --header `{h}`: expected `Name: value`")))?;
    let name = name.trim();
    if name.is_empty() || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(usage(format!("invalid --header `{h}`: bad header name")));
    }
    let value = value.trim();
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(usage(format!(
            "invalid --header `{name}`: bad header value"
        )));
    }
    Ok((name.to_string(), value.to_string()))
}

/// `--payload-template`: inline JSON or `@FILE`; must contain `{{text}}`.
fn parse_template(t: &str) -> Result<Value, ConfigError> {
    let text = match t.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read --payload-template {path}: {e}")))?,
        None => t.to_string(),
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| usage(format!("--payload-template is not valid JSON: {e}")))?;
    if !text.contains("{{text}}") {
        return Err(usage(
            "--payload-template must contain {{text}} where the prompt goes",
        ));
    }
    Ok(v)
}

/// `key:value` (value parsed as JSON when it can be, else a string) or a JSON object.
pub fn parse_extra_inputs(items: &[String]) -> Result<Map<String, Value>, ConfigError> {
    let mut out = Map::new();
    for item in items {
        let trimmed = item.trim();
        if trimmed.starts_with('{') {
            match serde_json::from_str(trimmed) {
                Ok(Value::Object(map)) => out.extend(map),
                Ok(_) => {
                    return Err(usage(format!(
                        "invalid --extra-inputs JSON `{trimmed}`: expected an object"
                    )))
                }
                Err(e) => {
                    return Err(usage(format!(
                        "invalid --extra-inputs JSON `{trimmed}`: {e}"
                    )))
                }
            }
            continue;
        }
        let (k, v) = trimmed.split_once(':').ok_or_else(|| {
            usage(format!(
                "invalid --extra-inputs `{trimmed}`: expected `key:value` or a JSON object"
            ))
        })?;
        let k = k.trim();
        if k.is_empty() {
            return Err(usage(format!(
                "invalid --extra-inputs `{trimmed}`: empty key"
            )));
        }
        let v = v.trim();
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

/// `--model` values (comma lists already split): trimmed, empty ones dropped; none at all
/// is `mock-model` for `--url mock`, else an error.
fn models(given: &[String], urls: &[String]) -> Result<Vec<String>, ConfigError> {
    let models: Vec<String> = given
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    if !models.is_empty() {
        return Ok(models);
    }
    if is_mock_url(&urls[0]) {
        return Ok(vec!["mock-model".to_string()]);
    }
    Err(usage(
        "missing --model (-m): the model name to send in requests",
    ))
}

/// `--model-selection-strategy`; `weighted` needs per-model weights, which AIPerf takes only
/// from its YAML `models:` items (its command line cannot give them either).
fn model_selection(
    given: Option<ModelSelectionStrategy>,
) -> Result<ModelSelectionStrategy, ConfigError> {
    match given.unwrap_or_default() {
        ModelSelectionStrategy::Weighted => Err(usage(
            "--model-selection-strategy weighted is not supported: it needs a weight per model, \
             which AIPerf reads from its YAML `models:` section only; use round_robin or random",
        )),
        s => Ok(s),
    }
}

/// AIPerf's defaults: 5 s between probes, `inference` mode. Like AIPerf, a mode or interval
/// other than the default without a timeout is an error (it would do nothing).
fn wait_for_model(a: &EndpointArgs) -> Result<WaitForModel, ConfigError> {
    let w = WaitForModel {
        timeout: a.wait_for_model_timeout,
        mode: a.wait_for_model_mode.unwrap_or_default(),
        interval: a
            .wait_for_model_interval
            .unwrap_or(std::time::Duration::from_secs(5)),
    };
    if w.timeout.is_zero() {
        let mut idle = Vec::new();
        if w.interval != std::time::Duration::from_secs(5) {
            idle.push("--wait-for-model-interval");
        }
        if w.mode != WaitMode::Inference {
            idle.push("--wait-for-model-mode");
        }
        if !idle.is_empty() {
            return Err(usage(format!(
                "{} has no effect without --wait-for-model-timeout S (S > 0)",
                idle.join(", ")
            )));
        }
    }
    Ok(w)
}

fn endpoint(a: EndpointArgs, input: &InputArgs, seed: u64) -> Result<EndpointSpec, ConfigError> {
    let urls = urls(&a.url)?;
    let models = models(&a.model, &urls)?;
    let wait_for_model = wait_for_model(&a)?;
    if !a.response_field.is_empty() && !a.response_field.starts_with('/') {
        return Err(usage(format!(
            "--response-field `{}` must be a JSON pointer such as /choices/0/text",
            a.response_field
        )));
    }
    let payload_template = match (&a.payload_template, a.endpoint_type) {
        (Some(t), EndpointType::Template) => Some(parse_template(t)?),
        (None, EndpointType::Template) => {
            return Err(usage(
                "--endpoint-type template needs --payload-template JSON or @FILE",
            ))
        }
        (Some(_), _) => {
            return Err(usage(
                "--payload-template applies to --endpoint-type template",
            ))
        }
        (None, _) => None,
    };
    let path = match (a.endpoint, a.endpoint_type.default_path()) {
        (Some(p), _) if p.starts_with('/') => p,
        (Some(p), _) => format!("/{p}"),
        (None, Some(default)) => default.to_string(),
        (None, None) => {
            return Err(usage(
                "--endpoint-type template needs --endpoint PATH (e.g. /generate)",
            ))
        }
    };
    let headers = a
        .header
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>, _>>()?;
    let session_header = match a.session_header {
        None => DEFAULT_SESSION_HEADER.to_string(),
        Some(h) if hyper::header::HeaderName::from_bytes(h.trim().as_bytes()).is_ok() => {
            h.trim().to_string()
        }
        Some(h) => {
            return Err(usage(format!(
                "--session-header `{h}` is not a valid HTTP header name"
            )))
        }
    };
    let local_addresses = a.local_addresses.map(|l| l.0).unwrap_or_default();
    local_addresses_fit(&local_addresses, &urls)?;
    Ok(EndpointSpec {
        models,
        model_selection_strategy: model_selection(a.model_selection_strategy)?,
        model_seed: seed,
        endpoint_type: a.endpoint_type,
        path,
        streaming: a.streaming,
        urls,
        api_key: a.api_key,
        headers,
        extra_inputs: parse_extra_inputs(&input.extra_inputs)?,
        request_timeout: a.request_timeout_seconds,
        use_legacy_max_tokens: a.use_legacy_max_tokens,
        payload_template,
        response_field: a.response_field,
        ssl_ca_files: ssl_ca_files(a.ssl_ca_file)?,
        ssl_insecure: a.ssl_insecure,
        stream_usage: !a.no_stream_usage,
        wait_for_model,
        url_strategy: a.url_strategy.unwrap_or_default(),
        transport: a.transport.unwrap_or_default(),
        connection_reuse_strategy: a.connection_reuse_strategy,
        session_header,
        kernel_timestamps: !a.no_kernel_timestamps,
        local_addresses,
    })
}

/// `--local-addresses`: its family must be that of every URL given as an address (`mock`
/// is 127.0.0.1).
fn local_addresses_fit(addrs: &[std::net::IpAddr], urls: &[String]) -> Result<(), ConfigError> {
    let Some(first) = addrs.first() else {
        return Ok(());
    };
    for u in urls {
        let target = if crate::mock::is_mock_url(u) {
            Some(std::net::IpAddr::from([127, 0, 0, 1]))
        } else {
            u.parse::<hyper::Uri>()
                .ok()
                .and_then(|uri| crate::transport::source::literal_ip(uri.host()?))
        };
        if let Some(t) = target.filter(|t| t.is_ipv4() != first.is_ipv4()) {
            return Err(usage(format!(
                "--local-addresses {first} is an {} address, but the target {t} is {}",
                if first.is_ipv4() { "IPv4" } else { "IPv6" },
                if t.is_ipv4() { "IPv4" } else { "IPv6" },
            )));
        }
    }
    Ok(())
}

/// `--tokenizer` and its options. Without `--tokenizer`, AIPerf uses each model's own
/// tokenizer (the dataset the first model's): here the first model's, when it is a hub id
/// `ORG/NAME`; any other name (`gpt-4o`, `mock-model`, `llama3`) keeps `builtin`.
fn tokenizer(i: &InputArgs, endpoint: &EndpointSpec) -> Result<TokenizerSpec, ConfigError> {
    let revision = match &i.tokenizer_revision {
        Some(r) if !hub::is_revision(r.trim()) => {
            return Err(usage(format!(
                "invalid --tokenizer-revision `{r}`: expected a branch, tag or commit of the \
                 Hugging Face repository (letters, digits, `-`, `_`, `.`, `/`)"
            )))
        }
        Some(r) => r.trim().to_string(),
        None => hub::DEFAULT_REVISION.to_string(),
    };
    let (name, from_model) = match &i.tokenizer {
        Some(t) => (t.clone(), false),
        None if hub::is_repo_id(endpoint.model()) => (endpoint.model().to_string(), true),
        None => (BUILTIN.to_string(), false),
    };
    Ok(TokenizerSpec {
        name,
        revision,
        trust_remote_code: i.tokenizer_trust_remote_code,
        from_model,
    })
}

/// Each `--ssl-ca-file` must be a readable PEM file of certificates.
fn ssl_ca_files(files: Vec<PathBuf>) -> Result<Vec<PathBuf>, ConfigError> {
    for f in &files {
        crate::transport::tls::load_ca_file(f).map_err(|e| usage(format!("--ssl-ca-file {e}")))?;
    }
    Ok(files)
}

fn load(a: &ProfileArgs) -> Result<LoadSpec, ConfigError> {
    let (l, w, c) = (&a.load, &a.warmup, &a.cancellation);
    if l.request_rate_ramp_duration.is_some() && l.request_rate.is_empty() {
        return Err(usage("--request-rate-ramp-duration needs --request-rate"));
    }
    let cancel_rate = c.request_cancellation_rate.filter(|p| *p > 0.0);
    // AIPerf's default: 10 requests, unless a duration or a conversation count bounds the
    // phase. With an --input-file it is decided once the file is loaded (a fixed schedule
    // sends its whole window).
    let conversation_num = a.conversation.conversation_num;
    let request_count = match (l.request_count, l.benchmark_duration, conversation_num) {
        (None, None, None) if a.input.input_file.is_none() => Some(10),
        (rc, _, _) => rc,
    };
    if w.warmup_grace_period.is_some() && w.warmup_duration.is_none() {
        return Err(usage(
            "--warmup-grace-period needs --warmup-duration (the grace period follows a timed warmup)",
        ));
    }
    if w.warmup_request_rate_ramp_duration.is_some()
        && w.warmup_request_rate
            .or(l.request_rate.first().copied())
            .is_none()
    {
        return Err(usage(
            "--warmup-request-rate-ramp-duration needs a warmup rate (--warmup-request-rate or --request-rate)",
        ));
    }
    Ok(LoadSpec {
        concurrency: l.concurrency.first().copied(),
        request_rate: l.request_rate.first().copied(),
        request_rate_mode: l.request_rate_mode.unwrap_or(RequestRateMode::Poisson),
        arrival_smoothness: l.arrival_smoothness,
        request_rate_ramp_duration: l.request_rate_ramp_duration,
        concurrency_ramp_duration: l.concurrency_ramp_duration,
        request_cancellation_rate: cancel_rate,
        request_cancellation_delay: cancel_rate.map(|_| c.request_cancellation_delay),
        warmup_duration: w.warmup_duration,
        warmup_concurrency: w.warmup_concurrency,
        warmup_request_rate: w.warmup_request_rate,
        warmup_request_rate_mode: w.warmup_arrival_pattern,
        warmup_request_rate_ramp_duration: w.warmup_request_rate_ramp_duration,
        warmup_concurrency_ramp_duration: w.warmup_concurrency_ramp_duration,
        warmup_grace_period: w.warmup_grace_period,
        request_count,
        conversation_num,
        benchmark_duration: l.benchmark_duration,
        grace_period: l.benchmark_grace_period,
        warmup_request_count: w.warmup_request_count,
        failed_request_threshold: l.failed_request_threshold,
        warmup_num_sessions: a.conversation.num_warmup_sessions,
    })
}

/// Checks of the input flags that need no file access beyond the input file's existence.
fn check_input(a: &ProfileArgs, endpoint: &EndpointSpec) -> Result<(), ConfigError> {
    let i = &a.input;
    if i.fixed_schedule_auto_offset && i.fixed_schedule_start_offset.is_some() {
        return Err(usage(
            "--fixed-schedule-auto-offset and --fixed-schedule-start-offset both say where time zero is: give one",
        ));
    }
    if let (Some(s), Some(e)) = (i.fixed_schedule_start_offset, i.fixed_schedule_end_offset) {
        if e < s {
            return Err(usage(
                "--fixed-schedule-end-offset must not be before --fixed-schedule-start-offset",
            ));
        }
    }
    if i.custom_dataset_type.is_some() && i.input_file.is_none() {
        return Err(usage("--custom-dataset-type needs --input-file"));
    }
    if i.fixed_schedule && i.input_file.is_none() {
        return Err(usage("--fixed-schedule needs an --input-file with timestamps (e.g. --custom-dataset-type mooncake_trace)"));
    }
    if let Some(f) = &i.input_file {
        if !f.is_file() {
            return Err(usage(format!("--input-file {}: no such file", f.display())));
        }
    }
    if (a.prefix.prefix_prompt_length > 0) != (a.prefix.num_prefix_prompts > 0) {
        return Err(usage(
            "--prefix-prompt-length and --num-prefix-prompts go together",
        ));
    }
    if i.batch_size > 1 && endpoint.endpoint_type != EndpointType::Embeddings {
        return Err(usage("--batch-size applies to --endpoint-type embeddings"));
    }
    check_conversation_input(a, endpoint)?;
    if i.input_file.is_none() {
        let tokens = synthetic_tokens(a, dataset_entries(a));
        if tokens > MAX_DATASET_TOKENS {
            return Err(usage(format!(
                "the synthetic prompts would hold about {tokens} tokens (--num-dataset-entries \
                 (else --conversation-num) × --conversation-turn-mean × --batch-size × (--isl \
                 + --prefix-prompt-length), plus the prefixes and context prompts); at most \
                 {MAX_DATASET_TOKENS}"
            )));
        }
    }
    Ok(())
}

/// The system prompt, user context and synthetic multi-turn flags, as AIPerf allows them:
/// a verbatim system prompt (text or file, not both) goes with any dataset but not with a
/// synthetic one or with prefix prompts; the synthetic ones only with synthetic prompts;
/// all of them need a chat or responses endpoint, where a conversation has messages.
fn check_conversation_input(a: &ProfileArgs, endpoint: &EndpointSpec) -> Result<(), ConfigError> {
    let (p, c) = (&a.prefix, &a.conversation);
    let verbatim = p.system_prompt.is_some() || p.system_prompt_file.is_some();
    if p.system_prompt.is_some() && p.system_prompt_file.is_some() {
        return Err(usage(
            "--system-prompt and --system-prompt-file are mutually exclusive",
        ));
    }
    if verbatim && p.shared_system_prompt_length.is_some() {
        return Err(usage(
            "--system-prompt (or --system-prompt-file) and --shared-system-prompt-length are \
             mutually exclusive: both are the system message",
        ));
    }
    let synthetic_context =
        p.shared_system_prompt_length.is_some() || p.user_context_prompt_length.is_some();
    if (verbatim || synthetic_context) && p.num_prefix_prompts > 0 {
        return Err(usage(
            "--prefix-prompt-length/--num-prefix-prompts and the system prompt flags \
             (--system-prompt, --system-prompt-file, --shared-system-prompt-length, \
             --user-context-prompt-length) are mutually exclusive",
        ));
    }
    let multi_turn = c.conversation_turn_mean > 1 || c.conversation_turn_stddev > 0;
    let delays = c.conversation_turn_delay_mean > 0.0
        || c.conversation_turn_delay_stddev > 0.0
        || c.conversation_turn_delay_ratio != 1.0;
    if a.input.input_file.is_some() {
        let synthetic_only = [
            (
                synthetic_context,
                "--shared-system-prompt-length/--user-context-prompt-length",
            ),
            (
                multi_turn,
                "--conversation-turn-mean/--conversation-turn-stddev",
            ),
            (delays, "--conversation-turn-delay-mean/-stddev/-ratio"),
        ];
        if let Some((_, flag)) = synthetic_only.iter().find(|(set, _)| *set) {
            return Err(usage(format!(
                "{flag} applies to synthetic prompts, not to an --input-file (whose \
                 conversations are its own)"
            )));
        }
    }
    let has_messages = matches!(
        endpoint.endpoint_type,
        EndpointType::Chat | EndpointType::Responses
    );
    if (verbatim || synthetic_context) && !has_messages {
        return Err(usage(
            "--system-prompt, --system-prompt-file, --shared-system-prompt-length and \
             --user-context-prompt-length apply to --endpoint-type chat or responses",
        ));
    }
    if multi_turn && endpoint.endpoint_type == EndpointType::Embeddings {
        return Err(usage(
            "--conversation-turn-mean/--conversation-turn-stddev do not apply to \
             --endpoint-type embeddings",
        ));
    }
    Ok(())
}

/// `--system-prompt`, or the text of `--system-prompt-file`: a usage error when empty or
/// unreadable, found before anything is sent.
fn system_prompt(a: &ProfileArgs) -> Result<Option<String>, ConfigError> {
    let p = &a.prefix;
    let text = match (&p.system_prompt, &p.system_prompt_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| {
            usage(format!(
                "cannot read --system-prompt-file {}: {e}",
                f.display()
            ))
        })?,
        (None, None) => return Ok(None),
    };
    if text.trim().is_empty() {
        let flag = if p.system_prompt.is_some() {
            "--system-prompt"
        } else {
            "--system-prompt-file"
        };
        return Err(usage(format!("{flag} is empty")));
    }
    Ok(Some(text))
}

/// Synthetic conversations generated, as AIPerf decides it: `--num-dataset-entries`; else
/// `--conversation-num`; else `--request-count` (so each request of a short run has its own
/// prompt); else 100. A count given for the load is cut to [`DERIVED_ENTRIES_MAX`] and to
/// what the dataset's bounds allow: the dataset is built, and written to `inputs.json`,
/// before the first request (seconds for a hundred thousand prompts), so a long run cycles
/// through at most that many prompts unless `--num-dataset-entries` asks for more.
fn dataset_entries(a: &ProfileArgs) -> usize {
    if let Some(n) = a.input.num_dataset_entries {
        return n;
    }
    let Some(n) = a.conversation.conversation_num.or(a.load.request_count) else {
        return 100;
    };
    let per_entry = synthetic_tokens(a, 1).max(1);
    let fits = (MAX_DATASET_TOKENS / per_entry).max(1);
    usize::try_from(n.min(fits))
        .unwrap_or(usize::MAX)
        .min(DERIVED_ENTRIES_MAX)
}

/// The most synthetic entries a request or conversation count makes (see
/// [`dataset_entries`]); `--num-dataset-entries` goes up to `MAX_DATASET_ENTRIES`.
pub const DERIVED_ENTRIES_MAX: usize = 10_000;

/// Tokens of synthetic prompt text a dataset of `entries` would hold, at the mean lengths.
/// Each factor is bounded by its parser, so the products fit in a `u64` (or saturate).
fn synthetic_tokens(a: &ProfileArgs, entries: usize) -> u64 {
    let (i, p) = (&a.input, &a.prefix);
    // The largest ISL of a sweep bounds the dataset.
    let max_isl = (a.isl.isl.iter().copied())
        .chain(a.multi_run.isl_osl_pairs.iter().map(|p| p.0))
        .max()
        .unwrap_or(550);
    let per_input = u64::from(max_isl) + u64::from(p.prefix_prompt_length);
    let entries = entries as u64;
    let prompts = entries
        .saturating_mul(u64::from(a.conversation.conversation_turn_mean))
        .saturating_mul(u64::from(i.batch_size));
    let context = entries.saturating_mul(u64::from(p.user_context_prompt_length.unwrap_or(0)));
    prompts
        .saturating_mul(per_input)
        .saturating_add(u64::from(p.num_prefix_prompts) * u64::from(p.prefix_prompt_length))
        .saturating_add(context)
        .saturating_add(u64::from(p.shared_system_prompt_length.unwrap_or(0)))
}

fn input(a: &ProfileArgs, endpoint: &EndpointSpec, seed: u64) -> Result<InputSpec, ConfigError> {
    check_input(a, endpoint)?;
    let i = &a.input;
    Ok(InputSpec {
        random_seed: seed,
        num_dataset_entries: dataset_entries(a),
        input_file: i.input_file.clone(),
        custom_dataset_type: i.custom_dataset_type,
        fixed_schedule: if i.fixed_schedule {
            Some(true)
        } else if i.no_fixed_schedule {
            Some(false)
        } else {
            None
        },
        fixed_schedule_auto_offset: i.fixed_schedule_auto_offset,
        fixed_schedule_start_offset: i.fixed_schedule_start_offset,
        fixed_schedule_end_offset: i.fixed_schedule_end_offset,
        replay_speedup: i.replay_speedup,
        sampling: i.dataset_sampling_strategy,
        isl_block_size: a.isl.isl_block_size,
        prefix_prompt_length: a.prefix.prefix_prompt_length,
        num_prefix_prompts: a.prefix.num_prefix_prompts,
        batch_size: i.batch_size,
        use_server_token_count: a.endpoint.use_server_token_count,
        tokenizer: tokenizer(i, endpoint)?,
        goodput: i.goodput.clone(),
        conversation: ConversationSpec {
            turns: Lengths {
                mean: a.conversation.conversation_turn_mean,
                stddev: f64::from(a.conversation.conversation_turn_stddev),
            },
            turn_delay_ms: Lengths {
                mean: a.conversation.conversation_turn_delay_mean,
                stddev: a.conversation.conversation_turn_delay_stddev,
            },
            turn_delay_ratio: a.conversation.conversation_turn_delay_ratio,
        },
        system_prompt: system_prompt(a)?,
        system_prompt_file: a.prefix.system_prompt_file.clone(),
        shared_system_prompt_length: a.prefix.shared_system_prompt_length,
        user_context_prompt_length: a.prefix.user_context_prompt_length,
        prompt: PromptSpec {
            input_tokens: Lengths {
                mean: first_isl(a),
                stddev: a.isl.isl_stddev,
            },
            output_tokens: Lengths {
                mean: first_osl(a),
                stddev: a.osl.osl_stddev,
            },
        },
    })
}

/// The default artifact directory is AIPerf's: `artifacts/<model>-<endpoint>-<load>`.
fn output(
    a: OutputArgs,
    endpoint: &EndpointSpec,
    load: &LoadSpec,
    sweep: &SweepSpec,
) -> Result<OutputSpec, ConfigError> {
    if a.export_level == ExportLevel::Raw {
        return Err(usage(
            "`--export-level raw` (request and response bodies in profile_export_raw.jsonl) is not \
             supported: `records` writes every request's timings, token counts and errors, and \
             inputs.json the exact payloads",
        ));
    }
    if let Some(p) = &a.profile_export_prefix {
        if p.is_empty() || p.contains('/') || p.contains('\\') {
            return Err(usage(format!(
                "--profile-export-prefix {p:?}: a file name, without a directory (use --artifact-dir for that)"
            )));
        }
    }
    let load_label = match load.request_rate {
        _ if sweep.request_rate.len() > 1 => "request_rate_sweep".to_string(),
        Some(r) => format!("request_rate{r}"),
        None if sweep.concurrency.len() > 1 => "concurrency_sweep".to_string(),
        None => format!("concurrency{}", load.concurrency.unwrap_or(1)),
    };
    let artifact_directory = a.artifact_dir.unwrap_or_else(|| {
        let safe_model: String = endpoint
            .model()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        PathBuf::from("artifacts").join(format!(
            "{safe_model}-{}-{load_label}",
            endpoint.endpoint_type.label()
        ))
    });
    let ui = a.ui.unwrap_or_else(UiType::for_this_terminal);
    Ok(OutputSpec {
        artifact_directory,
        names: ArtifactNames::new(a.profile_export_prefix.as_deref()),
        export_level: a.export_level,
        ui,
        verbose: if a.extra_verbose {
            a.verbose.max(2)
        } else {
            a.verbose
        },
        log_level: a.log_level,
        show_trace_timing: a.show_trace_timing,
        export_outputs_json: a.export_outputs_json,
        slice_duration: a.slice_duration,
        html: !a.no_html,
        auto_plot: a.auto_plot && !a.no_auto_plot,
        plot_required: a.plot_required,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<BenchmarkConfig, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        crate::config::load(&args)
    }

    fn err(args: &[&str]) -> String {
        load(args).unwrap_err().to_string()
    }

    #[test]
    fn several_models_and_their_strategy() {
        for args in [
            &["-m", "a,b", "--url", "x"][..],
            &["-m", "a", "--model", "b", "--url", "x"],
            &["--model-names", " a , ,b", "--url", "x"],
        ] {
            let c = load(args).unwrap();
            assert_eq!(c.endpoint.models, ["a", "b"], "{args:?}");
            assert_eq!(c.endpoint.model(), "a");
            assert_eq!(
                c.endpoint.model_selection_strategy,
                ModelSelectionStrategy::RoundRobin
            );
        }
        for (v, want) in [
            ("round-robin", ModelSelectionStrategy::RoundRobin),
            ("round_robin", ModelSelectionStrategy::RoundRobin),
            ("random", ModelSelectionStrategy::Random),
        ] {
            let c = load(&[
                "-m",
                "a,b",
                "--model-selection-strategy",
                v,
                "--random-seed",
                "9",
            ])
            .unwrap();
            assert_eq!(c.endpoint.model_selection_strategy, want);
            assert_eq!(c.endpoint.model_seed, 9);
            assert_eq!(c.input.random_seed, 9);
        }
        let e = err(&["-m", "a,b", "--model-selection-strategy", "weighted"]);
        assert!(e.contains("weighted is not supported"), "{e}");
        assert!(err(&["-m", " , "]).contains("missing --model"));
        // The default directory is named after the first model; input_config lists them all.
        let c = load(&["-m", "org/a,b"]).unwrap();
        assert_eq!(
            c.output.artifact_directory,
            PathBuf::from("artifacts/org_a-openai-chat-concurrency1")
        );
        let shown = serde_json::to_value(&c.endpoint).unwrap();
        assert_eq!(shown["model_names"], serde_json::json!(["org/a", "b"]));
        assert_eq!(shown["model_selection_strategy"], "round_robin");
        assert!(shown.get("model_seed").is_none());
    }

    #[test]
    fn the_tokenizer_defaults_to_the_first_models_hub_id() {
        let tok = |args: &[&str]| load(args).unwrap().input.tokenizer;
        let t = tok(&["-m", "Qwen/Qwen2.5-0.5B,other/model"]);
        assert_eq!((t.name.as_str(), t.from_model), ("Qwen/Qwen2.5-0.5B", true));
        assert_eq!(t.revision, "main");
        for plain in [&["-m", "gpt-4o"][..], &["--url", "mock"], &["-m", "a/b/c"]] {
            let t = tok(plain);
            assert_eq!(
                (t.name.as_str(), t.from_model),
                ("builtin", false),
                "{plain:?}"
            );
        }
        let t = tok(&["-m", "Qwen/X", "--tokenizer", "builtin:cl100k_base"]);
        assert_eq!(
            (t.name.as_str(), t.from_model),
            ("builtin:cl100k_base", false)
        );
        let t = tok(&[
            "-m",
            "a/b",
            "--tokenizer-revision",
            "refs/pr/3",
            "--tokenizer-trust-remote-code",
        ]);
        assert_eq!(t.revision, "refs/pr/3");
        assert!(t.trust_remote_code);
        for bad in ["", "../x", "a b", "/x"] {
            let e = err(&["-m", "a/b", "--tokenizer-revision", bad]);
            assert!(e.contains("invalid --tokenizer-revision"), "{bad}: {e}");
        }
        let shown = serde_json::to_value(tok(&["-m", "a/b"])).unwrap();
        assert_eq!(
            shown,
            serde_json::json!({"tokenizer": "a/b", "tokenizer_revision": "main", "tokenizer_trust_remote_code": false})
        );
    }

    #[test]
    fn readiness_and_accepted_flags() {
        let c = load(&["--url", "mock"]).unwrap().endpoint;
        assert!(c.wait_for_model.timeout.is_zero());
        assert_eq!(c.wait_for_model.mode, WaitMode::Inference);
        assert_eq!(c.wait_for_model.interval, std::time::Duration::from_secs(5));
        assert!(c.stream_usage);
        let c = load(&[
            "--url",
            "mock",
            "--wait-for-model-timeout",
            "30",
            "--wait-for-model-mode",
            "both",
            "--wait-for-model-interval",
            "0.5",
            "--url-strategy",
            "round-robin",
            "--transport-type",
            "http",
            "--no-stream-usage",
        ])
        .unwrap()
        .endpoint;
        assert_eq!(c.wait_for_model.timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.wait_for_model.mode, WaitMode::Both);
        assert_eq!(
            c.wait_for_model.interval,
            std::time::Duration::from_millis(500)
        );
        assert!(!c.stream_usage);
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(shown["wait_for_model_timeout"], 30.0);
        assert_eq!(shown["wait_for_model_mode"], "both");
        assert_eq!(shown["url_strategy"], "round_robin");
        assert_eq!(shown["stream_usage"], false);
        // Options of a probe that does not run are errors, as in AIPerf (defaults are not).
        let e = err(&["--url", "mock", "--wait-for-model-interval", "1"]);
        assert!(e.contains("--wait-for-model-interval has no effect"), "{e}");
        let e = err(&["--url", "mock", "--wait-for-model-mode", "models"]);
        assert!(e.contains("--wait-for-model-mode has no effect"), "{e}");
        assert!(load(&["--url", "mock", "--wait-for-model-interval", "5"]).is_ok());
        for (flag, bad) in [
            ("--wait-for-model-timeout", "nan"),
            ("--wait-for-model-timeout", "-1"),
            ("--wait-for-model-timeout", "inf"),
            ("--wait-for-model-timeout", "1e30"),
            ("--wait-for-model-interval", "0"),
            ("--wait-for-model-interval", "nan"),
            ("--url-strategy", "random"),
            ("--transport", "grpc"),
        ] {
            let e = err(&["--url", "mock", &format!("{flag}={bad}")]);
            assert!(e.contains(flag), "{flag} {bad}: {e}");
        }
    }
}
