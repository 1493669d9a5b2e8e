//! The HTTP/1.1 server side every daemon uses: bounded bodies, timeouts, graceful shutdown, plain-text errors.
//!
//! Invariants: a request body is never read past its limit; every error response carries a one-line reason;
//! a slow client cannot hold a connection open past the header and body timeouts (an idle keep-alive connection
//! included); at most `max_connections` connections are served at once (further ones wait in the kernel backlog),
//! and at most `per_peer` of them for one peer (a uid on unix sockets, an address over TCP), so one peer cannot
//! take every slot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use super::uds::{self, PeerCred, PeerPolicy};

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;
/// The request type of every handler.
pub type Request = http::Request<Incoming>;

/// Largest request head (request line and headers) read into memory; a larger one gets 431.
pub const MAX_HEAD: usize = 64 * 1024;

/// Bounds on what one client may cost the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time allowed to send the request head.
    pub header_timeout: Duration,
    /// Time allowed to send the whole body.
    pub body_timeout: Duration,
    /// Largest body accepted, in bytes.
    pub max_body: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections served at once for one peer.
    pub per_peer: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            // Also the longest an idle keep-alive connection is kept: local clients send at once.
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_body: 1 << 20,
            max_connections: 256,
            per_peer: 32,
        }
    }
}

/// Connections held per peer.
#[derive(Debug)]
pub struct PeerSlots<K> {
    max: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One connection's share of [`PeerSlots`], given back when dropped.
#[derive(Debug)]
pub struct PeerSlot<K: Hash + Eq> {
    key: K,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Copy> PeerSlots<K> {
    /// At most `max` connections per peer.
    pub fn new(max: usize) -> PeerSlots<K> {
        PeerSlots { max, held: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// A slot for `key`, or `None` when it holds `max` already.
    pub fn try_acquire(&self, key: K) -> Option<PeerSlot<K>> {
        // A poisoned lock only means a panic elsewhere; the counts are still consistent (one statement each).
        let mut held = common::sync::lock(&self.held);
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot { key, held: self.held.clone() })
    }
}

impl<K: Hash + Eq> Drop for PeerSlot<K> {
    fn drop(&mut self) {
        let mut held = common::sync::lock(&self.held);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// A plain-text response: `reason` plus a newline. Used for every error and for small successes.
pub fn text(status: StatusCode, reason: impl Into<String>) -> Reply {
    let mut body = reason.into();
    body.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// A 200 response carrying `body` with the given content type.
pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut resp = Response::new(Full::new(body.into()));
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// Why a request body could not be read; each maps to one status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Larger than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// Not finished within the body timeout.
    #[error("request body not received within {0:?}")]
    Timeout(Duration),
    /// The connection failed while reading.
    #[error("request body could not be read")]
    Read,
}

impl BodyError {
    /// The HTTP response for this error.
    pub fn reply(&self) -> Reply {
        let status = match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read => StatusCode::BAD_REQUEST,
        };
        text(status, self.to_string())
    }
}

/// Reads a whole request body, refusing more than `limits.max_body` bytes or more than `limits.body_timeout`.
pub async fn read_body(req: Request, limits: &ServerLimits) -> Result<(http::request::Parts, Bytes), BodyError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > limits.max_body as u64 {
            return Err(BodyError::TooLarge(limits.max_body));
        }
    }
    let collect = Limited::new(body, limits.max_body).collect();
    match tokio::time::timeout(limits.body_timeout, collect).await {
        Err(_) => Err(BodyError::Timeout(limits.body_timeout)),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limits.max_body)),
        Ok(Err(_)) => Err(BodyError::Read),
        Ok(Ok(collected)) => Ok((parts, collected.to_bytes())),
    }
}

/// Reads a whole request body as UTF-8 text within `limits`; on failure, the reply to send.
pub async fn read_text(req: Request, limits: &ServerLimits) -> Result<(http::request::Parts, String), Reply> {
    let (parts, body) = read_body(req, limits).await.map_err(|e| e.reply())?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| text(StatusCode::BAD_REQUEST, "body is not UTF-8"))?;
    Ok((parts, text))
}

/// 405 with an `Allow` header naming the accepted methods.
pub fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("use {allow}"));
    r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

/// Serves HTTP/1.1 on a unix socket until `shutdown` resolves, then lets in-flight requests finish
/// (bounded by `drain`). Peers outside `policy` get 403 on every request.
pub async fn serve_unix<H, Fut>(
    listener: tokio::net::UnixListener,
    policy: PeerPolicy,
    limits: ServerLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request, PeerCred) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_uid = PeerSlots::new(limits.per_peer);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let peer = match uds::peer_cred(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; dropping connection");
                continue;
            }
        };
        let Some(uid_slot) = per_uid.try_acquire(peer.uid) else {
            tracing::warn!(peer_uid = peer.uid, limit = limits.per_peer, "too many connections from one uid; closed");
            continue;
        };
        let allowed = policy.allows(&peer);
        if !allowed {
            tracing::warn!(peer_uid = peer.uid, peer_gid = peer.gid, peer_pid = ?peer.pid, "peer not in allowed-uids/allowed-gids");
        }
        let handler = handler.clone();
        let service = service_fn(move |req: Request| {
            let handler = handler.clone();
            async move {
                if !allowed {
                    return Ok::<_, Infallible>(text(
                        StatusCode::FORBIDDEN,
                        format!("uid {} / gid {} is not allowed on this socket", peer.uid, peer.gid),
                    ));
                }
                Ok(handler(req, peer).await)
            }
        });
        spawn_connection(stream, service, &limits, &graceful, (permit, uid_slot));
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10 s of shutdown; closing them");
    }
}

/// Serves one connection to completion under a graceful-shutdown watcher, releasing `permit` when done.
pub async fn serve_watched<S, Svc>(
    io: S,
    service: Svc,
    limits: &ServerLimits,
    watcher: hyper_util::server::graceful::Watcher,
    permit: impl Send + 'static,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request, Response = Reply, Error = Infallible> + Send + 'static,
    Svc::Future: Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(permit);
}

/// Serves one connection with the given service under `graceful`, releasing `permit` when done.
pub fn spawn_connection<S, Svc>(
    io: S,
    service: Svc,
    limits: &ServerLimits,
    graceful: &GracefulShutdown,
    permit: impl Send + 'static,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request, Response = Reply, Error = Infallible> + Send + 'static,
    Svc::Future: Send + 'static,
{
    let watcher = graceful.watcher();
    let limits = *limits;
    tokio::spawn(async move { serve_watched(io, service, &limits, watcher, permit).await });
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Every daemon's reasons to refuse or fail a request (one enum per daemon, in its `refusal` module): each
/// knows its HTTP status, its metric label and how it is logged, so that [`reply`] answers all of them alike.
pub trait Refusal: std::fmt::Display {
    /// Who asked (a unix socket peer's uid, a TCP peer's address), for the log.
    type Peer: ?Sized;
    /// The one place a status is chosen.
    fn status(&self) -> StatusCode;
    /// The `result` label of the daemon's request counter: by default `refused` (4xx), `busy` (503) or `failed`.
    fn label(&self) -> &'static str {
        match self.status().as_u16() {
            503 => "busy",
            400..=499 => "refused",
            _ => "failed",
        }
    }
    /// Logs the refusal once, with the detail the peer does not get (a TPM's error, a file's path).
    fn log(&self, peer: &Self::Peer);
}

/// The reply for a handler's result: a refusal logged once and answered with its status and its reason.
pub fn reply<R: Refusal>(result: Result<Reply, R>, peer: &R::Peer) -> Reply {
    result.unwrap_or_else(|refusal| {
        refusal.log(peer);
        text(refusal.status(), refusal.to_string())
    })
}

/// The metric label of a handler's result: `ok` for a 200, the refusal's own label otherwise.
pub fn result_label<R: Refusal>(result: &Result<Reply, R>) -> &'static str {
    match result {
        Ok(r) if r.status() == StatusCode::OK => "ok",
        Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => "busy",
        Ok(r) if r.status().is_client_error() => "refused",
        Ok(_) => "failed",
        Err(refusal) => refusal.label(),
    }
}

/// Decodes `%XX` and `+` in a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            // Exactly two hex digits (from_str_radix alone would take a sign: `%+1` as byte 0x01).
            b'%' if i + 2 < bytes.len() && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit() => {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(bytes[i + 1]) << 4 | hex(bytes[i + 2]));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query's key/value pairs, decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// The media type of a request's `Content-Type` (lowercase, without parameters), or "" when absent.
pub fn content_type(headers: &http::HeaderMap) -> String {
    let value = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn query_table() {
        let q =
            query_pairs("instance=main&spire-attest-start-time=2026-08-22T10%3A00%3A00Z&x&format=spiffe&a=b+c&bad=%zz");
        let get = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(get("instance").as_deref(), Some("main"));
        assert_eq!(get("spire-attest-start-time").as_deref(), Some("2026-08-22T10:00:00Z"));
        assert_eq!(get("x").as_deref(), Some(""));
        assert_eq!(get("a").as_deref(), Some("b c"));
        assert_eq!(get("bad").as_deref(), Some("%zz"));
        // A sign is not a hex digit (the old decoder read `%+1` as byte 0x01); a short escape stays literal.
        for (raw, want) in [("%+1", "% 1"), ("%-1", "%-1"), ("%4", "%4"), ("%", "%"), ("%41x", "Ax"), ("%7e", "~")] {
            let q = query_pairs(&format!("k={raw}"));
            assert_eq!(q[0].1, want, "{raw}");
        }
        assert!(query_pairs("").is_empty());
    }

    #[test]
    fn content_type_is_the_media_type_in_lower_case() {
        let mut h = http::HeaderMap::new();
        assert_eq!(content_type(&h), "");
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("Application/JWT; charset=utf-8"));
        assert_eq!(content_type(&h), "application/jwt");
    }
}
