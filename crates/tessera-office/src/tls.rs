//! TLS for the office: its self-signed certificate and key
//! (`tessera office init`), the server's rustls configuration, and the
//! terminal's verifier, which accepts exactly the pinned certificate.
//!
//! The office certificate is self-signed (ECDSA P-256, made with `rcgen`);
//! no certificate authority is involved. A terminal's bundle carries the
//! SHA-256 of the certificate's DER encoding
//! ([`OfficeLink::Pinned`](tessera_crypto::keys::OfficeLink)); the client
//! compares the end-entity certificate the server presents with that pin
//! and still verifies the handshake signatures with the crypto provider's
//! algorithms, so only the holder of the office's private key completes a
//! handshake. Host names are not checked: the pin names the office.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// The office's certificate in its directory (PEM).
pub const CERT_FILE: &str = "office-cert.pem";
/// The office's TLS private key in its directory (PKCS#8 PEM, mode 0600).
pub const KEY_FILE: &str = "office-key.pem";

/// Errors of the office's TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate or key file is not what `office init` writes.
    #[error("{0}: not the office's TLS certificate or key")]
    Malformed(String),
    /// The certificate could not be made.
    #[error("cannot make the office certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The office's TLS identity: its certificate and private key.
pub struct OfficeIdentity {
    cert: CertificateDer<'static>,
    key_pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for OfficeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfficeIdentity")
            .field("cert_sha256", &hex::encode(self.cert_sha256()))
            .finish_non_exhaustive()
    }
}

use tessera_client::tls::provider;

impl OfficeIdentity {
    /// A fresh self-signed certificate (ECDSA P-256) for the office, naming
    /// `localhost`, `127.0.0.1`, `::1` and `hostnames` (informative only:
    /// terminals recognize the office by the pin, not by name).
    ///
    /// # Errors
    /// [`TlsError::Generate`] if the key or certificate cannot be made.
    pub fn generate(hostnames: &[String]) -> Result<Self, TlsError> {
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        names.extend(hostnames.iter().cloned());
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(names).map_err(|e| TlsError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Tessera back office");
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        Ok(Self {
            cert: cert.der().clone(),
            key_pkcs8: Zeroizing::new(key.serialize_der()),
        })
    }

    /// SHA-256 of the certificate's DER encoding: the pin terminals hold.
    pub fn cert_sha256(&self) -> [u8; 32] {
        cert_sha256(&self.cert)
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert
    }

    /// Writes [`CERT_FILE`] and [`KEY_FILE`] into the office directory,
    /// both new (never overwritten), the key readable by its owner only.
    ///
    /// # Errors
    /// [`TlsError::File`] if either exists already or cannot be written.
    pub fn write_new(&self, dir: &Path) -> Result<(), TlsError> {
        let cert_pem = pem_encode("CERTIFICATE", &self.cert);
        let key_pem = Zeroizing::new(pem_encode("PRIVATE KEY", &self.key_pkcs8));
        write_new_private(&dir.join(KEY_FILE), key_pem.as_bytes())?;
        write_new_private(&dir.join(CERT_FILE), cert_pem.as_bytes())
    }

    /// Reads the identity `office init` wrote into `dir`.
    ///
    /// # Errors
    /// [`TlsError::File`] if a file is missing or unreadable,
    /// [`TlsError::Malformed`] if it is not a certificate or a PKCS#8 key.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(Zeroizing::new)
                .map_err(|source| TlsError::File {
                    path: p.display().to_string(),
                    source,
                })
        };
        let cert = pem_decode("CERTIFICATE", &read(&cert_path)?)
            .ok_or_else(|| TlsError::Malformed(cert_path.display().to_string()))?;
        let key = pem_decode("PRIVATE KEY", &read(&key_path)?)
            .ok_or_else(|| TlsError::Malformed(key_path.display().to_string()))?;
        Ok(Self {
            cert: CertificateDer::from(cert.to_vec()),
            key_pkcs8: key,
        })
    }

    /// The server's rustls configuration (TLS 1.2 and 1.3, HTTP/1.1).
    ///
    /// # Errors
    /// [`TlsError::Config`] if rustls refuses the certificate or key.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

pub use tessera_client::tls::{cert_sha256, pinned_client_config, PinnedCert};

fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    tessera_crypto::files::write_new_private(path, bytes).map_err(|source| TlsError::File {
        path: path.display().to_string(),
        source,
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let p = pem::Pem::new(label, der.to_vec());
    pem::encode_config(&p, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

fn pem_decode(label: &str, text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let p = pem::parse(text).ok()?;
    (p.tag() == label).then(|| Zeroizing::new(p.into_contents()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn identity_round_trips_through_its_files_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = OfficeIdentity::generate(&["office.example".into()]).unwrap();
        id.write_new(dir.path()).unwrap();
        let back = OfficeIdentity::load(dir.path()).unwrap();
        assert_eq!(back.cert_sha256(), id.cert_sha256());
        assert!(back.server_config().is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(id.write_new(dir.path()).is_err(), "never overwritten");
        std::fs::write(dir.path().join(CERT_FILE), "not a certificate").unwrap();
        assert!(matches!(OfficeIdentity::load(dir.path()), Err(TlsError::Malformed(_))));
    }
}
