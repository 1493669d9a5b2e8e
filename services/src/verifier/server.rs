//! The verifier's listen mode: `GET /trustbundle?instance=NAME[&format=pem|spiffe]` on a unix socket, served
//! from the keyset's pre-rendered last-known-good bundle; background refresh per keyset.
//!
//! Invariant: a 200 always carries a bundle that verified under the keyset's policy and whose token has not
//! expired at the time of the request.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use super::config::VerifierConfig;
use super::keyset::Keyset;
use super::metrics::VerifierMetrics;
use super::refusal::Refusal;
use crate::server::http::{self as server, Reply, Request, ServerLimits};
use crate::server::uds::{self, PeerCred, PeerPolicy};
use common::client::{ClientError, ClientOptions, HttpClient};
use common::clock::Clock;

/// Why the verifier could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] uds::BindError),
    /// The socket systemd passed could not be taken (wrong path, wrong kind).
    #[error(transparent)]
    Inherit(#[from] uds::InheritError),
    /// The HTTP client could not be built (CA file).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The state directory could not be created.
    #[error("state directory {path}: {cause}")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// An existing state directory another user could write (the rollback floor lives there).
    #[error("state directory {path} is unsafe: {why}")]
    UnsafeStateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
}

/// Creates the state directory 0700 if it is missing; an existing one is left as the operator made it (never
/// chmod'ed), but refused if it is not a directory, not ours, or writable by group or others: whoever can write it
/// can replace the rollback floor.
fn prepare_state_dir(dir: &std::path::Path) -> Result<(), RunError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let io = |source| RunError::StateDir { path: dir.to_owned(), cause: source };
    let unsafe_dir = |why: String| RunError::UnsafeStateDir { path: dir.to_owned(), why };
    match std::fs::metadata(dir) {
        Ok(m) => {
            if !m.is_dir() {
                return Err(unsafe_dir("not a directory".into()));
            }
            let me = std::fs::metadata("/proc/self").map_err(io)?.uid();
            if m.uid() != me {
                return Err(unsafe_dir(format!("owned by uid {}, not this daemon's uid {me}", m.uid())));
            }
            if m.mode() & 0o022 != 0 {
                return Err(unsafe_dir(format!("mode {:04o} lets group or others write it", m.mode() & 0o7777)));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

fn is_bundle_path(path: &str) -> bool {
    path == "/trustbundle" || path == "/trustbundle/"
}

/// Shared state of a running verifier.
#[derive(Debug)]
pub struct Verifier {
    keysets: BTreeMap<String, Arc<Keyset>>,
    metrics: Arc<VerifierMetrics>,
    client: HttpClient,
    refresh: Duration,
    timeout: Duration,
    max_token_size: usize,
    /// What tokens are judged by.
    clock: Clock,
}

impl Verifier {
    /// Builds the keysets (loading persisted state) and the client.
    pub fn new(cfg: &VerifierConfig) -> Result<Verifier, RunError> {
        Self::with_clock(cfg, Clock::system())
    }

    /// [`Verifier::new`] judging tokens by `clock` (tests move a manual one instead of waiting).
    pub fn with_clock(cfg: &VerifierConfig, clock: Clock) -> Result<Verifier, RunError> {
        prepare_state_dir(&cfg.state_dir)?;
        let client = HttpClient::new(ClientOptions {
            timeout: cfg.timeout,
            max_body: cfg.max_token_size,
            ca_file: cfg.ca_file.clone(),
        })?;
        let metrics = Arc::new(VerifierMetrics::new()?);
        let keysets = cfg
            .keysets
            .iter()
            .map(|(name, ks)| {
                metrics.refresh_interval.with_label_values(&[name]).set(cfg.refresh.as_secs_f64());
                let keyset = Keyset::new(name, ks.clone(), &cfg.state_dir, metrics.clone(), clock.clone());
                (name.clone(), Arc::new(keyset))
            })
            .collect();
        Ok(Verifier {
            keysets,
            metrics,
            client,
            refresh: cfg.refresh,
            timeout: cfg.timeout,
            max_token_size: cfg.max_token_size,
            clock,
        })
    }

    /// Sets the gauges that depend on the time; called before each scrape.
    pub fn update_gauges(&self) {
        let now = self.clock.now();
        for (name, ks) in &self.keysets {
            let left = ks.serving(now).map(|s| s.expires_at.saturating_sub(now)).unwrap_or(0);
            self.metrics.expires_in.with_label_values(&[name]).set(left as f64);
        }
    }

    /// Ready once every keyset holds a verified, unexpired bundle; otherwise the reason names those that do not.
    pub fn health(&self) -> Result<String, String> {
        let now = self.clock.now();
        let missing: Vec<&str> =
            self.keysets.iter().filter(|(_, ks)| ks.serving(now).is_none()).map(|(n, _)| n.as_str()).collect();
        let unusable: Vec<&str> = self.keysets.values().filter_map(|ks| ks.unusable()).collect();
        if missing.is_empty() {
            Ok(format!("ok: serving {}", self.keysets.keys().cloned().collect::<Vec<_>>().join(", ")))
        } else if unusable.is_empty() {
            Err(format!("no verified, unexpired bundle for keyset {}", missing.join(", ")))
        } else {
            Err(format!("no verified, unexpired bundle for keyset {}; {}", missing.join(", "), unusable.join("; ")))
        }
    }

    /// The metrics, for rendering.
    pub fn metrics(&self) -> &VerifierMetrics {
        &self.metrics
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Reply {
        if req.method() != Method::GET && req.method() != Method::HEAD && is_bundle_path(req.uri().path()) {
            self.metrics.requests.with_label_values(&["", "405"]).inc();
            return server::method_not_allowed("GET, HEAD");
        }
        let pairs = server::query_pairs(req.uri().query().unwrap_or(""));
        // Only a configured keyset's name becomes a label: an agent cannot grow the metrics.
        let keyset = pairs
            .iter()
            .find(|(k, _)| k == "instance")
            .and_then(|(_, v)| self.keysets.get_key_value(v))
            .map(|(name, _)| name.as_str())
            .unwrap_or("");
        let reply = server::reply(self.bundle(req, &pairs).await, &());
        let status = reply.status();
        self.metrics.requests.with_label_values(&[keyset, status.as_str()]).inc();
        tracing::debug!(keyset = %keyset, status = status.as_u16(), "request");
        reply
    }

    async fn bundle(self: &Arc<Self>, req: Request, pairs: &[(String, String)]) -> Result<Reply, Refusal> {
        let path = req.uri().path();
        if !is_bundle_path(path) {
            return Err(Refusal::NoEndpoint(path.to_owned()));
        }
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let Some(instance) = get("instance").filter(|i| !i.is_empty()) else {
            return Err(Refusal::NoInstance);
        };
        let spiffe = match get("format") {
            None | Some("pem") => false,
            Some("spiffe") => true,
            Some(other) => return Err(Refusal::Format(other.to_owned())),
        };
        let Some(ks) = self.keysets.get(instance) else {
            return Err(Refusal::UnknownInstance(instance.to_owned()));
        };
        // An agent of another trust domain must not take this keyset's bundle as its own.
        if let (Some(want), Some(asked)) = (ks.trust_domain(), get("spiffe-trust-domain").filter(|t| !t.is_empty())) {
            if want != asked {
                tracing::warn!(instance, asked, serves = %want, "agent of another trust domain refused");
                return Err(Refusal::TrustDomain {
                    instance: instance.to_owned(),
                    serves: want.to_string(),
                    asked: asked.to_owned(),
                });
            }
        }
        if let Some(mode) = get("spire-attest-mode") {
            tracing::info!(
                instance,
                mode,
                attempts = get("spire-connection-attempts").unwrap_or(""),
                start = get("spire-attest-start-time").unwrap_or(""),
                server = get("spire-server-address").unwrap_or(""),
                port = get("spire-server-port").unwrap_or(""),
                trust_domain = get("spiffe-trust-domain").unwrap_or(""),
                "SPIRE agent (re)bootstrap request"
            );
        }
        let served = match ks.serving(self.clock.now()) {
            Some(s) => {
                if ks.stale(self.refresh) {
                    let (me, ks) = (self.clone(), ks.clone());
                    tokio::spawn(async move { ks.refresh_if_idle(&me.client, me.max_token_size, me.timeout).await });
                }
                s
            }
            None => {
                ks.refresh(&self.client, self.max_token_size, self.timeout).await;
                match ks.serving(self.clock.now()) {
                    Some(s) => s,
                    None => return Err(Refusal::NoBundle(instance.to_owned())),
                }
            }
        };
        Ok(if spiffe {
            server::ok("application/json", served.json.clone())
        } else {
            server::ok("application/x-pem-file", served.pem.clone())
        })
    }

    fn spawn_refreshers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        self.keysets
            .values()
            .map(|ks| {
                let (me, ks) = (self.clone(), ks.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(me.refresh);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        ks.refresh_if_idle(&me.client, me.max_token_size, me.timeout).await;
                    }
                })
            })
            .collect()
    }
}

/// How listen mode runs beyond its config file.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// The socket systemd passed (see [`uds::inherited`]); without one, the verifier binds `cfg.socket`.
    pub inherited: Option<std::os::unix::net::UnixListener>,
    /// The clock tokens are judged by: the system's, or a test's manual one.
    pub clock: Clock,
}

/// Runs listen mode until `shutdown` resolves, on a socket it binds at `cfg.socket`, by the system clock.
pub async fn run(cfg: VerifierConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with(cfg, RunOptions::default(), shutdown).await
}

/// Runs listen mode until `shutdown` resolves, as `options` say.
pub async fn run_with(
    cfg: VerifierConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let verifier = Arc::new(Verifier::with_clock(&cfg, options.clock)?);
    let metrics = match cfg.metrics_addr {
        Some(addr) => {
            let endpoint = crate::metrics::Endpoint::bind(addr).await?;
            let (h, b) = (verifier.clone(), verifier.clone());
            Some(endpoint.spawn(
                verifier.metrics().all.clone(),
                Arc::new(move || h.health()),
                Arc::new(move || b.update_gauges()),
            ))
        }
        None => None,
    };
    let activated = options.inherited.is_some();
    let listener = match options.inherited {
        Some(l) => tokio::net::UnixListener::from_std(l).map_err(|source| uds::BindError::Io {
            path: cfg.socket.clone(),
            op: "take the passed socket",
            cause: source,
        })?,
        None => uds::bind(&cfg.socket, cfg.socket_mode).await?,
    };
    let refreshers = verifier.spawn_refreshers();
    tracing::info!(socket = %cfg.socket.display(), activated, keysets = ?verifier.keysets.keys().collect::<Vec<_>>(), "verifier ready");
    let limits = ServerLimits { max_body: 4096, ..ServerLimits::default() };
    let handler = move |req: Request, _peer: PeerCred| {
        let verifier = verifier.clone();
        async move { verifier.handle(req).await }
    };
    server::serve_unix(listener, PeerPolicy::default(), limits, handler, shutdown).await;
    for r in refreshers.into_iter().chain(metrics) {
        r.abort();
    }
    tracing::info!("verifier stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old code chmod'ed any existing state directory to 0700, and accepted one anybody could write.
    #[test]
    fn state_dir_is_created_private_and_an_existing_one_is_left_alone_or_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        prepare_state_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
        prepare_state_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o750, "an existing directory was chmod'ed");
        for bad in [0o777, 0o770, 0o1777] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(bad)).unwrap();
            let err = prepare_state_dir(&shared).unwrap_err().to_string();
            assert!(err.contains("unsafe") && err.contains("write"), "{bad:o}: {err}");
            assert_eq!(mode(&shared), bad, "a refused directory was changed");
        }
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(prepare_state_dir(&file).unwrap_err().to_string().contains("not a directory"));
        // Another user's directory, even a private one: as root, one given to nobody; otherwise root's own "/".
        let foreign = if own_uid() == 0 {
            let d = tmp.path().join("nobodys");
            std::fs::create_dir(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
            d
        } else {
            std::path::PathBuf::from("/")
        };
        let err = prepare_state_dir(&foreign).unwrap_err().to_string();
        assert!(err.contains("owned by uid"), "{err}");
    }

    /// This process's uid, as the daemon reads it.
    fn own_uid() -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").unwrap().uid()
    }
}
