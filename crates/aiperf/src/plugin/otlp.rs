//! `otlp`: exports each phase's results to an OpenTelemetry collector over OTLP/HTTP
//! (`http/protobuf` or `http/json`), at each `phase_complete`.
//!
//! One `ExportMetricsServiceRequest` per phase: the run's resource (`service.name=aiperf`,
//! run id, model, endpoint, load), the phase's request counts as cumulative monotonic Sums,
//! and every metric of the phase's summary as Gauges, one data point per statistic, with the
//! attributes `phase` and `stat`. The wire types are `opentelemetry-proto`'s, encoded with
//! prost or serialized to the OTLP JSON mapping (camelCase, 64-bit integers as strings,
//! enums as integers). A failed export is a hook error: counted and reported, the plugin
//! stays enabled and the run goes on.

use std::sync::Arc;
use std::time::Duration;

use aiperf_plugin::{Hook, PhaseStats, RunContext};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::webhook::{self, Delivery};
use super::{HookError, HookEvent, HookResult, Plugin};

const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
/// The path OTLP/HTTP exporters append to a base URL.
const METRICS_PATH: &str = "/v1/metrics";
/// The statistics exported for each metric of the summary.
const STATS: [&str; 6] = ["avg", "min", "max", "p50", "p90", "p99"];
/// Retries of an export (429, 5xx, transport errors), within `request_timeout_seconds`.
const RETRIES: u32 = 2;

pub fn schema() -> Option<Value> {
    Some(json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "endpoint": {"type": "string", "pattern": "^https?://"},
            "protocol": {"enum": ["http/protobuf", "http/json"]},
            "headers": webhook::headers_schema(),
            "request_timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            "resource_attributes": {
                "type": "object",
                "additionalProperties": {"type": ["string", "number", "boolean"]}
            }
        }
    }))
}

/// `http/protobuf` or `http/json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Protobuf,
    Json,
}

/// The collector's URL: a base URL without a path gets `/v1/metrics`, as OTLP exporters
/// do with `OTEL_EXPORTER_OTLP_ENDPOINT`; any other path is used as given.
fn metrics_url(raw: &str) -> Result<reqwest::Url, String> {
    let mut url = webhook::parse_url(raw, "endpoint")?;
    if url.path().is_empty() || url.path() == "/" {
        url.set_path(METRICS_PATH);
    }
    Ok(url)
}

/// The UCUM unit of a summary unit (`ms`, `tokens/sec`, ...), as OpenTelemetry writes them.
fn ucum(unit: &str) -> String {
    match unit {
        "ms" | "s" | "%" => unit.to_string(),
        "sec" => "s".to_string(),
        "tokens" => "{token}".to_string(),
        "requests" => "{request}".to_string(),
        "count" => "{count}".to_string(),
        "ratio" => "1".to_string(),
        "KB" => "kBy".to_string(),
        "tokens/sec" => "{token}/s".to_string(),
        "requests/sec" => "{request}/s".to_string(),
        "tokens/sec/user" => "{token}/s/{user}".to_string(),
        other => other.to_string(),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_string()))
}

/// The resource attributes of the run, then the configured ones (which win on a clash).
fn resource_attributes(context: &RunContext, extra: Option<&Value>) -> Vec<KeyValue> {
    use any_value::Value as V;
    let mut attrs = vec![
        kv_str("service.name", "aiperf"),
        kv_str("service.version", &context.aiperf_version),
        kv_str("aiperf.run_id", &context.run_id),
        kv_str("aiperf.model", &context.models.join(",")),
        kv_str("aiperf.endpoint_type", &context.endpoint_type),
        kv_str(
            "aiperf.url",
            &context
                .urls
                .iter()
                .map(|u| crate::secret::redact_text(u))
                .collect::<Vec<_>>()
                .join(","),
        ),
        kv_str("aiperf.load.mode", &context.load.mode),
    ];
    if let Some(c) = context.load.concurrency {
        attrs.push(kv(
            "aiperf.load.concurrency",
            V::IntValue(i64::try_from(c).unwrap_or(i64::MAX)),
        ));
    }
    if let Some(r) = context.load.request_rate.filter(|r| r.is_finite()) {
        attrs.push(kv("aiperf.load.request_rate", V::DoubleValue(r)));
    }
    if let Some(Value::Object(m)) = extra {
        for (k, v) in m {
            let value = match v {
                Value::String(s) => V::StringValue(s.clone()),
                Value::Bool(b) => V::BoolValue(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => V::IntValue(i),
                    None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
                },
                other => V::StringValue(other.to_string()),
            };
            attrs.retain(|a| a.key != *k);
            attrs.push(kv(k, value));
        }
    }
    attrs
}

pub struct Otlp {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    protocol: Protocol,
    limit: Duration,
    resource: Resource,
    version: String,
}

impl Otlp {
    pub fn build(config: &Value, context: &Arc<RunContext>) -> Result<Box<dyn Plugin>, String> {
        Ok(Box::new(Self::new(config, context)?))
    }

    /// From a config its schema accepted: the checks a schema cannot make.
    fn new(config: &Value, context: &RunContext) -> Result<Self, String> {
        let url = metrics_url(config["endpoint"].as_str().unwrap_or(DEFAULT_ENDPOINT))?;
        let protocol = match config["protocol"].as_str() {
            None | Some("http/protobuf") => Protocol::Protobuf,
            Some("http/json") => Protocol::Json,
            Some(other) => {
                return Err(format!(
                    "`protocol`: {other:?} is not http/protobuf or http/json"
                ))
            }
        };
        if let Some(extra) = config.get("resource_attributes").filter(|v| !v.is_null()) {
            if !extra.is_object() {
                return Err("`resource_attributes` must be a map".into());
            }
        }
        Ok(Otlp {
            client: webhook::client()?,
            url,
            headers: webhook::parse_headers(config)?,
            protocol,
            limit: webhook::request_timeout(config, webhook::DEFAULT_REQUEST_TIMEOUT),
            resource: Resource {
                attributes: resource_attributes(context, config.get("resource_attributes")),
                ..Resource::default()
            },
            version: context.aiperf_version.clone(),
        })
    }

    /// The export of one phase: its counts and the statistics of its summary, at `now_ns`
    /// unless the phase has ended.
    fn request(
        &self,
        phase: &str,
        stats: Option<&PhaseStats>,
        summary: Option<&Value>,
        now_ns: u64,
    ) -> ExportMetricsServiceRequest {
        let time = stats.and_then(|s| s.end_time_ns).unwrap_or(now_ns);
        let start = stats.map_or(0, |s| s.start_time_ns);
        let phase_attr = kv_str("phase", phase);
        let point =
            |value: number_data_point::Value, attrs: Vec<KeyValue>, start: u64| NumberDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: time,
                value: Some(value),
                ..NumberDataPoint::default()
            };
        let mut metrics = Vec::new();
        if let Some(s) = stats {
            for (name, desc, v) in [
                ("aiperf.requests.sent", "Requests sent", s.sent),
                (
                    "aiperf.requests.completed",
                    "Requests finished, with or without error",
                    s.completed,
                ),
                ("aiperf.requests.errors", "Requests that failed", s.errors),
                (
                    "aiperf.requests.cancelled",
                    "Requests cancelled before they finished",
                    s.cancelled,
                ),
            ] {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                metrics.push(Metric {
                    name: name.into(),
                    description: desc.into(),
                    unit: "{request}".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![point(
                            number_data_point::Value::AsInt(v),
                            vec![phase_attr.clone()],
                            start,
                        )],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        is_monotonic: true,
                    })),
                    ..Metric::default()
                });
            }
            if s.duration_sec.is_finite() {
                metrics.push(Metric {
                    name: "aiperf.phase.duration".into(),
                    description: "Duration of the phase".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![point(
                            number_data_point::Value::AsDouble(s.duration_sec),
                            vec![phase_attr.clone()],
                            0,
                        )],
                    })),
                    ..Metric::default()
                });
            }
        }
        if let Some(Value::Object(summary)) = summary {
            for (tag, m) in summary {
                let points: Vec<NumberDataPoint> = STATS
                    .iter()
                    .filter_map(|stat| {
                        let v = m.get(*stat).and_then(Value::as_f64)?;
                        v.is_finite().then(|| {
                            point(
                                number_data_point::Value::AsDouble(v),
                                vec![phase_attr.clone(), kv_str("stat", stat)],
                                0,
                            )
                        })
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let unit = m["unit"].as_str().unwrap_or("");
                metrics.push(Metric {
                    name: format!("aiperf.{tag}"),
                    description: format!("{tag} ({unit}); attribute `stat` is the statistic"),
                    unit: ucum(unit),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Metric::default()
                });
            }
        }
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "aiperf".into(),
                        version: self.version.clone(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    /// The request as the configured protocol's body and content type.
    fn encode(&self, req: &ExportMetricsServiceRequest) -> Result<(Vec<u8>, &'static str), String> {
        match self.protocol {
            Protocol::Protobuf => Ok((req.encode_to_vec(), "application/x-protobuf")),
            Protocol::Json => serde_json::to_vec(req)
                .map(|b| (b, "application/json"))
                .map_err(|e| format!("cannot encode the OTLP JSON: {e}")),
        }
    }

    /// Data points the collector said it rejected (a partial success), with its message.
    fn rejected(&self, body: &[u8]) -> Option<(i64, String)> {
        if body.is_empty() {
            return None;
        }
        let (n, msg) = match self.protocol {
            Protocol::Protobuf => {
                let p = ExportMetricsServiceResponse::decode(body)
                    .ok()?
                    .partial_success?;
                (p.rejected_data_points, p.error_message)
            }
            // By hand: the JSON mapping writes int64 as a string, which the crate's serde
            // types do not read back here.
            Protocol::Json => {
                let v: Value = serde_json::from_slice(body).ok()?;
                let p = v.get("partialSuccess")?;
                let n = match p.get("rejectedDataPoints")? {
                    Value::String(s) => s.parse().ok()?,
                    other => other.as_i64()?,
                };
                let msg = p["errorMessage"].as_str().unwrap_or_default().to_string();
                (n, msg)
            }
        };
        (n > 0).then_some((n, msg))
    }

    async fn export(&self, req: &ExportMetricsServiceRequest) -> HookResult {
        let (body, content_type) = self.encode(req).map_err(HookError::Hook)?;
        let answer = Delivery {
            client: &self.client,
            url: &self.url,
            headers: &self.headers,
            content_type,
            body,
            limit: self.limit,
            retries: RETRIES,
            what: "OTLP export",
        }
        .send()
        .await?;
        match self.rejected(&answer) {
            Some((n, msg)) => Err(HookError::Hook(format!(
                "OTLP export to {}: the collector rejected {n} data points: {}",
                webhook::origin(&self.url),
                crate::secret::redact_text(&msg.chars().take(200).collect::<String>())
            ))),
            None => Ok(()),
        }
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[async_trait::async_trait]
impl Plugin for Otlp {
    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::PhaseComplete]
    }

    async fn on_phase_complete(&mut self, e: &HookEvent) -> HookResult {
        let Some(phase) = e.phase else {
            return Ok(());
        };
        let req = self.request(
            phase.as_str(),
            e.stats.as_ref(),
            e.summary.as_deref(),
            now_ns(),
        );
        self.export(&req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiperf_plugin::LoadContext;

    fn context() -> RunContext {
        RunContext {
            run_id: "r-1".into(),
            aiperf_version: "9.9.9".into(),
            models: vec!["m1".into()],
            urls: vec!["http://srv:8000".into()],
            endpoint_type: "chat".into(),
            load: LoadContext {
                mode: "concurrency".into(),
                concurrency: Some(4),
                ..LoadContext::default()
            },
            ..RunContext::default()
        }
    }

    fn plugin(config: Value) -> Otlp {
        let schema = schema().unwrap();
        super::super::validate_config(&schema, &config).unwrap();
        Otlp::new(&config, &context()).unwrap()
    }

    fn stats() -> PhaseStats {
        PhaseStats {
            phase: "profiling".into(),
            sent: 7,
            completed: 6,
            errors: 1,
            cancelled: 1,
            duration_sec: 1.5,
            start_time_ns: 1_000,
            end_time_ns: Some(2_000),
            ..PhaseStats::default()
        }
    }

    fn summary() -> Value {
        json!({
            "time_to_first_token": {"unit": "ms", "avg": 2.5, "min": 1.0, "max": 9.0, "p1": 1.0,
                "p50": 2.0, "p90": 4.0, "p99": 5.0},
            "request_throughput": {"unit": "requests/sec", "avg": 12.0},
            "empty": {"unit": "ms", "avg": null},
        })
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    fn string(v: Option<&any_value::Value>) -> &str {
        match v {
            Some(any_value::Value::StringValue(s)) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    #[test]
    fn the_schema_forbids_unknown_keys() {
        let schema = schema().unwrap();
        let check = |c: Value| super::super::validate_config(&schema, &c);
        assert!(check(json!({"endpont": "http://x"}))
            .unwrap_err()
            .contains("endpont"));
        assert!(check(json!({"protocol": "grpc"})).is_err());
        assert!(check(json!({})).is_ok());
        assert!(check(json!({"protocol": "http/json", "headers": {"a": "b"},
            "request_timeout_seconds": 1, "resource_attributes": {"team": "ml", "n": 3}}))
        .is_ok());
        assert!(Otlp::new(&json!({"endpoint": "http://"}), &context()).is_err());
    }

    #[test]
    fn a_base_url_gets_the_metrics_path() {
        let u = |s: &str| metrics_url(s).unwrap().to_string();
        assert_eq!(
            u("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/metrics"
        );
        assert_eq!(u("http://c:4318/"), "http://c:4318/v1/metrics");
        assert_eq!(u("https://c/v1/metrics"), "https://c/v1/metrics");
        assert_eq!(
            u("https://c/otlp/v1/metrics?x=1"),
            "https://c/otlp/v1/metrics?x=1"
        );
        assert_eq!(u("https://c/custom"), "https://c/custom");
        assert_eq!(
            plugin(json!({})).url.as_str(),
            "http://localhost:4318/v1/metrics"
        );
    }

    #[test]
    fn units_follow_ucum() {
        assert_eq!(ucum("ms"), "ms");
        assert_eq!(ucum("tokens/sec"), "{token}/s");
        assert_eq!(ucum("requests"), "{request}");
        assert_eq!(ucum("ratio"), "1");
    }

    #[test]
    fn the_protobuf_request_decodes_to_the_run() {
        let p = plugin(json!({"resource_attributes": {"team": "ml", "service.name": "bench"}}));
        let req = p.request("profiling", Some(&stats()), Some(&summary()), 5_000);
        let (body, ct) = p.encode(&req).unwrap();
        assert_eq!(ct, "application/x-protobuf");
        let back = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(back, req);
        let rm = &back.resource_metrics[0];
        let res = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(string(attr(res, "aiperf.run_id")), "r-1");
        assert_eq!(string(attr(res, "aiperf.model")), "m1");
        assert_eq!(string(attr(res, "service.version")), "9.9.9");
        assert_eq!(
            string(attr(res, "service.name")),
            "bench",
            "configured wins"
        );
        assert_eq!(res.iter().filter(|a| a.key == "service.name").count(), 1);
        assert_eq!(string(attr(res, "team")), "ml");
        assert_eq!(
            attr(res, "aiperf.load.concurrency"),
            Some(&any_value::Value::IntValue(4))
        );
        let sm = &rm.scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "aiperf");
        let find = |n: &str| sm.metrics.iter().find(|m| m.name == n).unwrap();
        let completed = find("aiperf.requests.completed");
        assert_eq!(completed.unit, "{request}");
        let Some(metric::Data::Sum(sum)) = &completed.data else {
            panic!("a Sum: {completed:?}")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let dp = &sum.data_points[0];
        assert_eq!(dp.value, Some(number_data_point::Value::AsInt(6)));
        assert_eq!((dp.start_time_unix_nano, dp.time_unix_nano), (1_000, 2_000));
        assert_eq!(string(attr(&dp.attributes, "phase")), "profiling");
        let ttft = find("aiperf.time_to_first_token");
        assert_eq!(ttft.unit, "ms");
        let Some(metric::Data::Gauge(g)) = &ttft.data else {
            panic!("a Gauge: {ttft:?}")
        };
        let stats: Vec<&str> = g
            .data_points
            .iter()
            .map(|d| string(attr(&d.attributes, "stat")))
            .collect();
        assert_eq!(stats, STATS, "p1 is not exported");
        let p90 = &g.data_points[4];
        assert_eq!(p90.value, Some(number_data_point::Value::AsDouble(4.0)));
        assert_eq!(find("aiperf.request_throughput").unit, "{request}/s");
        assert!(
            !sm.metrics.iter().any(|m| m.name == "aiperf.empty"),
            "no value, no metric"
        );
        // Without stats (the phase has not ended), the points are stamped now.
        let req = p.request("warmup", None, Some(&summary()), 5_000);
        let m = &req.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(metric::Data::Gauge(g)) = &m.data else {
            panic!("{m:?}")
        };
        assert_eq!(g.data_points[0].time_unix_nano, 5_000);
    }

    #[test]
    fn the_json_encoding_follows_the_otlp_mapping() {
        let p = plugin(json!({"protocol": "http/json"}));
        let req = p.request("profiling", Some(&stats()), Some(&summary()), 5_000);
        let (body, ct) = p.encode(&req).unwrap();
        assert_eq!(ct, "application/json");
        let v: Value = serde_json::from_slice(&body).unwrap();
        let rm = &v["resourceMetrics"][0];
        let attrs = rm["resource"]["attributes"].as_array().unwrap();
        let get = |k: &str| attrs.iter().find(|a| a["key"] == k).unwrap()["value"].clone();
        assert_eq!(get("aiperf.run_id"), json!({"stringValue": "r-1"}));
        assert_eq!(get("aiperf.load.concurrency"), json!({"intValue": "4"}));
        let metrics = rm["scopeMetrics"][0]["metrics"].as_array().unwrap();
        let completed = metrics
            .iter()
            .find(|m| m["name"] == "aiperf.requests.completed")
            .unwrap();
        let sum = &completed["sum"];
        assert_eq!(sum["isMonotonic"], true);
        assert_eq!(sum["aggregationTemporality"], 2, "enums as integers");
        let dp = &sum["dataPoints"][0];
        assert_eq!(dp["asInt"], "6", "int64 as a string");
        assert_eq!(dp["timeUnixNano"], "2000");
        assert_eq!(dp["startTimeUnixNano"], "1000");
        let ttft = metrics
            .iter()
            .find(|m| m["name"] == "aiperf.time_to_first_token")
            .unwrap();
        assert_eq!(ttft["gauge"]["dataPoints"][0]["asDouble"], 2.5);
        // And it reads back into the same request.
        let back: ExportMetricsServiceRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn a_partial_success_is_reported() {
        let p = plugin(json!({"protocol": "http/json"}));
        let body = br#"{"partialSuccess": {"rejectedDataPoints": "3", "errorMessage": "bad"}}"#;
        assert_eq!(p.rejected(body), Some((3, "bad".to_string())));
        assert_eq!(p.rejected(b"{}"), None);
        assert_eq!(
            p.rejected(br#"{"partialSuccess": {"rejectedDataPoints": 2}}"#),
            Some((2, String::new()))
        );
        assert_eq!(p.rejected(br#"{"partialSuccess": {}}"#), None);
        assert_eq!(p.rejected(b""), None);
        let p = plugin(json!({}));
        let resp = ExportMetricsServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess {
                    rejected_data_points: 2,
                    error_message: "x".into(),
                },
            ),
        };
        assert_eq!(p.rejected(&resp.encode_to_vec()), Some((2, "x".into())));
    }
}
