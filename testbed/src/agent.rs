//! Plays the SPIRE agent: a plain HTTP/1.1 GET over the verifier's unix socket, the way SPIRE's agent sends
//! it (`trust_bundle_url` + `trust_bundle_unix_socket`), and the agent's own acceptance check of the body.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

/// A response as the agent sees it.
#[derive(Debug, Clone)]
pub struct AgentResponse {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// Sends `GET path_and_query` over the unix socket at `socket` with the headers Go's client sends.
pub fn get(socket: &Path, path_and_query: &str) -> anyhow::Result<AgentResponse> {
    request(socket, "GET", path_and_query)
}

/// Sends any method without a body (for bad-input tables).
pub fn request(socket: &Path, method: &str, path_and_query: &str) -> anyhow::Result<AgentResponse> {
    send(socket, method, path_and_query, &[], b"")
}

/// Sends one HTTP/1.1 request with `headers` and `body` over the unix socket at `socket`; reads the answer.
pub fn send(
    socket: &Path,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<AgentResponse> {
    let mut head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Go-http-client/1.1\r\n\
         Accept-Encoding: gzip\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    send_raw(socket, &raw)
}

/// Writes `raw` bytes (a whole request, possibly malformed) to the socket and parses the answer.
pub fn send_raw(socket: &Path, raw: &[u8]) -> anyhow::Result<AgentResponse> {
    let mut stream = UnixStream::connect(socket).with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(raw)?;
    let mut raw = Vec::new();
    stream.take(16 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status: u16 = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no status line")?
        .parse()
        .context("bad status")?;
    Ok(AgentResponse { status, body: body.to_owned() })
}

/// The SPIRE agent's bootstrap request for `instance`, with the query parameters SPIRE 1.13+ adds.
pub fn bootstrap_path(instance: &str) -> String {
    format!(
        "/trustbundle?instance={instance}&spiffe-trust-domain=example.org&spire-attest-mode=bootstrap\
         &spire-attest-start-time=2026-11-23T10%3A00%3A00Z&spire-connection-attempts=1\
         &spire-server-address=spire.example.org&spire-server-port=8081"
    )
}

/// What the agent does with a 200 body in `pem` format: every block must be a CERTIFICATE that parses, and
/// there must be at least one. Returns the number of certificates.
pub fn accept_pem(body: &str) -> anyhow::Result<usize> {
    let bundle = crypto::bundle::Bundle::parse(body).context("agent would reject the bundle")?;
    if body.contains("-----BEGIN")
        && body.matches("-----BEGIN CERTIFICATE-----").count() != body.matches("-----BEGIN").count()
    {
        bail!("a PEM block that is not a CERTIFICATE");
    }
    Ok(bundle.certificates().len())
}

/// Sends `raw` to `addr` over TCP from the local address `source` (any loopback address works on Linux), and
/// parses the answer. For allow-list tests.
pub fn tcp_from(source: std::net::IpAddr, addr: std::net::SocketAddr, raw: &[u8]) -> anyhow::Result<AgentResponse> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let raw = raw.to_vec();
    runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = if source.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        let mut stream = socket.connect(addr).await?;
        let _ = stream.write_all(&raw).await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await??;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
        let status = head.lines().next().and_then(|l| l.split_whitespace().nth(1)).context("no status")?.parse()?;
        Ok(AgentResponse { status, body: body.to_owned() })
    })
}

/// A POST of `body` to `path` as raw HTTP/1.1 bytes.
pub fn post(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// `GET path` over TCP as HTTP/1.0 (no chunked answers, the connection closes after it): for metrics,
/// `/healthz` and Prometheus' API.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<AgentResponse> {
    let source =
        if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
    tcp_from(source, addr, format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
}
