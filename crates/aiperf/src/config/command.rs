//! The command line as typed, for the export's `input_config.cli_command`, with `--api-key`
//! and secret-looking headers hidden.

use crate::secret::{is_secret_key, REDACTED};

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The command line as typed, with `--api-key` and secret-looking headers hidden.
pub(super) fn redacted_command(args: &[String]) -> String {
    let hide_header = |h: &str| match h.split_once(':') {
        Some((name, _)) if is_secret_key(name) => format!("{name}: {REDACTED}"),
        _ => h.to_string(),
    };
    let mut cmd = String::from("aiperf profile");
    let mut prev = "";
    for a in args {
        let shown = match prev {
            "--api-key" => REDACTED.to_string(),
            "-H" | "--header" => hide_header(a),
            _ if a.starts_with("--api-key=") => format!("--api-key={REDACTED}"),
            _ if a.starts_with("--header=") => {
                format!("--header={}", hide_header(&a["--header=".len()..]))
            }
            _ => a.clone(),
        };
        cmd.push(' ');
        cmd.push_str(&shell_quote(&shown));
        prev = a;
    }
    cmd
}
