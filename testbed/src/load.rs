//! A small load generator for `make bench`: N concurrent keep-alive HTTP/1.1 clients on a unix socket, each
//! sending requests back to back, recording every request's latency.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Latency figures of one run.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Requests completed.
    pub requests: usize,
    /// Wall time of the whole run.
    pub wall: Duration,
    /// Sorted per-request latencies.
    pub latencies: Vec<Duration>,
}

impl LoadResult {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }

    /// The `p`-th percentile (0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * p / 100.0).round() as usize;
        self.latencies[idx.min(self.latencies.len() - 1)]
    }
}

/// One request shape: method, path, content type, body.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// Content type, if any.
    pub content_type: Option<&'static str>,
    /// Body.
    pub body: Bytes,
}

/// Runs `total` requests spread over `clients` keep-alive connections to `socket`; every answer must be 200.
pub fn run(socket: &Path, clients: usize, total: usize, spec: &RequestSpec) -> anyhow::Result<LoadResult> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run_async(socket.to_owned(), clients, total, spec.clone()))
}

async fn run_async(socket: PathBuf, clients: usize, total: usize, spec: RequestSpec) -> anyhow::Result<LoadResult> {
    let per_client = total.div_ceil(clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let socket = socket.clone();
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move { client(socket, per_client, spec).await }));
    }
    let mut latencies = Vec::with_capacity(per_client * clients);
    for t in tasks {
        latencies.extend(t.await.context("client task")??);
    }
    let wall = started.elapsed();
    latencies.sort();
    Ok(LoadResult { requests: latencies.len(), wall, latencies })
}

async fn client(socket: PathBuf, n: usize, spec: RequestSpec) -> anyhow::Result<Vec<Duration>> {
    let stream = tokio::net::UnixStream::connect(&socket).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut req =
            http::Request::builder().method(spec.method.clone()).uri(spec.path.as_str()).header("host", "localhost");
        if let Some(ct) = spec.content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Full::new(spec.body.clone()))?;
        let t = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        out.push(t.elapsed());
        if status != http::StatusCode::OK || body.is_empty() {
            bail!("answer {status}: {}", String::from_utf8_lossy(&body));
        }
    }
    Ok(out)
}

/// Resident and peak memory of a process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{name} missing"))?;
        Ok(line.split_whitespace().nth(1).context("no value")?.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
