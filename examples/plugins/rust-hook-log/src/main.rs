//! Example aiperf plugin written in Rust.
//!
//! Subscribes to every lifecycle hook (not the streaming `request_records` and `progress`)
//! and, for each event, appends one line
//! `rust-hook-log <hook> <phase-or-->` to the file named by the required config key `file`,
//! e.g. `rust-hook-log phase_start warmup` or `rust-hook-log benchmark_start -`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::ExitCode;

use aiperf_plugin::{serve, Event, Hook, Plugin};
use serde_json::{json, Value};

#[derive(Default)]
struct HookLog {
    file: Option<File>,
}

impl Plugin for HookLog {
    fn name(&self) -> &str {
        "rust-hook-log"
    }

    fn version(&self) -> &str {
        env!("CARGO_PKG_VERSION")
    }

    fn hooks(&self) -> Vec<Hook> {
        Hook::LIFECYCLE.to_vec()
    }

    fn config_schema(&self) -> Option<Value> {
        Some(json!({
            "type": "object",
            // Any other key is a typo: aiperf rejects it with its file:line.
            "additionalProperties": false,
            "properties": { "file": { "type": "string" } },
            "required": ["file"]
        }))
    }

    fn configure(&mut self, config: Value) -> Result<(), String> {
        let path = config
            .get("file")
            .and_then(Value::as_str)
            .ok_or("config key `file` (a string) is required")?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        self.file = Some(file);
        Ok(())
    }

    fn on_event(&mut self, event: &Event) -> Result<(), String> {
        let file = self.file.as_mut().ok_or("not configured")?;
        let phase = event.phase.as_deref().unwrap_or("-");
        // One write per line, so each line lands whole in append mode.
        let line = format!("rust-hook-log {} {}\n", event.hook, phase);
        file.write_all(line.as_bytes())
            .map_err(|e| format!("cannot write hook log: {e}"))
    }
}

fn main() -> ExitCode {
    match serve(HookLog::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rust-hook-log: {e}");
            ExitCode::FAILURE
        }
    }
}
