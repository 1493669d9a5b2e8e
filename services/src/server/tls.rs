//! TCP listeners (signer-http's, the enrollment CA's): binding Go's `:PORT` forms, and the HTTPS identity, a
//! certificate chain and its key read once at start and served with rustls' safe defaults (TLS 1.2 and 1.3, ring).

use std::path::PathBuf;
use std::sync::Arc;

/// TLS files for a listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// Why the TLS identity is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file is unusable.
    #[error("TLS: {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and key do not make a TLS server configuration.
    #[error("TLS")]
    Config(#[from] rustls::Error),
}

/// The acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::File { path: files.cert.clone(), source })?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|source| TlsError::File { path: files.key.clone(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// No listener could be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {cause}")]
pub struct ListenError {
    /// The address.
    pub addr: String,
    /// The error.
    pub cause: std::io::Error,
}

/// Binds every listen address that can be bound (`:PORT` means IPv6 and IPv4; one family missing is fine).
pub async fn bind_all(addrs: &[std::net::SocketAddr]) -> Result<Vec<tokio::net::TcpListener>, ListenError> {
    let mut listeners = Vec::new();
    let mut last_err = None;
    for addr in addrs {
        let socket = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6() } else { tokio::net::TcpSocket::new_v4() };
        let bound = socket.and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(*addr)?;
            s.listen(1024)
        });
        match bound {
            Ok(l) => listeners.push(l),
            // `[::]:P` already covers IPv4 on a dual-stack host, so the `0.0.0.0:P` twin may be busy: fine.
            Err(e) => last_err = Some((addr.to_string(), e)),
        }
    }
    if listeners.is_empty() {
        let (addr, source) = last_err.unwrap_or_else(|| ("(none)".into(), std::io::Error::other("no address")));
        return Err(ListenError { addr, cause: source });
    }
    Ok(listeners)
}

/// One task per listener, handing each accepted connection to the one loop that admits them.
pub fn spawn_acceptors(
    listeners: Vec<tokio::net::TcpListener>,
) -> (Vec<tokio::task::JoinHandle<()>>, tokio::sync::mpsc::Receiver<(tokio::net::TcpStream, std::net::SocketAddr)>) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptors = listeners
        .into_iter()
        .map(|l| {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok(conn) => {
                            if tx.send(conn).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect();
    (acceptors, rx)
}
