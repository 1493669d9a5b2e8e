//! Fuzz target bodies for this crate's parsers (feature `fuzzing`): see `crypto::fuzzing`.

use crate::ConfigFile;
use crypto::fuzzing::{text, KEY};
use std::path::Path;

/// The three daemons' YAML configs (key files resolve against a directory that does not exist).
pub fn yaml_config(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let path = Path::new("/nonexistent-fuzz/c.conf");
    let _ = crate::verifier::VerifierConfig::parse(path, t);
    let _ = crate::signer_unix::SignerUnixConfig::parse(path, t);
    let _ = crate::signer_http::SignerHttpConfig::parse(path, t);
}

/// The verifier's query string (what SPIRE's agent sends).
pub fn query(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = crate::server::http::query_pairs(t);
}

/// A verifier (one keyset whose source is a missing file) and the runtime that serves it, made once.
struct HttpLab {
    runtime: tokio::runtime::Runtime,
    verifier: std::sync::Arc<crate::verifier::Verifier>,
    _dir: tempfile::TempDir,
}

fn http_lab() -> Option<&'static HttpLab> {
    static LAB: std::sync::OnceLock<Option<HttpLab>> = std::sync::OnceLock::new();
    LAB.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        std::fs::create_dir(dir.path().join("keys")).ok()?;
        std::fs::write(dir.path().join("keys/k.pem"), KEY).ok()?;
        let text = format!(
            "keydir: keys\nsocket: {0}/v.sock\nstate-dir: {0}/state\nkeyset:\n  main:\n    url: file://{0}/none\n    chain: [k.pem]\n",
            dir.path().display()
        );
        let cfg = crate::verifier::VerifierConfig::parse(&dir.path().join("v.conf"), &text).ok()?;
        let verifier = std::sync::Arc::new(crate::verifier::Verifier::new(&cfg).ok()?);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        Some(HttpLab { runtime, verifier, _dir: dir })
    })
    .as_ref()
}

/// A raw HTTP/1.1 request, head and body, through hyper's parser into the verifier's handler over an in-memory
/// stream: whatever arrives, the peer gets an HTTP response or a closed connection.
pub fn http_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(lab) = http_lab() else { return };
    let out = lab.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let verifier = lab.verifier.clone();
        let service = hyper::service::service_fn(move |req| {
            let verifier = verifier.clone();
            async move { Ok::<_, std::convert::Infallible>(verifier.handle(req).await) }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let served = tokio::spawn(conn);
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), client.read_to_end(&mut out)).await;
        drop(client);
        let _ = served.await;
        read.is_ok().then_some(out)
    });
    assert!(out.is_some(), "no answer and no close within 10 s");
    let out = out.unwrap_or_default();
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&out)
    );
}
