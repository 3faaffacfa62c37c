//! Protocol types and SDK for aiperf plugins written in Rust.
//!
//! An aiperf plugin is an executable that aiperf (the *host*) starts as a child process. They
//! talk over the plugin's stdin/stdout with one JSON message per line (protocol version 1,
//! specified in `docs/plugin-protocol.md`). This crate provides:
//!
//! - [`protocol`]: serde types for every message ([`HostMessage`], [`PluginMessage`],
//!   [`Event`], [`PhaseStats`], [`Hook`]) plus [`encode_line`] / [`decode_line`]. The host
//!   uses these too.
//! - The SDK (re-exported here from [`sdk`]): implement [`Plugin`] and call [`serve`], which
//!   answers `hello` with a `handshake`, passes the config to [`Plugin::configure`], calls
//!   the hook's method for each event and acks it (a returned `Err` or a panic becomes an
//!   ack with `error`), and returns on `shutdown` or end of input. Lifecycle hooks go to
//!   [`Plugin::on_event`]; the opt-in streaming hooks (list them in [`Plugin::hooks`]) go to
//!   [`Plugin::on_request_records`] (finished requests, each a `profile_export.jsonl` line)
//!   and [`Plugin::on_progress`] ([`PhaseStats`] and a [`ProgressWindow`]). Every hook method
//!   has a default that does nothing.
//! - Reports: [`report`] adds metrics (numbers, strings, booleans) and notes to the plugin's
//!   part of the run's report (`plugins.<name>.report` in `profile_export_aiperf.json`);
//!   build them with [`Report`]. From inside a callback the `report` message is written just
//!   before that callback's reply, like [`log`] messages.
//!
//! **Stdout belongs to the protocol**: never `println!` in a plugin. Use [`log`] (sent to the
//! host as a `log` message) or `eprintln!` (stderr, which the host copies to its log).
//!
//! # Example
//!
//! ```no_run
//! use aiperf_plugin::{serve, Event, Hook, Plugin};
//! use serde_json::{json, Value};
//!
//! #[derive(Default)]
//! struct Counter {
//!     prefix: String,
//! }
//!
//! impl Plugin for Counter {
//!     fn name(&self) -> &str {
//!         "counter"
//!     }
//!     fn version(&self) -> &str {
//!         env!("CARGO_PKG_VERSION")
//!     }
//!     fn hooks(&self) -> Vec<Hook> {
//!         vec![Hook::PhaseComplete]
//!     }
//!     fn config_schema(&self) -> Option<Value> {
//!         Some(json!({"type": "object", "properties": {"prefix": {"type": "string"}}}))
//!     }
//!     fn configure(&mut self, config: Value) -> Result<(), String> {
//!         self.prefix = config["prefix"].as_str().unwrap_or("").to_owned();
//!         Ok(())
//!     }
//!     fn on_event(&mut self, event: &Event) -> Result<(), String> {
//!         if let Some(stats) = &event.stats {
//!             eprintln!("{}{}: {} completed", self.prefix, stats.phase, stats.completed);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     serve(Counter::default())
//! }
//! ```
//!
//! A plugin that watches every finished request and reports SLO violations:
//!
//! ```no_run
//! use aiperf_plugin::{report, serve, Event, Hook, Plugin, Report, Value};
//!
//! #[derive(Default)]
//! struct SloAlarm {
//!     violations: u64,
//! }
//!
//! impl Plugin for SloAlarm {
//!     fn name(&self) -> &str {
//!         "slo-alarm"
//!     }
//!     fn version(&self) -> &str {
//!         "0.1.0"
//!     }
//!     fn hooks(&self) -> Vec<Hook> {
//!         vec![Hook::RequestRecords, Hook::PhaseComplete]
//!     }
//!     fn on_request_records(&mut self, _: &Event, records: &[Value], _dropped: u64) -> Result<(), String> {
//!         let ttft = |r: &Value| r["metrics"]["time_to_first_token"]["value"].as_f64();
//!         self.violations += records.iter().filter(|r| ttft(r).is_some_and(|v| v > 200.0)).count() as u64;
//!         Ok(())
//!     }
//!     fn on_event(&mut self, _: &Event) -> Result<(), String> {
//!         report(
//!             Report::new()
//!                 .metric("slo_violations", self.violations)
//!                 .note(format!("{} requests over 200 ms TTFT", self.violations)),
//!         );
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     serve(SloAlarm::default())
//! }
//! ```

pub mod protocol;
pub mod sdk;

pub use protocol::{
    decode_line, encode_line, Event, Hook, HostMessage, LoadContext, PhaseStats, PluginMessage,
    PluginReport, ProgressWindow, RunContext, ShardPart, SweepParameters, SweepPoint, WindowStat,
    PROTOCOL_VERSION,
};
pub use sdk::*;
pub use serde_json::Value;
