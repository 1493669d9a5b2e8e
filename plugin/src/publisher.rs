//! The SPIRE BundlePublisher plugin: SPIRE calls `PublishBundle` every 30 s (and on every bundle change) with
//! no deadline. The bundle is signed and published only when it changed, when `frequency` elapsed since the
//! last publish, or when half of the published token's lifetime has passed, so agents never meet an expired
//! token while SPIRE runs and a few failed rounds in a row are survived.
//!
//! Invariants: every network call has its own deadline; a failure publishes nothing and returns a gRPC error
//! with the reason; only a well-formed token from the chain is ever published (see `common::signer_client`).

use common::clock::Clock;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::HttpUrl;
use common::duration::GoDuration;
use common::signer_client::SignerClient;
use common::signer_client::DEFAULT_SOCKET;
use tonic::{Request, Response, Status};

use crate::config::{self, ConfigError, ConfigService, ConfigSlot, PluginConfig};
use crate::pb::bundlepublisher::bundle_publisher_server::BundlePublisher;
use crate::pb::bundlepublisher::{PublishBundleRequest, PublishBundleResponse};
use crate::pb::config::CoreConfiguration;
use crate::pb::types::Bundle;

/// The gRPC service names this plugin reports to SPIRE's Init.
pub const SERVICE_NAMES: [&str; 2] =
    ["spire.plugin.server.bundlepublisher.v1.BundlePublisher", "spire.service.common.config.v1.Config"];

/// How the bundle is rendered before signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PEM certificates (the upstream default; what `trust_bundle_format = "pem"` agents read).
    Pem,
    /// SPIFFE bundle JSON (keeps sequence number and refresh hint).
    Spiffe,
}

/// A validated plugin configuration.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// signer-unix's socket.
    pub socket: PathBuf,
    /// Co-signers, in order.
    pub urls: Vec<HttpUrl>,
    /// Re-publish at least this often even when nothing changed.
    pub frequency: Duration,
    /// Rendering.
    pub format: Format,
    /// Deadline of each call (sign, each co-sign, publish).
    pub timeout: Duration,
    /// SPIRE's trust domain (from Configure's core configuration): the bundle is signed for it.
    pub trust_domain: Option<crypto::TrustDomain>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            urls: Vec::new(),
            frequency: Duration::from_secs(300),
            format: Format::Pem,
            timeout: Duration::from_secs(30),
            trust_domain: None,
        }
    }
}

/// `hcl_configuration` as written: every key optional; `dir`, `filename` and `tmpfile` (upstream's) are
/// accepted and noted as ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    socket: Option<PathBuf>,
    urls: Vec<String>,
    frequency: Option<String>,
    format: Option<String>,
    timeout: Option<String>,
    dir: Option<String>,
    filename: Option<String>,
    tmpfile: Option<String>,
}

impl PublisherConfig {
    /// Cross-field and range checks.
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.socket.is_absolute() {
            return Err(ConfigError::invalid("socket", format!("{:?} must be an absolute path", self.socket)));
        }
        for (key, d) in [("frequency", self.frequency), ("timeout", self.timeout)] {
            if d < Duration::from_secs(1) {
                return Err(ConfigError::invalid(key, format!("{} is shorter than 1s", GoDuration(d))));
            }
        }
        Ok(())
    }
}

/// Parses `hcl_configuration`; errors name the key. Returns the notes for SPIRE's `Validate`.
pub fn parse_config(text: &str) -> Result<(PublisherConfig, Vec<String>), ConfigError> {
    let raw: Raw = config::decode(text)?;
    let mut cfg = PublisherConfig::default();
    if let Some(socket) = config::path("socket", raw.socket)? {
        cfg.socket = socket;
    }
    for (i, url) in raw.urls.iter().enumerate() {
        cfg.urls.push(
            HttpUrl::parse(url).map_err(|e| ConfigError::Value { key: format!("urls[{i}]"), cause: Box::new(e) })?,
        );
    }
    if let Some(d) = config::parsed::<GoDuration>("frequency", raw.frequency.as_deref())? {
        cfg.frequency = d.0;
    }
    if let Some(d) = config::parsed::<GoDuration>("timeout", raw.timeout.as_deref())? {
        cfg.timeout = d.0;
    }
    if let Some(format) = raw.format {
        cfg.format = match format.to_ascii_lowercase().as_str() {
            "pem" => Format::Pem,
            "spiffe" => Format::Spiffe,
            other => return Err(ConfigError::invalid("format", format!("{other:?} is not pem or spiffe"))),
        };
    }
    let mut notes = Vec::new();
    for (key, value) in [("dir", &raw.dir), ("filename", &raw.filename), ("tmpfile", &raw.tmpfile)] {
        if value.is_some() {
            notes.push(format!("{key} belongs to signer-unix's config (where the token is written); ignored here"));
        }
    }
    cfg.validate()?;
    Ok((cfg, notes))
}

#[derive(Debug, Default)]
struct Published {
    bundle: Option<Bundle>,
    at: Option<Instant>,
    /// When half of the published token's lifetime has passed (unix seconds).
    refresh_at: u64,
}

/// A configuration with the client built for it (trust roots are loaded once per Configure, not per call).
#[derive(Debug)]
pub struct Configured {
    cfg: PublisherConfig,
    client: SignerClient,
}

impl PluginConfig for Configured {
    fn load(hcl: &str, core: Option<&CoreConfiguration>) -> Result<(Self, Vec<String>), ConfigError> {
        let (mut cfg, notes) = parse_config(hcl)?;
        cfg.trust_domain = match core.map(|c| c.trust_domain.as_str()).filter(|t| !t.is_empty()) {
            Some(td) => Some(td.parse().map_err(|e: crypto::BadTrustDomain| ConfigError::Value {
                key: "trust_domain".into(),
                cause: Box::new(e),
            })?),
            None => None,
        };
        let client = SignerClient::new(&cfg.socket, cfg.timeout)
            .map_err(|e| ConfigError::Value { key: "urls".into(), cause: Box::new(e) })?;
        Ok((Configured { cfg, client }, notes))
    }

    fn log_configured(&self) {
        let cfg = &self.cfg;
        tracing::info!(socket = %cfg.socket.display(), cosigners = cfg.urls.len(), frequency = %GoDuration(cfg.frequency),
            trust_domain = cfg.trust_domain.as_ref().map(|t| t.as_str()).unwrap_or(""), "configured");
    }
}

/// The plugin's state.
#[derive(Debug, Default)]
pub struct Publisher {
    config: Arc<ConfigSlot<Configured>>,
    published: tokio::sync::Mutex<Published>,
    /// When a token is due for re-signing is judged by this clock (the system's; a test's manual one).
    clock: Clock,
}

/// Why SPIRE's bundle could not be rendered for signing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// SPIRE sent a bundle without X.509 authorities.
    #[error("bundle has no X.509 authorities")]
    NoAuthorities,
    /// An authority is not a usable CA certificate.
    #[error(transparent)]
    Bundle(#[from] crypto::BundleError),
}

/// Renders the bundle for signing.
pub fn render(bundle: &Bundle, format: Format) -> Result<String, RenderError> {
    if bundle.x509_authorities.is_empty() {
        return Err(RenderError::NoAuthorities);
    }
    let pem: String = bundle.x509_authorities.iter().map(|c| crypto::pem::encode("CERTIFICATE", &c.asn1)).collect();
    match format {
        Format::Pem => Ok(pem),
        Format::Spiffe => {
            let parsed = crypto::bundle::Bundle::parse(&pem)?;
            let hint = u64::try_from(bundle.refresh_hint).ok().filter(|h| *h > 0);
            let seq = Some(bundle.sequence_number).filter(|s| *s > 0);
            Ok(parsed.with_spiffe_metadata(hint, seq).to_spiffe_json())
        }
    }
}

/// When to re-sign a token issued at `issued`: half-way through its shortest-lived layer (the `exp` the signers
/// chose, read once when the token arrived).
fn refresh_point(token: &crypto::token::Token, issued: u64) -> u64 {
    issued + token.exp().saturating_sub(issued) / 2
}

impl Publisher {
    /// A publisher judging the re-sign point by `clock` (tests move a manual one instead of waiting).
    pub fn with_clock(clock: Clock) -> Publisher {
        Publisher { clock, ..Publisher::default() }
    }

    /// SPIRE's Config service for this plugin.
    pub fn config_service(&self) -> ConfigService<Configured> {
        ConfigService(self.config.clone())
    }

    /// Signs and publishes when needed; returns whether it published.
    pub async fn publish(&self, bundle: Bundle) -> Result<bool, PublishError> {
        let configured = self.config.get().map_err(PublishError::NotConfigured)?;
        let (cfg, client) = (&configured.cfg, &configured.client);
        let mut last = self.published.lock().await;
        let changed = last.bundle.as_ref() != Some(&bundle);
        let due = last.at.is_none_or(|at| at.elapsed() >= cfg.frequency);
        let expiring = self.clock.now() >= last.refresh_at;
        if !changed && !due && !expiring {
            return Ok(false);
        }
        let text = render(&bundle, cfg.format).map_err(PublishError::Render)?;
        let started = Instant::now();
        let issued = self.clock.now();
        let token =
            client.sign_chain_for(text.as_bytes(), cfg.trust_domain.as_ref(), &cfg.urls).await.map_err(|e| {
                tracing::error!(error = %e, "signing failed; nothing published");
                PublishError::Sign(e)
            })?;
        client.publish(&token).await.map_err(|e| {
            tracing::error!(error = %e, "publishing failed");
            PublishError::Publish(e)
        })?;
        last.refresh_at = refresh_point(&token, issued);
        last.bundle = Some(bundle);
        last.at = Some(Instant::now());
        tracing::info!(
            changed,
            cosigners = cfg.urls.len(),
            bytes = token.len(),
            took_ms = started.elapsed().as_millis() as u64,
            refresh_at = last.refresh_at,
            "bundle signed and published"
        );
        Ok(true)
    }
}

/// Why a PublishBundle call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Configure has not succeeded yet (the slot's own status).
    #[error("{}", .0.message())]
    NotConfigured(Status),
    /// The request carried no bundle.
    #[error("missing bundle in request")]
    NoBundle,
    /// The bundle cannot be rendered in the configured format.
    #[error("{0}")]
    Render(RenderError),
    /// signer-unix or a co-signer did not sign.
    #[error("could not sign bundle: {0}")]
    Sign(common::signer_client::SignerClientError),
    /// signer-unix did not publish.
    #[error("could not publish bundle: {0}")]
    Publish(common::signer_client::SignerClientError),
}

/// The one conversion to SPIRE: a bad request is INVALID_ARGUMENT, a signer that failed UNAVAILABLE (SPIRE
/// logs it and calls again on its next publish).
impl From<PublishError> for Status {
    fn from(e: PublishError) -> Status {
        match e {
            PublishError::NotConfigured(status) => status,
            PublishError::NoBundle | PublishError::Render(_) => Status::invalid_argument(e.to_string()),
            PublishError::Sign(_) | PublishError::Publish(_) => Status::unavailable(e.to_string()),
        }
    }
}

/// The gRPC face of [`Publisher`].
#[derive(Debug, Clone, Default)]
pub struct PublisherService(pub Arc<Publisher>);

#[tonic::async_trait]
impl BundlePublisher for PublisherService {
    async fn publish_bundle(
        &self,
        req: Request<PublishBundleRequest>,
    ) -> Result<Response<PublishBundleResponse>, Status> {
        let bundle = req.into_inner().bundle.ok_or(PublishError::NoBundle)?;
        self.0.publish(bundle).await?;
        Ok(Response::new(PublishBundleResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_table() {
        let (c, notes) = parse_config("").unwrap();
        assert_eq!(
            (c.socket, c.frequency, c.format),
            (PathBuf::from(DEFAULT_SOCKET), Duration::from_secs(300), Format::Pem)
        );
        assert!(notes.is_empty());
        let (c, notes) = parse_config(
            "urls = [\"http://10.0.0.2:8181/sign\"]\nsocket = \"/run/s.sock\"\nfrequency = \"1m\"\nformat = \"spiffe\"\ndir = \"/usr/share/nginx/html\"\n",
        )
        .unwrap();
        assert_eq!((c.urls.len(), c.frequency, c.format), (1, Duration::from_secs(60), Format::Spiffe));
        assert_eq!(notes.len(), 1);
        let bad = [
            ("bogus = 1", "bogus"),
            ("frequency = \"often\"", "frequency"),
            ("frequency = 5", "frequency"),
            ("frequency = \"100ms\"", "frequency"),
            ("urls = [\"ftp://x\"]", "urls[0]"),
            ("urls = \"http://x/sign\"", "urls"),
            ("format = \"jwks\"", "format"),
            ("socket = \"relative.sock\"", "socket"),
            ("urls = [", "line"),
        ];
        for (text, key) in bad {
            let err = parse_config(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
}
