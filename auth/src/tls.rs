//! TLS server settings (rustls, ring provider) from PEM files: the
//! certificate chain, its private key and, for client certificates (mTLS),
//! the CA that signs them. [`TlsServer::reload`] re-reads the files (on
//! SIGHUP): connections accepted afterwards get the new certificate, those
//! already open keep theirs, and files that do not load leave the old
//! settings in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

use crate::principal::Principal;

/// Where the certificate, key and client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Whether a listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Not asked for.
    None,
    /// Asked for and checked when given; a client may send none.
    Optional,
    /// A client without a certificate signed by the client CA is refused.
    Required,
}

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the expected kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS settings: {0}")]
    Rustls(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The server configs of one set of files, by [`ClientCerts`].
#[derive(Debug)]
struct Configs {
    none: Arc<ServerConfig>,
    optional: Arc<ServerConfig>,
    required: Arc<ServerConfig>,
}

/// TLS settings shared by every TLS listener of the node.
#[derive(Debug)]
pub struct TlsServer {
    files: TlsFiles,
    configs: RwLock<Arc<Configs>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles) -> Result<Configs, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, e))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let roots = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                roots
                    .add(cert.map_err(|e| file_error(path, e))?)
                    .map_err(|e| file_error(path, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(path, "no CA certificate in the file"));
            }
            Some(Arc::new(roots))
        }
        None => None,
    };
    let build = |client_certs: ClientCerts| -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match (&roots, client_certs) {
            (Some(roots), ClientCerts::Optional | ClientCerts::Required) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider);
                let verifier = if client_certs == ClientCerts::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| TlsError::Rustls(e.to_string()))?,
                )
            }
            _ => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map(Arc::new)
            .map_err(|e| TlsError::Rustls(e.to_string()))
    };
    Ok(Configs {
        none: build(ClientCerts::None)?,
        optional: build(ClientCerts::Optional)?,
        required: build(ClientCerts::Required)?,
    })
}

impl TlsServer {
    /// Load `files`.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let configs = load(&files)?;
        Ok(Arc::new(Self {
            files,
            configs: RwLock::new(Arc::new(configs)),
        }))
    }

    /// Whether a client CA is configured (client certificates can be
    /// checked).
    pub fn has_client_ca(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-read the files; on error the settings in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = Arc::new(load(&self.files)?);
        if let Ok(mut current) = self.configs.write() {
            *current = configs;
        }
        Ok(())
    }

    /// An acceptor with the current settings. Without a client CA,
    /// client certificates are never asked for.
    pub fn acceptor(&self, client_certs: ClientCerts) -> TlsAcceptor {
        let configs = match self.configs.read() {
            Ok(configs) => configs.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let config = match client_certs {
            ClientCerts::None => configs.none.clone(),
            ClientCerts::Optional => configs.optional.clone(),
            ClientCerts::Required => configs.required.clone(),
        };
        TlsAcceptor::from(config)
    }
}

/// The principal of a verified client certificate: `User:` and its
/// subject as an RFC 4514 string (the most specific name first, as
/// Kafka's default SSL principal builder writes it, e.g.
/// `User:CN=alice,O=acme`). `None` for bytes that are not a certificate.
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<Principal> {
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let subject = parsed.tbs_certificate.subject.to_string();
    (!subject.is_empty()).then(|| Principal::user(subject))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_client_certificates_subject_is_its_principal() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "DE");
        dn.push(DnType::OrganizationName, "acme, inc");
        dn.push(DnType::CommonName, "alice");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let principal = principal_of(cert.der()).unwrap();
        assert_eq!(principal.to_string(), "User:CN=alice,O=acme\\, inc,C=DE");
        assert_eq!(principal_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn settings_load_and_reload_from_files() {
        let dir = tempfile_dir();
        let (cert, key) = self_signed(&["localhost"]);
        let cert_path = write(&dir, "cert.pem", &cert);
        let key_path = write(&dir, "key.pem", &key);
        let files = TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
            client_ca: Some(cert_path.clone()),
        };
        let server = TlsServer::load(files.clone()).unwrap();
        assert!(server.has_client_ca());
        let _ = server.acceptor(ClientCerts::Required);
        // a broken file is refused and the old settings stay
        std::fs::write(&key_path, "not a key").unwrap();
        assert!(server.reload().is_err());
        let _ = server.acceptor(ClientCerts::None);
        // a new pair loads
        let (cert, key) = self_signed(&["localhost"]);
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        server.reload().unwrap();
        // a key that is not the certificate's is refused at load
        let (_, other_key) = self_signed(&["x"]);
        std::fs::write(&key_path, other_key).unwrap();
        assert!(TlsServer::load(files).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-auth-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
