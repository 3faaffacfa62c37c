//! From a failed exchange to the record's `ErrorDetails`: which kind of error, and a message
//! that says what happened (and, for the client's own limits and certificates, what to do).
//!
//! Only the error path runs this code.

use std::error::Error;
use std::io;

use super::h1::H1Error;
use super::tls;
use crate::metrics::record::kind;
use crate::metrics::ErrorDetails;

/// An error and its sources, one line, without repeating a source already quoted.
pub fn error_chain(e: &dyn Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

/// The client's own resource limits, by OS error: the message of a `ClientResourceError`,
/// or `None` for any other error.
pub fn client_resource(e: &io::Error) -> Option<&'static str> {
    #[cfg(unix)]
    {
        let msg = match e.raw_os_error()? {
            libc::EMFILE => {
                "client limit: the client ran out of file descriptors (EMFILE, too many open \
                 files): raise it with `ulimit -n`, or lower --concurrency"
            }
            libc::ENFILE => {
                "client limit: the client machine's file table is full (ENFILE): raise \
                 fs.file-max, or lower --concurrency"
            }
            libc::ENOBUFS | libc::ENOMEM => {
                "client limit: the client's kernel ran out of socket buffer memory (ENOBUFS): \
                 lower --concurrency"
            }
            libc::EADDRNOTAVAIL => {
                "client limit: no local address/port free for a new connection \
                 (EADDRNOTAVAIL, usually the ephemeral ports are used up): add source \
                 addresses with --local-addresses, lower --concurrency, or widen \
                 net.ipv4.ip_local_port_range"
            }
            _ => return None,
        };
        Some(msg)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        None
    }
}

fn resource_error(e: &io::Error) -> Option<ErrorDetails> {
    client_resource(e).map(|m| ErrorDetails::new(None, kind::CLIENT_RESOURCE_ERROR, m))
}

/// `e` and every error under it, outermost first. An `io::Error` that wraps another error
/// leads to that error (its own `source()` skips it: it is the wrapped error's source), so
/// an OS error or a rustls error is found however deep connectors wrapped it.
fn chain<'a>(e: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push(err);
        if out.len() > 32 {
            break;
        }
        cur = match err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => err.source(),
        };
    }
    out
}

/// Every `io::Error` in the chain.
fn io_errors<'a>(e: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a io::Error> {
    chain(e)
        .into_iter()
        .filter_map(|err| err.downcast_ref::<io::Error>())
}

/// A certificate rustls rejected, anywhere in the chain.
fn certificate_in_chain<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::CertificateError> {
    chain(e)
        .into_iter()
        .find_map(|err| match err.downcast_ref::<rustls::Error>() {
            Some(rustls::Error::InvalidCertificate(c)) => Some(c),
            _ => None,
        })
}

/// The `http://` client failed before a response head: connect, write, or read the head.
pub fn h1_send(e: &H1Error) -> ErrorDetails {
    match e {
        H1Error::Connect { source, .. } => resource_error(source)
            .unwrap_or_else(|| ErrorDetails::new(None, kind::CONNECTION_ERROR, error_chain(e))),
        H1Error::ConnectTimeout(_) => {
            ErrorDetails::new(None, kind::CONNECTION_ERROR, error_chain(e))
        }
        H1Error::ClosedBeforeResponse(m) => {
            ErrorDetails::new(None, kind::CONNECTION_CLOSED_BEFORE_RESPONSE, *m)
        }
        H1Error::TooLarge(m) => ErrorDetails::new(None, kind::RESPONSE_TOO_LARGE, m.as_str()),
        H1Error::Io(io) => resource_error(io)
            .unwrap_or_else(|| ErrorDetails::new(None, kind::REQUEST_ERROR, error_chain(e))),
        H1Error::Handshake {
            certificate: Some(c),
            ..
        } => ErrorDetails::new(None, kind::CERTIFICATE_ERROR, tls::certificate_message(c)),
        H1Error::Handshake { .. } | H1Error::Http2Only(_) => {
            ErrorDetails::new(None, kind::CONNECTION_ERROR, error_chain(e))
        }
        H1Error::Closed | H1Error::Invalid(_) | H1Error::Tls(_) => {
            ErrorDetails::new(None, kind::REQUEST_ERROR, error_chain(e))
        }
    }
}

/// The `http://` client failed while reading a body (`streaming`: an SSE body).
pub fn h1_body(e: &H1Error, streaming: bool) -> ErrorDetails {
    match e {
        H1Error::TooLarge(m) => ErrorDetails::new(None, kind::RESPONSE_TOO_LARGE, m.as_str()),
        _ if streaming => truncated(e),
        _ => ErrorDetails::new(None, kind::RESPONSE_READ_ERROR, error_chain(e)),
    }
}

/// The `https://` client (hyper) failed before a response head.
pub fn hyper_send(e: &hyper_util::client::legacy::Error) -> ErrorDetails {
    if let Some(c) = certificate_in_chain(e) {
        return ErrorDetails::new(None, kind::CERTIFICATE_ERROR, tls::certificate_message(c));
    }
    if let Some(r) = io_errors(e).find_map(resource_error) {
        return r;
    }
    if e.is_connect() {
        return ErrorDetails::new(None, kind::CONNECTION_ERROR, error_chain(e));
    }
    // On a connection, after the request went to it (hyper resends only a request it never
    // started to write): closed or reset before a response.
    let closed = io_errors(e).any(|io| {
        matches!(
            io.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
    }) || chain(e).into_iter().any(|err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
    });
    if closed {
        return ErrorDetails::new(
            None,
            kind::CONNECTION_CLOSED_BEFORE_RESPONSE,
            format!(
                "{} (not sent again: the server may have received it)",
                error_chain(e)
            ),
        );
    }
    ErrorDetails::new(None, kind::REQUEST_ERROR, error_chain(e))
}

/// A stream that broke off.
pub fn truncated(e: &dyn Error) -> ErrorDetails {
    ErrorDetails::new(
        None,
        kind::STREAM_TRUNCATED,
        format!("stream cut short: {}", error_chain(e)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_own_limits_are_client_resource_errors() {
        for (errno, needle) in [
            (libc::EMFILE, "ulimit -n"),
            (libc::ENFILE, "fs.file-max"),
            (libc::ENOBUFS, "socket buffer"),
            (libc::ENOMEM, "socket buffer"),
            (libc::EADDRNOTAVAIL, "--local-addresses"),
        ] {
            let io = io::Error::from_raw_os_error(errno);
            let msg = client_resource(&io).unwrap_or_else(|| panic!("errno {errno}"));
            assert!(msg.starts_with("client limit: "), "{msg}");
            assert!(msg.contains(needle), "{msg}");
            assert!(msg.contains("--concurrency"), "{msg}");
            assert!(msg.len() <= 300, "kept whole in the record: {msg}");
            // As the connect error of the http:// client.
            let e = H1Error::Connect {
                addr: "127.0.0.1:1".into(),
                source: io::Error::from_raw_os_error(errno),
            };
            let d = h1_send(&e);
            assert_eq!(
                (d.code, d.kind.as_str(), d.message.as_str()),
                (None, kind::CLIENT_RESOURCE_ERROR, msg)
            );
            assert!(d.is_client_side());
            // Wherever it sits in an error chain (hyper wraps io errors).
            let wrapped = Wrapper(io::Error::other(io::Error::from_raw_os_error(errno)));
            assert!(io_errors(&wrapped).find_map(client_resource).is_some());
        }
        // The server's doing, not the client's.
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::EHOSTUNREACH,
        ] {
            let e = H1Error::Connect {
                addr: "127.0.0.1:1".into(),
                source: io::Error::from_raw_os_error(errno),
            };
            let d = h1_send(&e);
            assert_eq!(d.kind, kind::CONNECTION_ERROR, "errno {errno}");
            assert!(!d.is_client_side());
        }
        assert!(client_resource(&io::Error::other("no errno")).is_none());
    }

    #[derive(Debug)]
    struct Wrapper(io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn certificates_are_found_inside_io_errors() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        // As hyper-rustls wraps it: an io::Error in an io::Error in a boxed error.
        let wrapped = Wrapper(io::Error::other(io));
        assert_eq!(
            certificate_in_chain(&wrapped),
            Some(&rustls::CertificateError::UnknownIssuer)
        );
        assert_eq!(certificate_in_chain(&Wrapper(io::Error::other("x"))), None);
    }

    #[test]
    fn each_h1_failure_has_its_kind() {
        let k = |e: H1Error| h1_send(&e).kind;
        assert_eq!(
            k(H1Error::ClosedBeforeResponse("m")),
            kind::CONNECTION_CLOSED_BEFORE_RESPONSE
        );
        assert_eq!(k(H1Error::TooLarge("m".into())), kind::RESPONSE_TOO_LARGE);
        assert_eq!(
            k(H1Error::ConnectTimeout("a".into())),
            kind::CONNECTION_ERROR
        );
        assert_eq!(k(H1Error::Closed), kind::REQUEST_ERROR);
        assert_eq!(k(H1Error::Invalid("x".into())), kind::REQUEST_ERROR);
        assert_eq!(
            h1_body(&H1Error::TooLarge("m".into()), true).kind,
            kind::RESPONSE_TOO_LARGE
        );
        assert_eq!(h1_body(&H1Error::Closed, true).kind, kind::STREAM_TRUNCATED);
        assert_eq!(
            h1_body(&H1Error::Closed, false).kind,
            kind::RESPONSE_READ_ERROR
        );
    }
}
