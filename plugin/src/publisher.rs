//! The SPIRE BundlePublisher plugin: SPIRE calls `PublishBundle` every 30 s (and on every bundle change) with
//! no deadline. The bundle is signed and published only when it changed, when `frequency` elapsed since the
//! last publish, or when half of the published token's lifetime has passed, so agents never meet an expired
//! token while SPIRE runs and a few failed rounds in a row are survived.
//!
//! Invariants: every network call has its own deadline; a failure publishes nothing and returns a gRPC error
//! with the reason; only a well-formed token from the chain is ever published (see `common::signer_client`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::client::HttpUrl;
use common::duration::GoDuration;
use common::signer_client::SignerClient;
use common::signer_client::DEFAULT_SOCKET;
use tonic::{Request, Response, Status};

use crate::hcl::{self, Value};
use crate::pb::bundlepublisher::bundle_publisher_server::BundlePublisher;
use crate::pb::bundlepublisher::{PublishBundleRequest, PublishBundleResponse};
use crate::pb::config::config_server::Config;
use crate::pb::config::{ConfigureRequest, ConfigureResponse, ValidateRequest, ValidateResponse};
use crate::pb::types::Bundle;
use crypto::unix_now as now;

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
}

fn string(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => Err(format!("{key}: expected a string, got {}", other.kind())),
    }
}

fn duration(key: &str, v: &Value) -> Result<Duration, String> {
    let s = string(key, v)?;
    let d = s.parse::<GoDuration>().map_err(|e| format!("{key}: {e}"))?.0;
    if d < Duration::from_secs(1) {
        return Err(format!("{key}: {s:?} is shorter than 1s"));
    }
    Ok(d)
}

/// Parses `hcl_configuration`; errors name the key.
pub fn parse_config(text: &str) -> Result<(PublisherConfig, Vec<String>), String> {
    let map = hcl::parse(text).map_err(|e| e.to_string())?;
    let mut cfg = PublisherConfig {
        socket: PathBuf::from(DEFAULT_SOCKET),
        urls: Vec::new(),
        frequency: Duration::from_secs(300),
        format: Format::Pem,
        timeout: Duration::from_secs(30),
    };
    let mut notes = Vec::new();
    for (key, value) in &map {
        match key.as_str() {
            "socket" => {
                let s = string(key, value)?;
                if !s.starts_with('/') {
                    return Err(format!("socket: {s:?} must be an absolute path"));
                }
                cfg.socket = PathBuf::from(s);
            }
            "urls" => {
                let Value::List(items) = value else {
                    return Err(format!("urls: expected a list of strings, got {}", value.kind()));
                };
                for (i, item) in items.iter().enumerate() {
                    let s = string(&format!("urls[{i}]"), item)?;
                    cfg.urls.push(HttpUrl::parse(&s).map_err(|e| format!("urls[{i}]: {e}"))?);
                }
            }
            "frequency" => cfg.frequency = duration(key, value)?,
            "timeout" => cfg.timeout = duration(key, value)?,
            "format" => {
                cfg.format = match string(key, value)?.to_ascii_lowercase().as_str() {
                    "pem" => Format::Pem,
                    "spiffe" => Format::Spiffe,
                    other => return Err(format!("format: {other:?} is not pem or spiffe")),
                }
            }
            "dir" | "filename" | "tmpfile" => {
                string(key, value)?;
                notes.push(format!("{key} belongs to signer-unix's config (where the token is written); ignored here"));
            }
            other => return Err(format!("unknown key {other:?} (known: socket, urls, frequency, format, timeout)")),
        }
    }
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
struct Configured {
    cfg: PublisherConfig,
    client: SignerClient,
}

/// The plugin's state.
#[derive(Debug, Default)]
pub struct Publisher {
    config: Mutex<Option<Arc<Configured>>>,
    published: tokio::sync::Mutex<Published>,
}

/// Renders the bundle for signing.
pub fn render(bundle: &Bundle, format: Format) -> Result<String, String> {
    if bundle.x509_authorities.is_empty() {
        return Err("bundle has no X.509 authorities".into());
    }
    let pem: String = bundle.x509_authorities.iter().map(|c| crypto::pem::encode("CERTIFICATE", &c.asn1)).collect();
    match format {
        Format::Pem => Ok(pem),
        Format::Spiffe => {
            let parsed = crypto::bundle::Bundle::parse(&pem).map_err(|e| e.to_string())?;
            let hint = u64::try_from(bundle.refresh_hint).ok().filter(|h| *h > 0);
            let seq = Some(bundle.sequence_number).filter(|s| *s > 0);
            Ok(parsed.with_spiffe_metadata(hint, seq).to_spiffe_json())
        }
    }
}

/// When to re-sign a token: half-way through the shortest-lived layer.
fn refresh_point(token: &str) -> u64 {
    let limits = crypto::Limits::default();
    let outer = crypto::token::inspect(token).map(|i| i.exp).unwrap_or(0);
    let inner = crypto::token::innermost_unverified(token, &limits)
        .ok()
        .and_then(|t| crypto::token::inspect(&t).ok())
        .map(|i| i.exp)
        .unwrap_or(outer);
    let exp = outer.min(inner);
    let issued = now();
    issued + exp.saturating_sub(issued) / 2
}

impl Publisher {
    fn config(&self) -> Result<Arc<Configured>, Status> {
        self.config.lock().ok().and_then(|c| c.clone()).ok_or_else(|| Status::failed_precondition("not configured"))
    }

    /// Signs and publishes when needed; returns whether it published.
    pub async fn publish(&self, bundle: Bundle) -> Result<bool, Status> {
        let configured = self.config()?;
        let (cfg, client) = (&configured.cfg, &configured.client);
        let mut last = self.published.lock().await;
        let changed = last.bundle.as_ref() != Some(&bundle);
        let due = last.at.is_none_or(|at| at.elapsed() >= cfg.frequency);
        let expiring = now() >= last.refresh_at;
        if !changed && !due && !expiring {
            return Ok(false);
        }
        let text = render(&bundle, cfg.format).map_err(Status::invalid_argument)?;
        let started = Instant::now();
        let token = client.sign_chain(text.as_bytes(), &cfg.urls).await.map_err(|e| {
            tracing::error!(error = %e, "signing failed; nothing published");
            Status::unavailable(format!("could not sign bundle: {e}"))
        })?;
        client.publish(&token).await.map_err(|e| {
            tracing::error!(error = %e, "publishing failed");
            Status::unavailable(format!("could not publish bundle: {e}"))
        })?;
        last.refresh_at = refresh_point(&token);
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

/// The gRPC face of [`Publisher`].
#[derive(Debug, Clone, Default)]
pub struct PublisherService(pub Arc<Publisher>);

#[tonic::async_trait]
impl BundlePublisher for PublisherService {
    async fn publish_bundle(
        &self,
        req: Request<PublishBundleRequest>,
    ) -> Result<Response<PublishBundleResponse>, Status> {
        let bundle = req.into_inner().bundle.ok_or_else(|| Status::invalid_argument("missing bundle in request"))?;
        self.0.publish(bundle).await?;
        Ok(Response::new(PublishBundleResponse {}))
    }
}

#[tonic::async_trait]
impl Config for PublisherService {
    async fn configure(&self, req: Request<ConfigureRequest>) -> Result<Response<ConfigureResponse>, Status> {
        let (cfg, notes) = parse_config(&req.get_ref().hcl_configuration).map_err(|e| {
            tracing::error!(error = %e, "configuration refused");
            Status::invalid_argument(format!("failed to decode configuration: {e}"))
        })?;
        for n in notes {
            tracing::info!("{n}");
        }
        tracing::info!(socket = %cfg.socket.display(), cosigners = cfg.urls.len(), frequency = %GoDuration(cfg.frequency), "configured");
        let client = SignerClient::new(&cfg.socket, cfg.timeout)
            .map_err(|e| Status::invalid_argument(format!("failed to set up the signer client: {e}")))?;
        if let Ok(mut c) = self.0.config.lock() {
            *c = Some(Arc::new(Configured { cfg, client }));
        }
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(&self, req: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        Ok(Response::new(match parse_config(&req.get_ref().hcl_configuration) {
            Ok((_, notes)) => ValidateResponse { valid: true, notes },
            Err(e) => ValidateResponse { valid: false, notes: vec![e] },
        }))
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
            let err = parse_config(text).unwrap_err();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
}
