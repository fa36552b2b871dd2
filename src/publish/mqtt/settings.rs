//! Where and how the agent connects to the broker: [`MqttSettings`] (address, client
//! identity, credentials, timeouts, backoff, topic names) and [`tls_config`], the rustls
//! configuration for `mqtts://`.
//!
//! Owns: the settings type (whose `Debug` never shows the password), the topic naming
//! scheme, the TLS trust and client-certificate loading.
//! May not touch: the connection, the publisher's state or the spool.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::redact::Secret;

/// Where and how to connect.
#[derive(Clone)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    /// TLS client configuration for `mqtts://` (certificates always verified).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keepalive: Duration,
    pub connect_timeout: Duration,
    /// Reconnect backoff: first delay and cap, seconds.
    pub backoff_initial: f64,
    pub backoff_max: f64,
    /// `{prefix}/{probe_id}` of every topic.
    pub prefix: String,
    pub probe_id: String,
}

impl std::fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl MqttSettings {
    /// `{prefix}/{probe_id}/{stream}/events`.
    pub fn events_topic(&self, stream: &str) -> String {
        format!("{}/{}/{stream}/events", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/{stream}/thumbs/{defect_id}`: the JPEG of a picture
    /// defect's start.
    pub fn thumbs_topic(&self, stream: &str, defect_id: &str) -> String {
        format!(
            "{}/{}/{stream}/thumbs/{defect_id}",
            self.prefix, self.probe_id
        )
    }
    /// `{prefix}/{probe_id}/{stream}/stats`.
    pub fn stats_topic(&self, stream: &str) -> String {
        format!("{}/{}/{stream}/stats", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/{stream}/problem/{group}` (retained `ON` / `OFF`: the state of
    /// a Home Assistant problem binary sensor, `[homeassistant]`).
    pub fn problem_topic(&self, stream: &str, group: &str) -> String {
        format!("{}/{}/{stream}/problem/{group}", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/stats` (the agent's own counters).
    pub fn agent_stats_topic(&self) -> String {
        format!("{}/{}/stats", self.prefix, self.probe_id)
    }
    /// `{prefix}/{probe_id}/status` (retained).
    pub fn status_topic(&self) -> String {
        format!("{}/{}/status", self.prefix, self.probe_id)
    }
}

/// Builds the rustls configuration for `mqtts://`: the CA file's certificates (or the
/// system's roots), an optional client certificate. Verification is always on.
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::Config(format!("mqtt.ca_file {}: {e}", path.display())))?;
            for c in certs {
                let c =
                    c.map_err(|e| Error::Config(format!("mqtt.ca_file {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| Error::Config(format!("mqtt.ca_file {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(Error::Config(format!(
                    "mqtt.ca_file {}: no certificate in the file",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(Error::Config(
                    "mqtts://: no system CA certificates found; set mqtt.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let cfg = match client {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::Config(format!("mqtt.client_cert {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Config(format!("mqtt.client_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Config(format!("mqtt.client_cert/client_key: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}
