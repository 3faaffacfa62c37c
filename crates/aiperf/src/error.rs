//! The library's one error type. Per-request failures are data (`ErrorDetails` on a record)
//! and plugin failures are isolated; this is for what stops a command: bad input (exit 2) or
//! an environment that cannot do the job (exit 1).

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, config file, URL, tokenizer or input file: nothing was sent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or socket the run needs (artifacts, the mock's listener).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `--wait-for-model-timeout` passed before the server was ready: nothing was sent,
    /// and the flags were fine (exit 1).
    #[error(transparent)]
    NotReady(#[from] crate::readiness::NotReady),
    /// A thread or task of the tool itself failed (a bug): exit 1.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The process exit code for this error (see docs/architecture.md, "Error handling").
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::Io { .. } | Error::NotReady(_) | Error::Internal(_) => 1,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `.context(...)` for I/O results: what was being done, then the OS's reason.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_messages() {
        let e = Error::from(ConfigError::Usage("bad flag".into()));
        assert_eq!((e.exit_code(), e.to_string()), (2, "bad flag".to_string()));
        let io: std::io::Result<()> = Err(std::io::Error::other("disk full"));
        let e = io
            .context(|| "cannot write profile_export.jsonl".into())
            .unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "cannot write profile_export.jsonl: disk full"
        );
    }
}
