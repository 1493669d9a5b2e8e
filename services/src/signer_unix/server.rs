//! signer-unix request handling: routes, the sign and publish operations, and the daemon's `run`.

use std::future::Future;
use std::sync::Arc;

use http::{header, Method, StatusCode};

use super::config::SignerUnixConfig;
use super::queue::{QueueError, SignQueue};
use crate::server::http::{self as server, Reply, Request, ServerLimits};
use crate::server::uds::{self, PeerCred};
use common::fsutil;
use crypto::unix_now as now;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] uds::BindError),
    /// The TPM owner thread could not be started.
    #[error("cannot start the TPM owner thread: {0}")]
    Thread(std::io::Error),
    /// The TPM's public key is not one we can verify with.
    #[error("the TPM key's public key is unusable: {0}")]
    Key(#[source] crypto::KeyError),
    /// The publish directory is missing.
    #[error("publish directory {0} does not exist")]
    Dir(std::path::PathBuf),
    /// The TPM key is neither in the configured publish chain nor its backup.
    #[error("the TPM key {0} is neither in `chain` nor the `backup`: this signer could never publish")]
    NotInChain(String),
    /// The publish policy could not be built.
    #[error("publish policy: {0}")]
    Policy(#[from] crypto::PolicyError),
}

struct Signer {
    cfg: SignerUnixConfig,
    queue: SignQueue,
    own_key: crypto::keys::VerifyingKey,
    /// What `/publish` accepts: every layer verified as the nodes verify it.
    publish_policy: crypto::policy::Policy,
    alg: crypto::Alg,
    limits: ServerLimits,
    publish_lock: tokio::sync::Mutex<()>,
}

/// Runs signer-unix with `key` until `shutdown` resolves.
pub async fn run(
    cfg: SignerUnixConfig,
    key: Arc<dyn tpm::KeySigner>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    if !cfg.dir.is_dir() {
        return Err(RunError::Dir(cfg.dir.clone()));
    }
    let alg = match key.key_type() {
        tpm::KeyType::Rsa2048 => crypto::Alg::Rs256,
        tpm::KeyType::EccP256 => crypto::Alg::Es256,
    };
    let own_key = crypto::keys::VerifyingKey::from_spki_der(&cfg.handle.to_string(), key.public_key().spki_der())
        .map_err(RunError::Key)?;
    let publish_policy = match &cfg.publish_policy {
        None => crypto::policy::Policy::new(vec![own_key.clone()], None, crypto::Limits::default())?,
        Some(policy) => {
            if !policy.keys().any(|k| k.same_key(&own_key)) {
                return Err(RunError::NotInChain(own_key.fingerprint().to_owned()));
            }
            policy.clone()
        }
    };
    let queue = SignQueue::start(key.clone(), cfg.queue_depth).map_err(RunError::Thread)?;
    let listener = uds::bind(&cfg.socket, cfg.socket_mode).await?;
    let limits = ServerLimits { max_body: cfg.max_body, ..ServerLimits::default() };
    tracing::info!(
        socket = %cfg.socket.display(),
        handle = %cfg.handle,
        alg = alg.as_str(),
        key = %own_key.fingerprint(),
        dir = %cfg.dir.display(),
        "signer-unix ready"
    );
    let peers = cfg.peers.clone();
    let state = Arc::new(Signer {
        cfg,
        queue,
        own_key,
        publish_policy,
        alg,
        limits,
        publish_lock: tokio::sync::Mutex::new(()),
    });
    let handler = move |req: Request, peer: PeerCred| {
        let state = state.clone();
        async move { state.handle(req, peer).await }
    };
    server::serve_unix(listener, peers, limits, handler, shutdown).await;
    tracing::info!("signer-unix stopped");
    Ok(())
}

impl Signer {
    async fn handle(&self, req: Request, peer: PeerCred) -> Reply {
        let path = req.uri().path().to_owned();
        match (req.method().clone(), path.as_str()) {
            (Method::POST, "/sign") => self.sign(req, peer).await,
            (Method::POST, "/publish") => self.publish(req, peer).await,
            (Method::GET, "/healthz") => server::text(StatusCode::OK, format!("ok {}", self.own_key.fingerprint())),
            (_, "/sign" | "/publish") => server::method_not_allowed("POST"),
            _ => server::text(StatusCode::NOT_FOUND, format!("no such endpoint {path:?}; use /sign or /publish")),
        }
    }

    async fn sign(&self, req: Request, peer: PeerCred) -> Reply {
        let (parts, text) = match server::read_text(req, &self.limits).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let wants_jwt = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/jwt"))
            .unwrap_or(false);
        // `?trust-domain=TD` binds a bundle to its SPIFFE trust domain (claim `spiffetd`).
        let trust_domain =
            match parts.uri.query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("trust-domain=")) {
                None | Some("") => None,
                Some(td) if !crypto::token::is_trust_domain(td) => {
                    return server::text(
                        StatusCode::BAD_REQUEST,
                        format!("trust-domain {td:?} is not a SPIFFE trust domain name (a-z, 0-9, '.', '-', '_')"),
                    );
                }
                Some(_) if wants_jwt => {
                    return server::text(
                        StatusCode::BAD_REQUEST,
                        "trust-domain binds a bundle; a token is wrapped as it is",
                    );
                }
                Some(td) => Some(td.to_owned()),
            };
        let payload = if wants_jwt {
            let token = text.trim();
            if let Err(e) = crypto::token::inspect(token) {
                return server::text(StatusCode::BAD_REQUEST, format!("body is not a token: {e}"));
            }
            crypto::token::Payload::Token(token.to_owned())
        } else {
            if let Err(e) = crypto::bundle::Bundle::parse(&text) {
                return server::text(
                    StatusCode::BAD_REQUEST,
                    format!("body is not a trust bundle ({e}); send a PEM or SPIFFE bundle, or a token with Content-Type: application/jwt"),
                );
            }
            crypto::token::Payload::Bundle(text)
        };
        let kind = if wants_jwt { "token" } else { "bundle" };
        let now = now();
        let claims = crypto::token::Claims {
            payload,
            iss: self.cfg.issuer.clone(),
            iat: now,
            nbf: now,
            exp: now + self.cfg.duration.as_secs(),
            trust_domain,
        };
        let builder = crypto::token::TokenBuilder::new(self.alg, &claims);
        let signature = match self.queue.sign(builder.digest()).await {
            Ok(s) => s,
            Err(QueueError::Full(n)) => {
                tracing::warn!(waiting = n, "TPM queue full; refusing sign request");
                return server::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TPM busy: too many sign requests waiting; retry",
                );
            }
            Err(QueueError::Stopped) => return server::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            Err(QueueError::Tpm(e)) => {
                tracing::error!(error = %e, transient = e.is_transient(), "TPM sign failed");
                let status =
                    if e.is_transient() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
                return server::text(status, "TPM sign failed; see signer-unix log");
            }
        };
        let token = match builder.finish(&signature) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "TPM returned an unusable signature");
                return server::text(StatusCode::INTERNAL_SERVER_ERROR, "TPM returned an unusable signature");
            }
        };
        // Check our own output before handing it out: a TPM that signed with another key, or returned garbage,
        // must never produce a 200.
        if let Err(e) = crypto::token::verify_layer(&token, &[&self.own_key], now, &crypto::Limits::default()) {
            tracing::error!(error = %e, "freshly signed token does not verify with our own key");
            return server::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "signed token failed self-check; see signer-unix log",
            );
        }
        tracing::info!(kind, peer_uid = peer.uid, exp = claims.exp, bytes = token.len(), "signed");
        server::ok("application/jwt", token)
    }

    /// The layer of `token` that this signer signed: the outermost one (a token it signed alone), or, for a
    /// token co-signed by others after it, the innermost one (the bundle's origin). Signature, `exp` and times
    /// are checked; the co-signers' outer layers are the verifiers' business (signer-unix has no keys for them).
    fn own_layer<'k>(&'k self, token: &str) -> Result<crypto::token::VerifiedLayer<'k>, crypto::VerifyError> {
        let limits = crypto::Limits::default();
        let now = now();
        match crypto::token::verify_layer(token, &[&self.own_key], now, &limits) {
            Ok(l) => Ok(l),
            Err(outer) => {
                let inner = crypto::token::innermost_unverified(token, &limits).map_err(|_| outer.clone())?;
                if inner == token {
                    return Err(outer);
                }
                crypto::token::verify_layer(&inner, &[&self.own_key], now, &limits)
            }
        }
    }

    async fn publish(&self, req: Request, peer: PeerCred) -> Reply {
        let (_, text) = match server::read_text(req, &self.limits).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let token = text.trim();
        let layer = match self.own_layer(token) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, peer_uid = peer.uid, "refusing to publish");
                return server::text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("refusing to publish: not a valid token carrying this signer's signature: {e}"),
                );
            }
        };
        // Every layer, as the nodes will check it: a co-signature that does not verify (a faulty co-signer, a
        // tampered hop) would otherwise be published and then refused by every node until the next publish.
        if let Err(e) = self.publish_policy.verify(token, now()) {
            tracing::warn!(error = %e, peer_uid = peer.uid, "refusing to publish: the token does not verify as nodes verify it");
            return server::text(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("refusing to publish: the token does not verify against the publish chain: {e}"),
            );
        }
        let exp = layer.claims.exp;
        let dest = self.cfg.dir.join(&self.cfg.filename);
        let prefix = self.cfg.tmpfile.clone();
        let data = token.as_bytes().to_vec();
        let _guard = self.publish_lock.lock().await;
        let written = tokio::task::spawn_blocking(move || fsutil::publish_atomic(&dest, &prefix, &data, 0o644)).await;
        match written {
            Ok(Ok(())) => {
                tracing::info!(file = %self.cfg.filename, bytes = token.len(), exp, peer_uid = peer.uid, "published");
                server::text(
                    StatusCode::OK,
                    format!("published {} ({} bytes, exp {exp})", self.cfg.filename, token.len()),
                )
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, dir = %self.cfg.dir.display(), "publish write failed");
                server::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "publish failed; previous token kept; see signer-unix log",
                )
            }
            Err(_) => server::text(StatusCode::INTERNAL_SERVER_ERROR, "publish task failed; previous token kept"),
        }
    }
}
