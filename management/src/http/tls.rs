//! The HTTPS identity: an operator-supplied certificate and key, or a
//! self-signed certificate generated at first start and kept under
//! `<state>/management/tls/` (key mode 0600) so clients can pin it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Where the certificate and key come from.
pub enum Identity {
    Supplied { certificate: PathBuf, key: PathBuf },
    Generated { dir: PathBuf },
}

impl Identity {
    /// The certificate and key paths, generating them first if needed.
    pub fn files(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        match self {
            Identity::Supplied { certificate, key } => Ok((certificate.clone(), key.clone())),
            Identity::Generated { dir } => {
                let certificate = dir.join("cert.pem");
                let key = dir.join("key.pem");
                if !(certificate.exists() && key.exists()) {
                    generate(dir, &certificate, &key)?;
                }
                Ok((certificate, key))
            }
        }
    }
}

fn generate(dir: &Path, certificate: &Path, key: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "shoal".to_string());
    let names = vec![
        host,
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("cannot write {}", key.display()))?;
    key_file.write_all(generated.signing_key.serialize_pem().as_bytes())?;
    key_file.sync_all()?;
    std::fs::write(certificate, generated.cert.pem())
        .with_context(|| format!("cannot write {}", certificate.display()))?;
    tracing::info!(
        certificate = %certificate.display(),
        "generated a self-signed HTTPS certificate"
    );
    Ok(())
}

/// TLS 1.2 and 1.3 (rustls offers nothing older), HTTP/2 and HTTP/1.1.
pub fn server_config(identity: &Identity) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certificate, key) = identity.files()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&certificate)
        .with_context(|| format!("cannot read {}", certificate.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", certificate.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        certificate.display()
    );
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_is_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::Generated {
            dir: dir.path().join("tls"),
        };
        server_config(&identity).unwrap();
        let (certificate, key) = identity.files().unwrap();
        let first = std::fs::read(&certificate).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        server_config(&identity).unwrap();
        assert_eq!(
            std::fs::read(&certificate).unwrap(),
            first,
            "not regenerated"
        );
    }

    #[test]
    fn a_mismatched_or_missing_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::Supplied {
            certificate: dir.path().join("missing.pem"),
            key: dir.path().join("missing.key"),
        };
        let error = server_config(&identity).unwrap_err().to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }
}
