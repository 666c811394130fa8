//! Optional access control for the endpoint, in the format of Prometheus's
//! exporter-toolkit web configuration file:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt      # PEM certificate chain
//!   key_file: server.key       # PEM private key
//!   min_version: TLS12         # TLS12 (default) or TLS13; older versions are refused
//! basic_auth_users:
//!   prometheus: $2y$10$…       # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Relative paths are relative to the file. With TLS, every connection is TLS. With
//! users, `GET /` and `GET /metrics` need a valid `Authorization: Basic` header (a
//! wrong or missing one gets 401); `GET /healthz` stays open so liveness probes need no
//! secret, and it tells nothing but the run id.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::ENV_WEB_CONFIG;
use crate::error::Error;

/// Successful (user, password) checks remembered, so a scrape every few seconds does
/// not pay bcrypt's deliberate slowness each time.
const VERIFIED_CACHE: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    min_version: Option<String>,
}

/// The parsed configuration, ready to serve with.
pub(crate) struct WebConfig {
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) auth: Option<BasicAuth>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("basic_auth", &self.auth.is_some())
            .finish()
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidSetting {
        variable: ENV_WEB_CONFIG,
        value: path.display().to_string(),
        reason: reason.into(),
    }
}

impl WebConfig {
    /// Reads and checks the file; every problem is an error naming the file.
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path, format!("cannot read it: {e}")))?;
        let file: File = serde_yaml_ng::from_str(&text)
            .map_err(|e| invalid(path, format!("not a valid web config: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = file
            .tls_server_config
            .map(|tls| tls_acceptor(path, base, &tls))
            .transpose()?;
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            for (user, hash) in &file.basic_auth_users {
                hash.parse::<bcrypt::HashParts>().map_err(|e| {
                    invalid(
                        path,
                        format!("the password of {user:?} is not a bcrypt hash: {e}"),
                    )
                })?;
            }
            Some(BasicAuth::new(file.basic_auth_users))
        };
        Ok(WebConfig { tls, auth })
    }
}

fn tls_acceptor(
    path: &Path,
    base: &Path,
    tls: &TlsFile,
) -> Result<tokio_rustls::TlsAcceptor, Error> {
    let cert_path = base.join(&tls.cert_file);
    let key_path = base.join(&tls.key_file);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| invalid(path, format!("cannot read {}: {e}", cert_path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            invalid(
                path,
                format!("bad certificate in {}: {e}", cert_path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(invalid(
            path,
            format!("no certificate in {}", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        invalid(
            path,
            format!("no usable private key in {}: {e}", key_path.display()),
        )
    })?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(invalid(
                path,
                format!("min_version {other:?}: only TLS12 and TLS13 are offered"),
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| invalid(path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(path, format!("certificate and key do not fit: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Checks `Authorization: Basic` credentials against bcrypt hashes.
pub(crate) struct BasicAuth {
    users: HashMap<String, String>,
    /// A hash of the same cost as the real ones, checked for unknown users so that
    /// they take as long as known ones.
    decoy: String,
    verified: Mutex<HashSet<(String, String)>>,
}

impl BasicAuth {
    fn new(users: HashMap<String, String>) -> Self {
        let cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .max()
            .unwrap_or(bcrypt::DEFAULT_COST);
        let decoy = bcrypt::hash("loopwatch decoy password", cost).unwrap_or_default();
        BasicAuth {
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the credentials of an `Authorization: Basic` header (already decoded)
    /// are a valid login.
    pub(crate) fn check(&self, credentials: Option<(String, String)>) -> bool {
        let Some(key) = credentials else {
            return false;
        };
        if self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key)
        {
            return true;
        }
        let (user, password) = &key;
        let ok = match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.decoy);
                false
            }
        };
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if verified.len() >= VERIFIED_CACHE {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_accepts_only_the_right_password() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(HashMap::from([("prom".to_string(), hash)]));
        let login = |user: &str, pw: &str| Some((user.to_string(), pw.to_string()));
        assert!(auth.check(login("prom", "s3cret")));
        assert!(auth.check(login("prom", "s3cret")), "cached");
        assert!(!auth.check(login("prom", "wrong")));
        assert!(!auth.check(login("nobody", "s3cret")));
        assert!(!auth.check(None));
    }
}
