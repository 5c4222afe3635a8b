//! The HTTPS identity: an operator-supplied certificate and key, or a
//! self-signed certificate generated at first start and kept under
//! `<state>/management/tls/` (key mode 0600) so clients can pin it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Validity of a generated certificate: 825 days, the longest Apple's
/// platforms accept for a TLS server certificate (and the CA/Browser
/// Forum's former ceiling) — long enough that an appliance rarely renews,
/// short enough that a leaked key does not stay good for decades.
pub const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(825 * 86_400);
/// A generated certificate is replaced at start once it is this close to
/// its end, so a long-running appliance never serves an expired one after
/// a restart.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// The subject rcgen gives a certificate when none is set; earlier
/// releases generated certificates with it (valid until 4096), and such a
/// certificate is replaced.
const RCGEN_DEFAULT_SUBJECT: &[u8] = b"rcgen self signed cert";

/// Where the certificate and key come from.
pub enum Identity {
    Supplied {
        certificate: PathBuf,
        key: PathBuf,
    },
    /// Generated for `host_name` (its CN and first SAN; `localhost`,
    /// 127.0.0.1 and ::1 are SANs too, for clients on the appliance).
    Generated {
        dir: PathBuf,
        host_name: String,
    },
}

impl Identity {
    /// The certificate and key paths, generating them first if needed.
    pub fn files(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        match self {
            Identity::Supplied { certificate, key } => Ok((certificate.clone(), key.clone())),
            Identity::Generated { dir, host_name } => {
                let certificate = dir.join("cert.pem");
                let key = dir.join("key.pem");
                if !(key.exists() && is_current(&certificate, host_name)) {
                    generate(dir, host_name, &certificate, &key)?;
                }
                Ok((certificate, key))
            }
        }
    }
}

/// Whether the generated certificate at `path` may stay: readable, made
/// for `host_name` by this release, and not near its end (its file time
/// is when it was made).
fn is_current(path: &Path, host_name: &str) -> bool {
    let Ok(der) = CertificateDer::from_pem_file(path) else {
        return false;
    };
    let contains = |needle: &[u8]| der.windows(needle.len()).any(|w| w == needle);
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|made| SystemTime::now().duration_since(made).ok());
    let fresh = age.is_some_and(|age| age + RENEW_BEFORE < CERTIFICATE_VALIDITY);
    fresh && contains(host_name.as_bytes()) && !contains(RCGEN_DEFAULT_SUBJECT)
}

fn generate(dir: &Path, host_name: &str, certificate: &Path, key: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec![host_name.to_string()];
    for local in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == local) {
            names.push(local.to_string());
        }
    }
    let mut params = rcgen::CertificateParams::new(names)
        .context("cannot use the host name in a certificate")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host_name);
    // Valid from a day ago: a client whose clock is a little behind still
    // accepts it.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + (now - Duration::from_secs(86_400));
    params.not_after = epoch + (now + CERTIFICATE_VALIDITY);
    let signing_key = rcgen::KeyPair::generate().context("cannot generate a key")?;
    let generated = params
        .self_signed(&signing_key)
        .context("cannot generate a certificate")?;
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("cannot write {}", key.display()))?;
    key_file.write_all(signing_key.serialize_pem().as_bytes())?;
    key_file.sync_all()?;
    std::fs::write(certificate, generated.pem())
        .with_context(|| format!("cannot write {}", certificate.display()))?;
    tracing::info!(
        certificate = %certificate.display(),
        host_name,
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
            host_name: "bmc.example".to_string(),
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
        let renamed = Identity::Generated {
            dir: dir.path().join("tls"),
            host_name: "other.example".to_string(),
        };
        renamed.files().unwrap();
        assert_ne!(
            std::fs::read(&certificate).unwrap(),
            first,
            "a new host name gets a new certificate"
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
