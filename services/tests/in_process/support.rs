//! What the in-process tests share: daemons started on this test's runtime, software keys, tokens, requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{ClientOptions, HttpClient, HttpUrl};
use common::clock::Clock;
use http::Method;
use services::ConfigFile;
use tokio::sync::oneshot;
use tpm::mock::SoftwareKey;
use tpm::KeySigner;

pub(crate) const CA: &str = include_str!("../../../crypto/tests/data/ca-ec.pem");

/// A daemon running on this test's runtime until the guard is dropped.
pub(crate) struct Running {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn spawn<F, E>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let (stop, stopped) = oneshot::channel();
    let fut = run(stopped);
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            panic!("daemon failed: {e}");
        }
    });
    Running { stop: Some(stop) }
}

/// Polls `probe` every 20 ms until it answers `Ok`, and returns that; after 10 s, panics with `what` and the
/// last `Err` it saw (what the probe found instead). The one way these tests wait for an event.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(Instant::now() < deadline, "waited 10 s for {what}: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Ok(())` when `condition` holds, else `Err(seen)`: for [`eventually`].
pub(crate) fn holds(condition: bool, seen: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(seen())
    }
}

pub(crate) async fn wait_for_socket(path: &Path) {
    let what = format!("{} to accept", path.display());
    eventually(&what, || async { holds(tokio::net::UnixStream::connect(path).await.is_ok(), || "refused".into()) })
        .await;
}

pub(crate) fn pem(key: &SoftwareKey) -> String {
    crypto::pem::encode("PUBLIC KEY", key.public_key().spki_der())
}

/// Starts signer-unix on `key` in `dir` (socket `dir/NAME.sock`, publish dir `dir/www-NAME`).
pub(crate) async fn signer_unix(dir: &Path, name: &str, key: Arc<SoftwareKey>, extra: &str) -> (Running, PathBuf) {
    signer_unix_by(dir, name, key, extra, Clock::system()).await
}

/// [`signer_unix`] signing and judging times by `clock`.
pub(crate) async fn signer_unix_by(
    dir: &Path,
    name: &str,
    key: Arc<SoftwareKey>,
    extra: &str,
    clock: Clock,
) -> (Running, PathBuf) {
    let socket = dir.join(format!("{name}.sock"));
    let www = dir.join(format!("www-{name}"));
    std::fs::create_dir_all(&www).unwrap();
    // Bundles are signed only for `bundle-uids` (root by default): this test's uid, unless the test says.
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir).unwrap());
    let bundle_uids = if extra.contains("bundle-uids") { String::new() } else { format!("bundle-uids: [{uid}]\n") };
    let text = format!(
        "socket: {}\ndir: {}\nduration: 10m\nissuer: {name}\n{bundle_uids}{extra}",
        socket.display(),
        www.display()
    );
    let cfg = services::signer_unix::SignerUnixConfig::parse(&dir.join(format!("{name}.conf")), &text).unwrap();
    let running = spawn(move |stop| services::signer_unix::run_with(cfg, key, clock, async move { drop(stop.await) }));
    wait_for_socket(&socket).await;
    (running, socket)
}

/// Starts the verifier in `dir` (keydir `dir/keys`, socket `dir/v.sock`) with one keyset `name` reading
/// `dir/token`, whose policy lines are `keyset` (YAML, indented four spaces); returns it, the socket and a client.
pub(crate) async fn verifier(dir: &Path, name: &str, keyset: &str) -> (Running, PathBuf, HttpClient) {
    verifier_by(dir, name, keyset, Clock::system()).await
}

/// [`verifier`] judging tokens by `clock`.
pub(crate) async fn verifier_by(dir: &Path, name: &str, keyset: &str, clock: Clock) -> (Running, PathBuf, HttpClient) {
    let socket = dir.join("v.sock");
    let text = format!(
        "keydir: keys\nsocket: {}\nstate-dir: {}\nrefresh: 100ms\nkeyset:\n  {name}:\n    url: file://{}\n{keyset}",
        socket.display(),
        dir.join("state").display(),
        dir.join("token").display()
    );
    let cfg = services::verifier::VerifierConfig::parse(&dir.join("v.conf"), &text).unwrap();
    let options = services::verifier::RunOptions { clock, ..Default::default() };
    let running = spawn(move |stop| services::verifier::run_with(cfg, options, async move { drop(stop.await) }));
    wait_for_socket(&socket).await;
    let client =
        HttpClient::new(ClientOptions { timeout: Duration::from_secs(5), max_body: 1 << 20, ca_file: None }).unwrap();
    (running, socket, client)
}

pub(crate) fn policy(keys: &[&SoftwareKey]) -> crypto::policy::Policy {
    let chain = keys
        .iter()
        .enumerate()
        .map(|(i, k)| crypto::keys::VerifyingKey::from_spki_der(&format!("k{i}"), k.public_key().spki_der()).unwrap())
        .collect();
    crypto::policy::Policy::new(chain, None, crypto::Limits::default()).unwrap()
}

/// signer-http in-process on 127.0.0.1, co-signing with `local_socket` the tokens of `primary`; waits until it
/// accepts connections.
pub(crate) async fn signer_http(dir: &Path, local_socket: &Path, primary: &SoftwareKey) -> (Running, u16) {
    signer_http_with(dir, local_socket, primary, "").await
}

/// [`signer_http`] with `extra` config lines.
pub(crate) async fn signer_http_with(
    dir: &Path,
    local_socket: &Path,
    primary: &SoftwareKey,
    extra: &str,
) -> (Running, u16) {
    signer_http_by(dir, local_socket, primary, extra, Clock::system()).await
}

/// [`signer_http_with`] judging tokens by `clock`.
pub(crate) async fn signer_http_by(
    dir: &Path,
    local_socket: &Path,
    primary: &SoftwareKey,
    extra: &str,
    clock: Clock,
) -> (Running, u16) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("primary.pem"), pem(primary)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "socket: {}\nkeydir: keys\nprimary: primary.pem\nlisten-addr: 127.0.0.1:{port}\nallowed-addrs: [127.0.0.1]\n{extra}",
        local_socket.display()
    );
    let cfg = services::signer_http::SignerHttpConfig::parse(&dir.join("signer-http.conf"), &text).unwrap();
    let running = spawn(move |stop| services::signer_http::run_with(cfg, clock, async move { drop(stop.await) }));
    eventually("signer-http to listen", || async {
        holds(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(), || "refused".into())
    })
    .await;
    (running, port)
}

/// What a raw HTTP/1.1 GET on `stream` gets back: the response bytes, or nothing when the server closed it.
pub(crate) async fn raw_get(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0; 256];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        Ok(Err(_)) => Vec::new(),
        Err(_) => panic!("neither answered nor closed within 10 s"),
    }
}

/// A bundle token over `CA` by `key`, issued at `iat`.
/// The agent's request for keyset `main`.
pub(crate) async fn get_bundle(client: HttpClient, socket: PathBuf) -> common::client::ClientResponse {
    let url = HttpUrl::unix(&socket, "/trustbundle?instance=main");
    client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap()
}

pub(crate) fn bundle_token(key: &SoftwareKey, iat: u64) -> String {
    token_over(key, crypto::token::Payload::Bundle(CA.into()), iat)
}

pub(crate) fn token_over(key: &SoftwareKey, payload: crypto::token::Payload, iat: u64) -> String {
    let claims =
        crypto::token::Claims { payload, iss: String::new(), iat, nbf: iat, exp: iat + 3600, trust_domain: None };
    let b = crypto::token::TokenBuilder::new(crypto::Alg::Es256, &claims);
    let sig = key.sign_digest(&b.digest()).unwrap();
    b.finish(&sig).unwrap()
}

/// One series of a Prometheus text scrape of `addr`, if present.
pub(crate) async fn scrape(client: &HttpClient, addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    let url = HttpUrl::parse(&format!("http://{addr}/metrics")).unwrap();
    let body = client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap().body;
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A test directory whose `keys/` holds each key's public half as PEM, under its name.
pub(crate) fn dir_with_keys(keys: &[(&str, &SoftwareKey)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    for (name, key) in keys {
        std::fs::write(dir.path().join("keys").join(name), pem(key)).unwrap();
    }
    dir
}
