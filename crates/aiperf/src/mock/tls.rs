//! HTTPS for `aiperf mock-server`: a certificate from PEM files (`--tls-cert`, `--tls-key`)
//! or a self-signed one made at start (`--tls-self-signed`), and the ALPN protocols offered
//! (`--tls-alpn`; HTTP/2 only is how a test or a measurement gets an h2-only server).
//!
//! TLS sits on top of the connection's [`super::conn::Socket`], so the kernel still stamps
//! each ciphertext read: a request's arrival is the stamp of the read that completed it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// Where the mock's certificate comes from.
#[derive(Debug, Clone)]
pub enum Certificate<'a> {
    /// A chain (leaf first) and its key, PEM files.
    Files { cert: &'a Path, key: &'a Path },
    /// Self-signed for `localhost` and `127.0.0.1`, made now.
    SelfSigned,
}

/// `--tls-alpn`: `h2`, `http/1.1` (or `http1.1`), comma-separated, in order of preference.
pub fn alpn(list: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let proto = match p {
            "h2" => b"h2".to_vec(),
            "http/1.1" | "http1.1" => b"http/1.1".to_vec(),
            _ => {
                return Err(format!(
                    "--tls-alpn: unknown protocol `{p}` (h2 and http/1.1 are served)"
                ))
            }
        };
        if !out.contains(&proto) {
            out.push(proto);
        }
    }
    if out.is_empty() {
        return Err("--tls-alpn: no protocol given (h2, http/1.1)".into());
    }
    Ok(out)
}

/// The server's rustls configuration; the error names the flag and the file.
pub fn server_config(cert: Certificate<'_>, alpn: Vec<Vec<u8>>) -> Result<ServerConfig, String> {
    let (chain, key) = match cert {
        Certificate::SelfSigned => {
            let c = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .map_err(|e| format!("--tls-self-signed: cannot make a certificate: {e}"))?;
            let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
            (vec![c.cert.der().clone()], key)
        }
        Certificate::Files { cert, key } => {
            let pem = std::fs::read(cert)
                .map_err(|e| format!("--tls-cert cannot read {}: {e}", cert.display()))?;
            let chain = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--tls-cert {}: invalid PEM ({e})", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "--tls-cert {}: no certificate in it (-----BEGIN CERTIFICATE----- blocks \
                     expected)",
                    cert.display()
                ));
            }
            let pem = std::fs::read(key)
                .map_err(|e| format!("--tls-key cannot read {}: {e}", key.display()))?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                format!(
                    "--tls-key {}: no private key in it ({e}; PKCS#8, PKCS#1 or SEC1 PEM \
                     expected)",
                    key.display()
                )
            })?;
            (chain, key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: the key does not fit the certificate ({e})"))?;
    config.alpn_protocols = alpn;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_lists_are_checked() {
        assert_eq!(alpn("h2").unwrap(), vec![b"h2".to_vec()]);
        assert_eq!(
            alpn("http1.1, h2,h2").unwrap(),
            vec![b"http/1.1".to_vec(), b"h2".to_vec()]
        );
        assert!(alpn("spdy").unwrap_err().contains("spdy"));
        assert!(alpn(" , ").is_err());
    }

    #[test]
    fn certificates_from_files_or_made_here() {
        assert!(server_config(Certificate::SelfSigned, vec![b"h2".to_vec()]).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        let files = Certificate::Files {
            cert: &cert,
            key: &key,
        };
        assert!(server_config(files, vec![b"http/1.1".to_vec()]).is_ok());
        // A key that is not one, a certificate file without certificates.
        let files = Certificate::Files {
            cert: &cert,
            key: &cert,
        };
        let err = server_config(files, vec![]).unwrap_err();
        assert!(err.starts_with("--tls-key "), "{err}");
        let files = Certificate::Files {
            cert: &key,
            key: &key,
        };
        let err = server_config(files, vec![]).unwrap_err();
        assert!(err.contains("no certificate in it"), "{err}");
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let files = Certificate::Files {
            cert: &cert,
            key: &key,
        };
        let err = server_config(files, vec![]).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
    }
}
