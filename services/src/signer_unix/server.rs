//! signer-unix request handling: routes, the sign and publish operations, and the daemon's `run`.

use std::future::Future;
use std::sync::Arc;

use http::{Method, StatusCode};

use super::config::SignerUnixConfig;
use super::metrics::SignerUnixMetrics;
use super::queue::{QueueMetrics, SignQueue};
use super::refusal::Refusal;
use crate::server::http::{self as server, Reply, Request, ServerLimits};
use crate::server::uds::{self, PeerCred};
use common::clock::Clock;
use common::fsutil;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] uds::BindError),
    /// The TPM owner thread could not be started.
    #[error("cannot start the TPM owner thread: {0}")]
    Thread(std::io::Error),
    /// The TPM's public key is not one we can verify with.
    #[error("the TPM key's public key is unusable: {0}")]
    Key(crypto::KeyError),
    /// The publish directory is missing.
    #[error("publish directory {0} does not exist")]
    Dir(std::path::PathBuf),
    /// The TPM key is neither in the configured publish chain nor its backup.
    #[error("the TPM key {0} is neither in `chain` nor the `backup`: this signer could never publish")]
    NotInChain(String),
    /// The publish policy could not be built.
    #[error("publish policy: {0}")]
    Policy(crypto::PolicyError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// What a sign request carries, from its Content-Type (read once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignBody {
    /// A trust bundle, PEM or SPIFFE JSON (any other Content-Type).
    Bundle,
    /// A token to wrap (`application/jwt`).
    Token,
    /// A keyset document (`application/spiffe-keyset+json`).
    Keyset,
}

impl SignBody {
    fn of(headers: &http::HeaderMap) -> SignBody {
        match server::content_type(headers).as_str() {
            KEYSET_CONTENT_TYPE => SignBody::Keyset,
            "application/jwt" => SignBody::Token,
            _ => SignBody::Bundle,
        }
    }

    /// The `kind` label of its metrics.
    fn label(self) -> &'static str {
        match self {
            SignBody::Bundle => "bundle",
            SignBody::Token => "token",
            SignBody::Keyset => "keyset",
        }
    }
}

/// The Content-Type of a keyset document sent to `/sign`.
pub const KEYSET_CONTENT_TYPE: &str = "application/spiffe-keyset+json";

/// The keyset document inside update `token` (read unverified: its layers are the verifiers' business, as a
/// co-signed bundle token's are).
fn update_document(token: &str) -> Result<crypto::keyset::Document, Refusal> {
    match crypto::token::innermost_unverified(token, &crypto::Limits::default()).map_err(Refusal::NotAToken)? {
        (_, crypto::token::Payload::Keyset(text)) => {
            crypto::keyset::Document::parse(&text, crypto::Limits::default()).map_err(Refusal::NotAKeysetDocument)
        }
        _ => Err(Refusal::NotAToken(crypto::VerifyError {
            layer: 0,
            kind: crypto::VerifyErrorKind::WrongPayloadKind { expected: "spiffeks at the innermost layer" },
        })),
    }
}

struct Signer {
    cfg: SignerUnixConfig,
    queue: SignQueue,
    own_key: crypto::keys::VerifyingKey,
    /// What `/publish` accepts: every layer verified as the nodes verify it; `None` (no `chain` configured, as in
    /// the Go original's config): this signer's innermost layer, and well-formed, unexpired layers around it.
    publish_policy: Option<crypto::policy::Policy>,
    /// Its own key alone, as a policy (`GET /policy` without a configured chain).
    own_policy: crypto::policy::Policy,
    alg: crypto::Alg,
    limits: ServerLimits,
    /// Held while publishing; guards the signing time of the token published last.
    publish_lock: tokio::sync::Mutex<u64>,
    metrics: SignerUnixMetrics,
    /// What `iat`, `exp` and every time check are judged by.
    clock: Clock,
}

/// What `/publish` checks against (the configured chain, which must hold this signer's key; `None` without one,
/// said once, loudly), and this signer's key alone as a policy (`GET /policy` without a chain).
fn publish_policies(
    cfg: &SignerUnixConfig,
    own_key: &crypto::keys::VerifyingKey,
) -> Result<(Option<crypto::policy::Policy>, crypto::policy::Policy), RunError> {
    let own_policy = crypto::policy::Policy::new(vec![own_key.clone()], None, crypto::Limits::default())?;
    match &cfg.publish_policy {
        Some(policy) if !policy.keys().any(|k| k.same_key(own_key)) => {
            return Err(RunError::NotInChain(own_key.fingerprint().to_owned()))
        }
        Some(_) => {}
        None => tracing::warn!(
            "no `chain` configured: /publish checks this signer's own (innermost) layer and only the form and \
             expiry of co-signers' layers around it; set `keydir` and `chain` (the nodes' policy) so that it \
             verifies every layer before publishing"
        ),
    }
    Ok((cfg.publish_policy.clone(), own_policy))
}

/// Runs signer-unix with `key` until `shutdown` resolves.
pub async fn run(
    cfg: SignerUnixConfig,
    key: Arc<dyn tpm::KeySigner>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with(cfg, key, Clock::system(), shutdown).await
}

/// [`run`], signing and judging times by `clock` (tests move a manual one instead of waiting).
pub async fn run_with(
    cfg: SignerUnixConfig,
    key: Arc<dyn tpm::KeySigner>,
    clock: Clock,
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
    let (publish_policy, own_policy) = publish_policies(&cfg, &own_key)?;
    let metrics = SignerUnixMetrics::new()?;
    let queue_metrics = QueueMetrics { latency: metrics.tpm_sign.clone(), depth: metrics.queue_depth.clone() };
    let queue = SignQueue::start(key.clone(), cfg.queue_depth, Some(queue_metrics)).map_err(RunError::Thread)?;
    let endpoint = match cfg.metrics_addr {
        Some(addr) => Some(crate::metrics::Endpoint::bind(addr).await?),
        None => None,
    };
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
        own_policy,
        alg,
        limits,
        publish_lock: tokio::sync::Mutex::new(0),
        metrics: metrics.clone(),
        clock: clock.clone(),
    });
    // The token already published, if this signer's key signed it: its expiry until the next publish.
    if let Ok(published) = std::fs::read_to_string(state.cfg.dir.join(&state.cfg.filename)) {
        if let Ok((exp, signed_at)) = state.publishable(published.trim()) {
            metrics.published_expiry.set(exp as f64);
            *state.publish_lock.lock().await = signed_at;
        }
    }
    let exporter = endpoint.map(|e| {
        let gauges = metrics.clone();
        e.spawn(
            metrics.all.clone(),
            Arc::new(|| Ok("ok: serving".to_owned())),
            Arc::new(move || {
                let left = (gauges.published_expiry.get() - clock.now() as f64).max(0.0);
                gauges.published_expires_in.set(left);
            }),
        )
    });
    let handler = move |req: Request, peer: PeerCred| {
        let state = state.clone();
        async move { state.handle(req, peer).await }
    };
    server::serve_unix(listener, peers, limits, handler, shutdown).await;
    if let Some(e) = exporter {
        e.abort();
    }
    tracing::info!("signer-unix stopped");
    Ok(())
}

impl Signer {
    async fn handle(&self, req: Request, peer: PeerCred) -> Reply {
        let path = req.uri().path().to_owned();
        let uid = peer.uid;
        match (req.method().clone(), path.as_str()) {
            (Method::POST, "/sign") => {
                let body = SignBody::of(req.headers());
                let kind = body.label();
                let result = self.sign(req, body, peer).await;
                self.metrics.signs.with_label_values(&[kind, server::result_label(&result)]).inc();
                let r = server::reply(result, &uid);
                tracing::debug!(kind, peer_uid = uid, status = r.status().as_u16(), "sign request");
                r
            }
            (Method::POST, "/publish") => {
                let result = self.publish(req, peer).await;
                self.metrics.publishes.with_label_values(&[server::result_label(&result)]).inc();
                let r = server::reply(result, &uid);
                tracing::debug!(peer_uid = uid, status = r.status().as_u16(), "publish request");
                r
            }
            (Method::GET, "/healthz") => server::text(StatusCode::OK, format!("ok {}", self.own_key.fingerprint())),
            // Without a configured chain: its own key alone, the policy of a signer that signs alone.
            (Method::GET, "/policy") => match &self.publish_policy {
                Some(policy) => server::ok("application/json", crypto::keyset::policy_to_json(policy)),
                None => server::ok("application/json", crypto::keyset::policy_to_json(&self.own_policy)),
            },
            (_, "/sign" | "/publish") => server::method_not_allowed("POST"),
            (_, "/policy") => server::method_not_allowed("GET"),
            _ => server::reply(Err(Refusal::NoEndpoint(path)), &uid),
        }
    }

    async fn sign(&self, req: Request, body: SignBody, peer: PeerCred) -> Result<Reply, Refusal> {
        let (parts, text) = match server::read_text(req, &self.limits).await {
            Ok(t) => t,
            Err(reply) => return Ok(reply),
        };
        let (wants_jwt, keyset_document) = (body == SignBody::Token, body == SignBody::Keyset);
        // `?trust-domain=TD` binds a bundle to its SPIFFE trust domain (claim `spiffetd`).
        let query = server::query_pairs(parts.uri.query().unwrap_or(""));
        let trust_domain: Option<crypto::TrustDomain> =
            match query.iter().find(|(k, _)| k == "trust-domain").map(|(_, v)| v.as_str()) {
                None | Some("") => None,
                Some(_) if wants_jwt || keyset_document => return Err(Refusal::TrustDomainOnToken),
                Some(td) => Some(td.parse().map_err(Refusal::BadTrustDomain)?),
            };
        let now = self.clock.now();
        // A keyset update's layers live until its document expires (capped); a bundle's for `duration`.
        let mut exp = now + self.cfg.duration.as_secs();
        let payload = if keyset_document {
            let document = crypto::keyset::Document::parse(&text, crypto::Limits::default())
                .map_err(Refusal::NotAKeysetDocument)?;
            exp = document.layer_exp(now).ok_or(Refusal::KeysetExpired(document.expires()))?;
            crypto::token::Payload::Keyset(text)
        } else if wants_jwt {
            let token = text.trim();
            let inspected = crypto::token::inspect(token).map_err(Refusal::NotAToken)?;
            if inspected.kind == crypto::token::Kind::KeysetUpdate {
                let document = update_document(token)?;
                exp = document.layer_exp(now).ok_or(Refusal::KeysetExpired(document.expires()))?;
            }
            crypto::token::Payload::Token(token.to_owned())
        } else {
            // signer-http's user, and any peer outside bundle-uids, only adds layers to tokens.
            if !self.cfg.bundle_uids.contains(&peer.uid) {
                return Err(Refusal::BundleNotAllowed(peer.uid));
            }
            let bundle = crypto::bundle::Bundle::parse(&text).map_err(Refusal::NotABundle)?;
            // A bundle bound to one trust domain that holds another's CA would be refused by every node that
            // checks the binding: refuse it here, before anything is signed or published.
            if let Some(td) = &trust_domain {
                let domains = bundle.spiffe_trust_domains().map_err(Refusal::NotABundle)?;
                if let Some(other) = domains.into_iter().find(|t| td != t.as_str()) {
                    return Err(Refusal::ForeignCa { trust_domain: td.to_string(), other });
                }
            }
            crypto::token::Payload::Bundle(text)
        };
        let token_kind = payload.kind();
        // A keyset update moves what every node trusts, for good: only the uids named for it (root by default),
        // never a service such as signer-http or the sign plugin, may have this TPM sign one.
        if token_kind == crypto::token::Kind::KeysetUpdate && !self.cfg.keyset_uids.contains(&peer.uid) {
            return Err(Refusal::KeysetNotAllowed(peer.uid));
        }
        let kind = match (&payload, token_kind) {
            (crypto::token::Payload::Bundle(_), _) => "bundle",
            (crypto::token::Payload::Keyset(_), _) => "keyset",
            (_, crypto::token::Kind::KeysetUpdate) => "keyset-token",
            _ => "token",
        };
        let trust_domain = trust_domain.map(|td| td.to_string());
        let claims =
            crypto::token::Claims { payload, iss: self.cfg.issuer.clone(), iat: now, nbf: now, exp, trust_domain };
        let builder = crypto::token::TokenBuilder::new(self.alg, &claims);
        let signature = self.queue.sign(builder.digest()).await?;
        let token = builder.finish(&signature).map_err(Refusal::UnusableSignature)?;
        // Check our own output before handing it out: a TPM that signed with another key, or returned garbage,
        // must never produce a 200.
        let limits =
            crypto::Limits { max_lifetime_secs: crypto::keyset::MAX_UPDATE_LIFETIME_SECS, ..crypto::Limits::default() };
        // Not a fault of the key: a body near max-body makes a token past what any verifier takes by default.
        if token.len() > limits.max_token_len {
            return Err(Refusal::TokenTooLarge { len: token.len(), max: limits.max_token_len });
        }
        crypto::token::verify_layer_of(token_kind, &token, &[&self.own_key], now, &limits)
            .map_err(Refusal::SelfCheck)?;
        tracing::info!(kind, peer_uid = peer.uid, exp = claims.exp, bytes = token.len(), "signed");
        Ok(server::ok("application/jwt", token))
    }

    /// Whether `token` may be published, and its earliest `exp`. With a publish policy: every layer verifies as
    /// the nodes verify it (a co-signature that does not, from a faulty co-signer or a tampered hop, would be
    /// published and then refused by every node until the next publish), and one of them is this signer's.
    /// Without one (the Go original's config): this signer's layer is the innermost and verifies, and each layer
    /// around it is a well-formed bundle-token layer that has not expired (their signatures need the co-signers'
    /// keys, which only `keydir` + `chain` give).
    fn publishable(&self, token: &str) -> Result<(u64, u64), Refusal> {
        let now = self.clock.now();
        let limits = crypto::Limits::default();
        if let Some(policy) = &self.publish_policy {
            let verified = policy
                .verify(token, now)
                .map_err(|error| Refusal::NotVerified { error, policy: policy.to_string() })?;
            if !verified.layers.iter().any(|l| l.key_fingerprint == self.own_key.fingerprint()) {
                let kind =
                    crypto::VerifyErrorKind::BadSignature { expected: self.own_key.name().into(), backup_tried: false };
                return Err(Refusal::NotOurs(crypto::VerifyError { layer: 0, kind }));
            }
            return Ok((verified.expires_at, verified.signed_at));
        }
        let mut current = token.to_owned();
        let mut exp = u64::MAX;
        for layer in 0..limits.max_depth {
            let at = |kind| crypto::VerifyError { layer, kind };
            let outer = crypto::token::inspect(&current).map_err(|e| Refusal::NotOurs(at(e.kind)))?;
            if outer.kind != crypto::token::Kind::Bundle {
                let kind =
                    crypto::VerifyErrorKind::WrongKind { expected: crypto::token::Kind::Bundle, got: outer.kind };
                return Err(Refusal::NotOurs(at(kind)));
            }
            match crypto::token::outer_payload_unverified(&current, &limits) {
                Ok(crypto::token::Payload::Token(inner)) => {
                    if now > outer.exp.saturating_add(limits.leeway_secs) {
                        let kind = crypto::VerifyErrorKind::Expired { exp: outer.exp, now };
                        return Err(Refusal::NotOurs(at(kind)));
                    }
                    exp = exp.min(outer.exp);
                    current = inner;
                }
                _ => {
                    let own = crypto::token::verify_layer(&current, &[&self.own_key], now, &limits)
                        .map_err(|e| Refusal::NotOurs(at(e.kind)))?;
                    return Ok((exp.min(own.claims.exp), own.claims.iat));
                }
            }
        }
        Err(Refusal::NotOurs(crypto::VerifyError {
            layer: limits.max_depth,
            kind: crypto::VerifyErrorKind::TooManyLayers(limits.max_depth),
        }))
    }

    async fn publish(&self, req: Request, peer: PeerCred) -> Result<Reply, Refusal> {
        if !self.cfg.bundle_uids.contains(&peer.uid) {
            return Err(Refusal::BundleNotAllowed(peer.uid));
        }
        let (_, text) = match server::read_text(req, &self.limits).await {
            Ok(t) => t,
            Err(reply) => return Ok(reply),
        };
        let token = text.trim();
        let (exp, signed_at) = self.publishable(token)?;
        let dest = self.cfg.dir.join(&self.cfg.filename);
        let prefix = self.cfg.tmpfile.clone();
        let data = token.as_bytes().to_vec();
        let mut newest = self.publish_lock.lock().await;
        // Never back in time: a token signed before the one published last (still valid, say from before a CA
        // was removed) would be served to every node that has not seen the newer one.
        if signed_at < *newest {
            return Err(Refusal::Older { signed_at, published: *newest });
        }
        tokio::task::spawn_blocking(move || fsutil::publish_atomic(&dest, &prefix, &data, 0o644))
            .await
            .map_err(|_| Refusal::Task)?
            .map_err(Refusal::Write)?;
        *newest = signed_at;
        self.metrics.published_expiry.set(exp as f64);
        tracing::info!(file = %self.cfg.filename, bytes = token.len(), exp, peer_uid = peer.uid, "published");
        Ok(server::text(StatusCode::OK, format!("published {} ({} bytes, exp {exp})", self.cfg.filename, token.len())))
    }
}

impl From<crypto::PolicyError> for RunError {
    fn from(e: crypto::PolicyError) -> Self {
        RunError::Policy(e)
    }
}
