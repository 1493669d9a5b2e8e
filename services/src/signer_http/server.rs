//! signer-http request handling and `run`: TCP (optionally TLS) listeners, the allow-list check per connection,
//! bounded verification, and forwarding to signer-unix.
//!
//! Order of checks for `POST /sign`: peer address (before any byte of the body is read) -> body size ->
//! a bundle token (keyset updates are refused: they need root on each signing host) -> outermost signature with
//! `primary` or `backup` (pinned algorithm, `exp` required) -> signer-unix wraps it.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;

use super::allow::AllowList;
use super::config::SignerHttpConfig;
use super::metrics::SignerHttpMetrics;
use super::refusal::Refusal;
use crate::server::http::{self as server, PeerSlots, Reply, Request, ServerLimits};

/// Disallowed peers answered with a 403 at once, at most this many at a time; past that a refused connection is
/// closed unanswered. Each answer is bounded by [`REFUSAL_TIME`]. A flood from a disallowed address therefore
/// holds a fixed, small number of descriptors (it used to hold every connection for up to 2 s, until accept
/// failed with "Too many open files" and the allowed co-signer got 502).
const REFUSALS_IN_FLIGHT: usize = 16;
/// The most time spent answering one disallowed peer.
const REFUSAL_TIME: Duration = Duration::from_millis(250);
use common::signer_client::{SignerClient, SignerClientError};

/// Why signer-http could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// No listener could be bound.
    #[error(transparent)]
    Listen(#[from] crate::server::tls::ListenError),
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::server::tls::TlsError),
    /// The signer-unix client could not be built.
    #[error("signer-unix client: {0}")]
    Client(common::client::ClientError),
}

struct State {
    cfg: SignerHttpConfig,
    /// What each token's `exp`, `nbf` and `iat` are judged by.
    clock: common::clock::Clock,
    client: SignerClient,
    verify_slots: Semaphore,
    limits: ServerLimits,
    metrics: SignerHttpMetrics,
}

/// Runs signer-http until `shutdown` resolves.
pub async fn run(cfg: SignerHttpConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with(cfg, common::clock::Clock::system(), shutdown).await
}

/// [`run`], judging tokens by `clock` (tests move a manual one instead of waiting).
pub async fn run_with(
    cfg: SignerHttpConfig,
    clock: common::clock::Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let tls = cfg.tls.as_ref().map(crate::server::tls::acceptor).transpose()?;
    let client = SignerClient::new(&cfg.socket, cfg.timeout)?;
    let allow = AllowList::new(cfg.allowed.clone());
    allow.resolve().await;
    let listeners = crate::server::tls::bind_all(&cfg.listen).await?;
    let limits = ServerLimits {
        max_body: cfg.max_body,
        header_timeout: cfg.read_timeout,
        body_timeout: cfg.read_timeout,
        ..ServerLimits::default()
    };
    for l in &listeners {
        tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = tls.is_some(), "signer-http listening");
    }
    let metrics = SignerHttpMetrics::new()?;
    let exporter = match cfg.metrics_addr {
        Some(addr) => Some(spawn_metrics(addr, &metrics, &allow).await?),
        None => None,
    };
    let resolver = spawn_resolver(allow.clone(), cfg.resolve_interval);
    let state = Arc::new(State {
        clock,
        verify_slots: Semaphore::new(cfg.max_concurrent),
        cfg,
        client,
        limits,
        metrics: metrics.clone(),
    });
    let door = Door {
        allow,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
        per_ip: PeerSlots::new(limits.per_peer),
        metrics,
        tls: tls.is_some(),
    };
    let graceful = GracefulShutdown::new();
    let (acceptors, mut incoming) = crate::server::tls::spawn_acceptors(listeners);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            c = incoming.recv() => match c { Some(c) => c, None => break },
        };
        if let Some((stream, permit)) = door.admit(stream, peer) {
            serve(stream, peer, state.clone(), tls.clone(), &limits, &graceful, permit);
        }
    }
    for a in acceptors {
        a.abort();
    }
    resolver.abort();
    if let Some(e) = exporter {
        e.abort();
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10 s of shutdown; closing them");
    }
    tracing::info!("signer-http stopped");
    Ok(())
}

/// The metrics endpoint: it answers this host (127.0.0.1, ::1) and the peers signer-http co-signs for, like the
/// co-signing port, not every peer that can reach it.
async fn spawn_metrics(
    addr: SocketAddr,
    metrics: &SignerHttpMetrics,
    allow: &AllowList,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    let admit = allow.clone();
    let local = |ip: IpAddr| ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]);
    Ok(crate::metrics::Endpoint::bind(addr).await?.spawn_admitting(
        metrics.all.clone(),
        Arc::new(|| Ok("ok: serving".to_owned())),
        Arc::new(|| {}),
        Arc::new(move |ip: IpAddr| local(ip.to_canonical()) || admit.allows(ip)),
    ))
}

/// Re-resolves the host names of `allowed-addrs` every `every`.
fn spawn_resolver(allow: AllowList, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            allow.resolve().await;
        }
    })
}

/// Who gets in: a connection slot, a peer in `allowed-addrs` (refused before a byte is read), and a slot of its
/// address's own.
struct Door {
    allow: AllowList,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    per_ip: PeerSlots<IpAddr>,
    metrics: SignerHttpMetrics,
    tls: bool,
}

/// What an admitted connection holds until it closes.
type Permit = (tokio::sync::OwnedSemaphorePermit, crate::server::http::PeerSlot<IpAddr>);

impl Door {
    /// The connection and its permit when it may be served; otherwise it is refused (a 403, a few at a time) or
    /// closed, and counted.
    fn admit(&self, stream: tokio::net::TcpStream, peer: SocketAddr) -> Option<(tokio::net::TcpStream, Permit)> {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many connections; dropping one");
            self.metrics.count("too_many_connections");
            return None;
        };
        let _ = stream.set_nodelay(true);
        if !self.allow.allows(peer.ip()) {
            drop(permit);
            self.metrics.count("refused_at_door");
            self.refuse(stream, peer.ip());
            return None;
        }
        let Some(ip_slot) = self.per_ip.try_acquire(peer.ip()) else {
            self.metrics.count("too_many_connections");
            tracing::warn!(peer = %peer.ip(), "too many connections from one peer; closed");
            return None;
        };
        Some((stream, (permit, ip_slot)))
    }

    /// A disallowed peer: answered with a 403 before a single byte of its request is read (let alone parsed),
    /// at most [`REFUSALS_IN_FLIGHT`] at a time; past that, closed unanswered.
    fn refuse(&self, stream: tokio::net::TcpStream, peer: IpAddr) {
        let Ok(turn) = self.refusals.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "peer not in allowed-addrs; closed unanswered");
            return;
        };
        tracing::warn!(%peer, "peer not in allowed-addrs; refused before reading its request");
        let tls = self.tls;
        tokio::spawn(async move {
            refuse(stream, peer, tls).await;
            drop(turn);
        });
    }
}

/// Serves one admitted connection, over TLS when configured.
fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: &ServerLimits,
    graceful: &GracefulShutdown,
    permit: Permit,
) {
    let service = service_fn(move |req: Request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(state.handle(req, peer.ip()).await) }
    });
    match tls {
        None => server::spawn_connection(stream, service, limits, graceful, permit),
        Some(acceptor) => {
            let (limits, graceful_conn) = (*limits, graceful.watcher());
            tokio::spawn(async move {
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        server::serve_watched(tls_stream, service, &limits, graceful_conn, permit).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    }
}

/// Answers a disallowed peer with a fixed 403 and closes, without reading its request. Over TLS the handshake
/// itself is refused by closing (no bytes of ours would be readable to it anyway).
async fn refuse(mut stream: tokio::net::TcpStream, peer: IpAddr, tls: bool) {
    use tokio::io::AsyncWriteExt;
    if !tls {
        let reason = format!("{peer} is not in allowed-addrs\n");
        let head = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reason.len()
        );
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(reason.as_bytes()).await;
            let _ = stream.shutdown().await;
            // Discard (never parse) what the peer already sent, so closing does not reset the connection
            // before it has read the answer.
            let mut sink = [0u8; 4096];
            let mut left: usize = 64 * 1024;
            while left > 0 {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

impl State {
    async fn handle(&self, req: Request, peer: IpAddr) -> Reply {
        let path = req.uri().path().to_owned();
        let result = match (req.method().clone(), path.as_str()) {
            (Method::POST, "/sign") => self.sign(req, peer).await,
            (_, "/sign") => return server::method_not_allowed("POST"),
            _ => Err(Refusal::NoEndpoint(path)),
        };
        let label = match server::result_label(&result) {
            "ok" => "cosigned",
            "refused" => "bad_request",
            other => other,
        };
        self.metrics.count(label);
        let r = server::reply(result, &peer);
        tracing::debug!(%peer, result = label, status = r.status().as_u16(), "co-sign request");
        r
    }

    async fn sign(&self, req: Request, peer: IpAddr) -> Result<Reply, Refusal> {
        let (_, text) = match server::read_text(req, &self.limits).await {
            Ok(t) => t,
            Err(reply) => return Ok(reply),
        };
        let token = text.trim();
        let slot = self.verify_slots.try_acquire().map_err(|_| Refusal::Busy)?;
        let now = self.clock.now();
        let mut keys = vec![&self.cfg.primary];
        if let Some(b) = &self.cfg.backup {
            keys.push(b);
        }
        // Never a keyset update: one moves what every node trusts for good, so each signing host adds its layer by
        // a deliberate act of root there (`sign keys --add-layer`), never by an automatic service. A co-signer
        // that did would let one compromised server write the fleet's keyset.
        let layer = crypto::token::verify_layer(token, &keys, now, &self.cfg.limits).map_err(|e| match e.kind {
            crypto::VerifyErrorKind::WrongKind { got: crypto::token::Kind::KeysetUpdate, .. } => Refusal::KeysetUpdate,
            _ => Refusal::Token(e),
        })?;
        if self.cfg.backup.as_ref().is_some_and(|b| std::ptr::eq(layer.key, b)) {
            tracing::warn!(%peer, key = layer.key.name(), "co-signing a token signed by the BACKUP key");
        }
        drop(slot);
        let wrapped = self.client.sign_token(token).await.map_err(|e| match &e {
            SignerClientError::Status { status, .. } if *status == StatusCode::SERVICE_UNAVAILABLE => {
                Refusal::LocalBusy(e)
            }
            _ => Refusal::Local(e),
        })?;
        tracing::info!(%peer, signer = layer.key.name(), bytes = wrapped.len(), "co-signed");
        Ok(server::ok("application/jwt", wrapped.into_string()))
    }
}

impl From<common::client::ClientError> for RunError {
    fn from(e: common::client::ClientError) -> Self {
        RunError::Client(e)
    }
}
