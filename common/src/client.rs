//! A small HTTP/1.1 client over unix sockets, TCP and TLS, with a deadline and a body cap on every call.
//!
//! Invariants: no call outlives its timeout; no response body is read past `max_body`; redirects are not
//! followed (a signed-token source that redirects is answered with its status, which callers treat as an
//! error); https uses the configured CA file, or the system roots when none is configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// HTTP over a unix socket (the host in the URL is ignored, as SPIRE's agent does).
    Unix(PathBuf),
    /// Plain HTTP over TCP.
    Http {
        /// Host name or IP literal (no brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// HTTPS over TCP.
    Https {
        /// Host name or IP literal (no brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

/// A parsed `http://` or `https://` URL, or a unix-socket request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Where to connect.
    pub target: Target,
    /// The `Host` header value.
    pub authority: String,
    /// Path plus query, starting with `/`.
    pub path_and_query: String,
}

impl HttpUrl {
    /// Parses an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<HttpUrl, ClientError> {
        let bad = |reason: &str| ClientError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let uri: http::Uri = url.parse().map_err(|_| bad("not a valid URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user info is not allowed"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
        let target = if https { Target::Https { host, port } } else { Target::Http { host, port } };
        Ok(HttpUrl { target, authority: authority.as_str().to_owned(), path_and_query })
    }

    /// A request to `path_and_query` over the unix socket at `socket`.
    pub fn unix(socket: &Path, path_and_query: &str) -> HttpUrl {
        HttpUrl {
            target: Target::Unix(socket.to_owned()),
            authority: "localhost".to_owned(),
            path_and_query: path_and_query.to_owned(),
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Unix(p) => write!(f, "unix:{}{}", p.display(), self.path_and_query),
            Target::Http { .. } => write!(f, "http://{}{}", self.authority, self.path_and_query),
            Target::Https { .. } => write!(f, "https://{}{}", self.authority, self.path_and_query),
        }
    }
}

/// Why a request failed. Transport problems and protocol problems are distinct from a non-2xx status,
/// which is not an error at this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not usable.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// Could not connect.
    #[error("cannot connect to {target}: {cause}")]
    Connect {
        /// Where.
        target: String,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS with {target} failed: {cause}")]
    Tls {
        /// Where.
        target: String,
        /// The I/O error carrying the TLS alert.
        cause: std::io::Error,
    },
    /// The HTTP exchange failed.
    // hyper says the cause of its error (the I/O error under it) only as its source: the whole chain is said here.
    #[error("HTTP exchange with {target} failed: {}", crate::report::error_chain(.cause))]
    Http {
        /// Where.
        target: String,
        /// hyper's error.
        cause: hyper::Error,
    },
    /// The whole call took longer than its timeout.
    #[error("{target} did not answer within {timeout:?}")]
    Timeout {
        /// Where.
        target: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The response body was larger than allowed.
    #[error("response from {target} larger than {max} bytes")]
    TooLarge {
        /// Where.
        target: String,
        /// The cap.
        max: usize,
    },
    /// The CA file could not be used.
    #[error("CA file {path}: {cause}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: CaFileError,
    },
    /// rustls refused its own protocol defaults (a build without a usable crypto provider).
    #[error("TLS configuration: {0}")]
    TlsConfig(rustls::Error),
}

/// Why a `ca-file` cannot serve as the trust roots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaFileError {
    /// Not readable.
    #[error(transparent)]
    Read(std::io::Error),
    /// Not PEM certificates.
    #[error("not PEM certificates: {0}")]
    Pem(rustls_pki_types::pem::Error),
    /// No certificate in it.
    #[error("no certificates")]
    Empty,
    /// A certificate rustls cannot use as a root.
    #[error(transparent)]
    Root(rustls::Error),
}

/// A response with its body fully read.
#[derive(Debug)]
pub struct ClientResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Limits and trust roots for a [`HttpClient`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Deadline for the whole call: connect, send, receive.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_body: usize,
    /// A PEM CA bundle to trust for https instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(10), max_body: 1 << 20, ca_file: None }
    }
}

/// The client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    opts: ClientOptions,
    tls: Arc<rustls::ClientConfig>,
}

impl HttpClient {
    /// Builds a client; loads the trust roots once.
    pub fn new(opts: ClientOptions) -> Result<HttpClient, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        match &opts.ca_file {
            Some(path) => {
                let ca_err = |source: CaFileError| ClientError::CaFile { path: path.clone(), cause: source };
                let pem = std::fs::read(path).map_err(|e| ca_err(CaFileError::Read(e)))?;
                let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ca_err(CaFileError::Pem(e)))?;
                if certs.is_empty() {
                    return Err(ca_err(CaFileError::Empty));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| ca_err(CaFileError::Root(e)))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // A broken system root is skipped, as every TLS stack does.
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(ClientError::TlsConfig)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(HttpClient { opts, tls: Arc::new(tls) })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Sends one request and reads the whole response, within the timeout and the body cap.
    pub async fn send(
        &self,
        method: Method,
        url: &HttpUrl,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<ClientResponse, ClientError> {
        let timeout = self.opts.timeout;
        match tokio::time::timeout(timeout, self.exchange(method, url, headers, body)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { target: url.to_string(), timeout }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        url: &HttpUrl,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<ClientResponse, ClientError> {
        let target = url.to_string();
        let connect_err = |source| ClientError::Connect { target: target.clone(), cause: source };
        match &url.target {
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(connect_err)?;
                self.over(stream, method, url, headers, body).await
            }
            Target::Http { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect_err)?;
                let _ = stream.set_nodelay(true);
                self.over(stream, method, url, headers, body).await
            }
            Target::Https { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect_err)?;
                let _ = stream.set_nodelay(true);
                let name = ServerName::try_from(host.clone()).map_err(|_| ClientError::BadUrl {
                    url: target.clone(),
                    reason: "host is not a valid TLS server name".into(),
                })?;
                let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|source| ClientError::Tls { target: target.clone(), cause: source })?;
                self.over(tls, method, url, headers, body).await
            }
        }
    }

    async fn over<S>(
        &self,
        io: S,
        method: Method,
        url: &HttpUrl,
        headers: &[(http::HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<ClientResponse, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let target = url.to_string();
        let http_err = |source| ClientError::Http { target: target.clone(), cause: source };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(http_err)?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder().method(method).uri(url.path_and_query.as_str());
        if let Some(h) = req.headers_mut() {
            if let Ok(host) = HeaderValue::from_str(&url.authority) {
                h.insert(http::header::HOST, host);
            }
            for (name, value) in headers {
                h.insert(name.clone(), value.clone());
            }
        }
        let req = req.body(Full::new(body)).map_err(|_| ClientError::BadUrl {
            url: target.clone(),
            reason: "cannot build a request for this path".into(),
        })?;
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let (parts, body) = resp.into_parts();
        if let Some(len) =
            parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            if len > self.opts.max_body as u64 {
                driver.abort();
                return Err(ClientError::TooLarge { target, max: self.opts.max_body });
            }
        }
        let collected = Limited::new(body, self.opts.max_body).collect().await;
        driver.abort();
        match collected {
            Ok(c) => Ok(ClientResponse { status: parts.status, headers: parts.headers, body: c.to_bytes() }),
            Err(e) => match e.downcast::<hyper::Error>() {
                Ok(source) => Err(ClientError::Http { target, cause: *source }),
                Err(_) => Err(ClientError::TooLarge { target, max: self.opts.max_body }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let ok = [
            ("http://example.org/x?y=1", "example.org", 80, "/x?y=1", false),
            ("https://example.org:8443/t", "example.org", 8443, "/t", true),
            ("http://[::1]:8181/sign", "::1", 8181, "/sign", false),
            ("http://127.0.0.1", "127.0.0.1", 80, "/", false),
        ];
        for (url, host, port, pq, https) in ok {
            let u = HttpUrl::parse(url).unwrap();
            let want = if https {
                Target::Https { host: host.into(), port }
            } else {
                Target::Http { host: host.into(), port }
            };
            assert_eq!(u.target, want, "{url}");
            assert_eq!(u.path_and_query, pq, "{url}");
        }
        for bad in ["", "ftp://x/y", "file:///etc/passwd", "http://", "http://user@host/", "not a url", "//host/x"] {
            assert!(matches!(HttpUrl::parse(bad), Err(ClientError::BadUrl { .. })), "{bad:?}");
        }
    }
}
