//! Prometheus metrics and the health endpoint, on the optional `metrics-addr` (TCP, off by default): `GET
//! /metrics` in the text exposition format, `GET /healthz` answering 200 or 503 with the daemon's reason.
//!
//! Invariants: the endpoint reads no request body and shares nothing with the daemon's own socket; a
//! metric name is registered once per daemon (a duplicate is a programming error, reported at start-up); label
//! values come from the config or a fixed set, never from a peer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::{Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Semaphore;

use crate::server::http::{self as server, PeerSlots, Reply, Request, ServerLimits};

/// The prefix of every metric of this project.
pub const NAMESPACE: &str = "spire_attestor_tpm";

/// Connections served at once; more are closed at once (a scraper retries at its next interval).
const MAX_SCRAPERS: usize = 8;
/// Connections served at once for one peer address: one peer cannot take every slot (40 idle connections from
/// one address used to hold `/healthz` for 25 s, past Prometheus' 10 s scrape timeout).
const MAX_PER_PEER: usize = 2;
/// Time a scraper has to send its request head; also the longest an idle keep-alive connection is kept.
const IDLE: Duration = Duration::from_secs(2);

/// Which peer addresses may connect (signer-http's `allowed-addrs`, say); anyone when absent.
pub type Admit = Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>;

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// `metrics-addr` could not be bound.
    #[error("metrics-addr {addr}: {cause}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
    /// A metric could not be registered (a name used twice).
    #[error("metric {name}: {cause}")]
    Register {
        /// The metric.
        name: String,
        /// Why.
        cause: prometheus::Error,
    },
}

/// A daemon's metrics, all under `spire_attestor_tpm_<subsystem>_`.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    subsystem: &'static str,
}

impl Metrics {
    /// An empty set for `subsystem` (`verifier`, `signer_unix`, `signer_http`).
    pub fn new(subsystem: &'static str) -> Metrics {
        Metrics { registry: Registry::new(), subsystem }
    }

    fn opts(&self, name: &str, help: &str) -> Opts {
        Opts::new(name, help).namespace(NAMESPACE).subsystem(self.subsystem)
    }

    fn register<C: prometheus::core::Collector + Clone + 'static>(
        &self,
        name: &str,
        c: Result<C, prometheus::Error>,
    ) -> Result<C, MetricsError> {
        let err = |source| MetricsError::Register { name: name.to_owned(), cause: source };
        let c = c.map_err(err)?;
        self.registry.register(Box::new(c.clone())).map_err(err)?;
        Ok(c)
    }

    /// A counter with `labels`.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
        self.register(name, IntCounterVec::new(self.opts(name, help), labels))
    }

    /// A gauge with `labels`.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, MetricsError> {
        self.register(name, GaugeVec::new(self.opts(name, help), labels))
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, MetricsError> {
        self.register(name, Gauge::with_opts(self.opts(name, help)))
    }

    /// An integer gauge without labels.
    pub fn int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
        self.register(name, IntGauge::with_opts(self.opts(name, help)))
    }

    /// A histogram with `buckets` (seconds).
    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Result<Histogram, MetricsError> {
        let o = self.opts(name, help);
        let opts = HistogramOpts::new(o.name, o.help).namespace(NAMESPACE).subsystem(self.subsystem).buckets(buckets);
        self.register(name, Histogram::with_opts(opts))
    }

    /// Everything, in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What the health endpoint reports: ready or not, and why.
pub type Health = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Called before each scrape, to set the gauges that depend on the time.
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// The metrics endpoint, bound and ready to serve.
#[derive(Debug)]
pub struct Endpoint {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (at start-up, so that a taken port is an error the operator sees at once).
    pub async fn bind(addr: SocketAddr) -> Result<Endpoint, MetricsError> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, cause: source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        tracing::info!(%addr, "metrics and /healthz listening");
        Ok(Endpoint { listener, addr })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the returned task is aborted.
    pub fn spawn(self, metrics: Metrics, health: Health, before: BeforeScrape) -> tokio::task::JoinHandle<()> {
        self.spawn_admitting(metrics, health, before, Arc::new(|_| true))
    }

    /// [`Endpoint::spawn`], serving only the peers `admit` allows (the others are closed before a byte is read).
    pub fn spawn_admitting(
        self,
        metrics: Metrics,
        health: Health,
        before: BeforeScrape,
        admit: Admit,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(serve(self.listener, metrics, health, before, admit))
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    before: BeforeScrape,
    admit: Admit,
) {
    let limits = ServerLimits {
        max_body: 0,
        header_timeout: IDLE,
        body_timeout: IDLE,
        max_connections: MAX_SCRAPERS,
        per_peer: MAX_PER_PEER,
    };
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    let per_peer = PeerSlots::new(MAX_PER_PEER);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !admit(peer.ip()) {
            tracing::debug!(peer = %peer.ip(), "metrics: peer not allowed; closed");
            continue;
        }
        let (Ok(total), Some(mine)) = (slots.clone().try_acquire_owned(), per_peer.try_acquire(peer.ip())) else {
            tracing::debug!(peer = %peer.ip(), "metrics: too many connections; closed");
            continue;
        };
        let permit = (total, mine);
        let (metrics, health, before) = (metrics.clone(), health.clone(), before.clone());
        let service = service_fn(move |req: Request| {
            let reply = answer(&req, &metrics, &health, &before);
            async move { Ok::<_, Infallible>(reply) }
        });
        server::spawn_connection(stream, service, &limits, &graceful, permit);
    }
}

fn answer(req: &Request, metrics: &Metrics, health: &Health, before: &BeforeScrape) -> Reply {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            before();
            server::ok("text/plain; version=0.0.4; charset=utf-8", metrics.render())
        }
        (&Method::GET, "/healthz") => match health() {
            Ok(why) => server::text(StatusCode::OK, why),
            Err(why) => server::text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        (_, "/metrics" | "/healthz") => server::method_not_allowed("GET"),
        (_, path) => {
            server::text(StatusCode::NOT_FOUND, format!("no such endpoint {path:?}; use /metrics or /healthz"))
        }
    }
}
