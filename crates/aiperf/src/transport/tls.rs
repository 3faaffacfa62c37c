//! TLS for `https://` URLs: which server certificates are trusted.
//!
//! Trusted: the system's store (read by `rustls-native-certs`, which honours `SSL_CERT_FILE`
//! and `SSL_CERT_DIR`), Mozilla's roots (`webpki-roots`, the fallback where the system has
//! none), and every certificate of the `--ssl-ca-file` PEM files. `--ssl-insecure` skips
//! verification altogether (the handshake signatures are still checked, so the connection
//! is encrypted, but to a server nobody vouched for).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use crate::endpoint::TlsOptions;

/// The one-line warning printed when verification is off.
pub const INSECURE_WARNING: &str = "warning: --ssl-insecure: server certificates are NOT \
     verified; anyone between this client and the server can read and change the traffic";

/// The certificates of a PEM file (one or several). The error says what is wrong with the
/// file, naming it (the caller names the flag).
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: invalid PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (a PEM file with -----BEGIN CERTIFICATE----- blocks \
             is expected)",
            path.display()
        ));
    }
    // Each must parse as a trust anchor, as it will be used.
    let mut roots = RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("{}: unusable certificate ({e})", path.display()))?;
    }
    Ok(certs)
}

/// The rustls client configuration for `opts` (without ALPN: the connector sets it).
pub fn client_config(opts: &TlsOptions) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if opts.insecure {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Unreadable or unparsable system certificates are skipped: the others still count.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for path in &opts.ca_files {
        for cert in load_ca_file(path).map_err(|e| format!("--ssl-ca-file {e}"))? {
            roots
                .add(cert)
                .map_err(|e| format!("--ssl-ca-file {}: {e}", path.display()))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `--ssl-insecure`: every certificate is accepted; handshake signatures are still checked
/// with the provider's algorithms.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The record's message for a certificate the client rejected: what was wrong and what to
/// do about it.
pub fn certificate_message(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match e {
        C::NotValidForName | C::NotValidForNameContext { .. } => format!(
            "certificate not valid for this host name ({e:?}): use a host name the \
             certificate names in --url, or --ssl-insecure to skip verification"
        ),
        _ => format!(
            "certificate not trusted ({}): pass --ssl-ca-file with the server's CA, or \
             --ssl-insecure to skip verification",
            short_debug(e)
        ),
    }
}

/// `UnknownIssuer`, `Expired`, … without the fields some variants carry.
fn short_debug(e: &rustls::CertificateError) -> String {
    let s = format!("{e:?}");
    match s.find([' ', '(', '{']) {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_pem_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = load_ca_file(&missing).unwrap_err();
        assert!(
            err.starts_with("cannot read ") && err.contains("missing.pem"),
            "{err}"
        );

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = load_ca_file(&empty).unwrap_err();
        assert!(err.contains("no certificate in it"), "{err}");

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        let two = dir.path().join("two.pem");
        std::fs::write(&two, format!("{}{}", cert.cert.pem(), other.cert.pem())).unwrap();
        assert_eq!(
            load_ca_file(&two).unwrap().len(),
            2,
            "several certs in one file"
        );

        let opts = TlsOptions {
            ca_files: vec![two],
            insecure: false,
        };
        assert!(client_config(&opts).is_ok());
        let opts = TlsOptions {
            ca_files: vec![empty],
            insecure: false,
        };
        assert!(client_config(&opts)
            .unwrap_err()
            .starts_with("--ssl-ca-file "));
    }

    #[test]
    fn certificate_messages_say_what_to_do() {
        let m = certificate_message(&rustls::CertificateError::UnknownIssuer);
        assert_eq!(
            m,
            "certificate not trusted (UnknownIssuer): pass --ssl-ca-file with the server's \
             CA, or --ssl-insecure to skip verification"
        );
        let m = certificate_message(&rustls::CertificateError::NotValidForName);
        assert!(
            m.contains("host name") && m.contains("--ssl-insecure"),
            "{m}"
        );
    }
}
