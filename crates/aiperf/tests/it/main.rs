//! The integration tests of `aiperf`, in one test binary: the real binary against the
//! built-in mock, `aiperf mock-server` processes or scripted servers, plus config validation
//! in process. Shared helpers are in `support`.
//!
//! Every test takes the CPU gate first: `support::exclusive()` if it asserts on measured
//! latencies (`accuracy`), `support::shared()` otherwise.
//!
//! Run one group with a filter, e.g. `cargo test -p aiperf --test it load::`.

mod support;

mod accuracy;
mod artifacts;
mod compat;
mod config;
mod counting;
mod dashboard;
mod exporters;
mod failures;
mod faults;
mod goodput;
mod http_timing;
mod kernel_time;
mod kube;
mod layers;
mod load;
mod mock_metrics;
mod parity;
mod plugins;
mod profile;
mod prometheus_exporter;
mod report;
mod request_shape;
mod scale_out;
mod search;

mod server_metrics;
mod streams;
mod sweeps;
mod timeslices;
mod tls;
mod tokenizer;
mod transport;
mod workloads;
