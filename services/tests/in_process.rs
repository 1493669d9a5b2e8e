//! The three daemons run in-process on software keys (the `mock` feature, a dev-dependency only): signer-unix
//! signs and publishes, signer-http co-signs through it, the verifier serves what it verified. Real sockets, no
//! TPM, no nginx, no other process: the unit lane's view of the handlers. The same paths with swtpm, nginx and
//! the real binaries are in `testbed/tests/e2e_*`.

// signer-unix is behind the `tpm` feature.
#![cfg(feature = "tpm")]
// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use services::ConfigFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{ClientOptions, HttpClient, HttpUrl};
use common::clock::Clock;
use common::signer_client::{SignerClient, SignerClientError};
use http::{Method, StatusCode};
use tokio::sync::oneshot;
use tpm::mock::SoftwareKey;
use tpm::{KeySigner, KeyType};

const CA: &str = include_str!("../../crypto/tests/data/ca-ec.pem");

/// A daemon running on this test's runtime until the guard is dropped.
struct Running {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn spawn<F, E>(run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
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

async fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(path).await.is_err() {
        assert!(Instant::now() < deadline, "{} never accepted", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pem(key: &SoftwareKey) -> String {
    crypto::pem::encode("PUBLIC KEY", key.public_key().spki_der())
}

/// Starts signer-unix on `key` in `dir` (socket `dir/NAME.sock`, publish dir `dir/www-NAME`).
async fn signer_unix(dir: &Path, name: &str, key: Arc<SoftwareKey>, extra: &str) -> (Running, PathBuf) {
    let socket = dir.join(format!("{name}.sock"));
    let www = dir.join(format!("www-{name}"));
    std::fs::create_dir_all(&www).unwrap();
    let text = format!("socket: {}\ndir: {}\nduration: 10m\nissuer: {name}\n{extra}", socket.display(), www.display());
    let cfg = services::signer_unix::SignerUnixConfig::parse(&dir.join(format!("{name}.conf")), &text).unwrap();
    let running = spawn(move |stop| services::signer_unix::run(cfg, key, async move { drop(stop.await) }));
    wait_for_socket(&socket).await;
    (running, socket)
}

/// Starts the verifier in `dir` (keydir `dir/keys`, socket `dir/v.sock`) with one keyset `name` reading
/// `dir/token`, whose policy lines are `keyset` (YAML, indented four spaces); returns it, the socket and a client.
async fn verifier(dir: &Path, name: &str, keyset: &str) -> (Running, PathBuf, HttpClient) {
    verifier_by(dir, name, keyset, Clock::system()).await
}

/// [`verifier`] judging tokens by `clock`.
async fn verifier_by(dir: &Path, name: &str, keyset: &str, clock: Clock) -> (Running, PathBuf, HttpClient) {
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

fn policy(keys: &[&SoftwareKey]) -> crypto::policy::Policy {
    let chain = keys
        .iter()
        .enumerate()
        .map(|(i, k)| crypto::keys::VerifyingKey::from_spki_der(&format!("k{i}"), k.public_key().spki_der()).unwrap())
        .collect();
    crypto::policy::Policy::new(chain, None, crypto::Limits::default()).unwrap()
}

#[tokio::test]
async fn signer_unix_signs_a_bundle_publishes_only_what_verifies_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "a", key.clone(), "").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();

    let token = client.sign_bundle(CA.as_bytes()).await.unwrap();
    let verified = policy(&[&key]).verify(&token, crypto::unix_now()).unwrap();
    assert_eq!(verified.bundle.to_pem(), CA, "the token carries the bundle it was given");
    client.publish(&token).await.unwrap();
    let published = dir.path().join("www-a/spiffetrustbundle.token");
    assert_eq!(std::fs::read_to_string(&published).unwrap(), token);

    // Negative rows: not a bundle; a token by another key; garbage to publish. Nothing changes on disk.
    let other = SoftwareKey::generate(KeyType::EccP256);
    let (_other_signer, other_socket) = signer_unix(dir.path(), "b", Arc::new(other), "").await;
    let foreign = SignerClient::new(&other_socket, Duration::from_secs(5)).unwrap().sign_bundle(CA.as_bytes()).await;
    let foreign = foreign.unwrap();
    for (what, result, want) in [
        ("not a bundle", client.sign_bundle(b"not a bundle").await.map(drop), StatusCode::BAD_REQUEST),
        ("publish a token by another key", client.publish(&foreign).await, StatusCode::UNPROCESSABLE_ENTITY),
        ("publish garbage", client.publish("a.b.c").await, StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        match result {
            Err(SignerClientError::Status { status, reason, .. }) => {
                assert_eq!(status, want, "{what}: {reason}");
                assert!(!reason.is_empty(), "{what}: a reason");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_eq!(std::fs::read_to_string(&published).unwrap(), token, "the last good token stays published");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("www-a")).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left behind");
}

#[tokio::test]
async fn signer_unix_answers_503_when_its_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (_signer, socket) = signer_unix(dir.path(), "f", Arc::new(SoftwareKey::failing(KeyType::EccP256)), "").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    match client.sign_bundle(CA.as_bytes()).await {
        Err(SignerClientError::Status { status, .. }) => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE),
        other => panic!("{other:?}"),
    }
}

/// signer-http in-process on 127.0.0.1, co-signing with `local_socket` the tokens of `primary`; waits until it
/// accepts connections.
async fn signer_http(dir: &Path, local_socket: &Path, primary: &SoftwareKey) -> (Running, u16) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("primary.pem"), pem(primary)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "socket: {}\nkeydir: keys\nprimary: primary.pem\nlisten-addr: 127.0.0.1:{port}\nallowed-addrs: [127.0.0.1]\n",
        local_socket.display()
    );
    let cfg = services::signer_http::SignerHttpConfig::parse(&dir.join("signer-http.conf"), &text).unwrap();
    let running = spawn(move |stop| services::signer_http::run(cfg, async move { drop(stop.await) }));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "signer-http never listened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (running, port)
}

/// What a raw HTTP/1.1 GET on `stream` gets back: the response bytes, or nothing when the server closed it.
async fn raw_get(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = vec![0; 256];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(n)) => buf[..n].to_vec(),
        Ok(Err(_)) => Vec::new(),
        Err(_) => panic!("neither answered nor closed within 10 s"),
    }
}

/// One allowed peer address holds at most 32 connections (ServerLimits::per_peer): the next is closed
/// unanswered, and once the held ones go, that address is served again. (The old signer-http had no cap: an
/// allowed but faulty peer could take every descriptor.)
#[tokio::test]
async fn signer_http_caps_the_connections_of_one_peer_address() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_local, local_socket) = signer_unix(dir.path(), "local", key.clone(), "").await;
    let (_http, port) = signer_http(dir.path(), &local_socket, &key).await;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Each held connection is served: it answers a request (and stays open, keep-alive).
    for stream in held.iter_mut().take(2) {
        assert!(raw_get(stream).await.starts_with(b"HTTP/1.1 "), "a held connection was not served");
    }
    let mut extra = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let answer = raw_get(&mut extra).await;
    assert!(answer.is_empty(), "the 33rd connection was served: {}", String::from_utf8_lossy(&answer));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if raw_get(&mut again).await.starts_with(b"HTTP/1.1 ") {
            break;
        }
        assert!(Instant::now() < deadline, "the address was not served again after its connections closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn signer_http_cosigns_tokens_of_its_primary_only() {
    let dir = tempfile::tempdir().unwrap();
    let (server_key, cosigner_key) =
        (Arc::new(SoftwareKey::generate(KeyType::EccP256)), Arc::new(SoftwareKey::generate(KeyType::EccP256)));
    let (_server, server_socket) = signer_unix(dir.path(), "server", server_key.clone(), "").await;
    let (_local, local_socket) = signer_unix(dir.path(), "local", cosigner_key.clone(), "").await;
    let (_http, port) = signer_http(dir.path(), &local_socket, &server_key).await;

    let server = SignerClient::new(&server_socket, Duration::from_secs(5)).unwrap();
    let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/sign")).unwrap();
    let token = server.sign_chain(CA.as_bytes(), std::slice::from_ref(&url)).await.unwrap();
    let verified = policy(&[&server_key, &cosigner_key]).verify(&token, crypto::unix_now()).unwrap();
    assert_eq!(verified.layers.len(), 2);

    // A token its primary did not sign: refused with a reason, no co-signature.
    let stranger = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_stranger, stranger_socket) = signer_unix(dir.path(), "stranger", stranger, "").await;
    let theirs = SignerClient::new(&stranger_socket, Duration::from_secs(5)).unwrap();
    let foreign = theirs.sign_bundle(CA.as_bytes()).await.unwrap();
    match server.cosign(&url, &foreign).await {
        Err(SignerClientError::Status { status, reason, .. }) => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(reason.contains("token refused"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Its primary's token, but expired (past the leeway) or not yet valid: minted with those times instead of
    // waiting for a real token to expire.
    let now = crypto::unix_now();
    for (iat, says) in [(now - 3600 - 60, &["expired at"][..]), (now + 600, &["in the future", "not valid before"])] {
        match server.cosign(&url, &bundle_token(&server_key, iat)).await {
            Err(SignerClientError::Status { status, reason, .. }) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{says:?}: {reason}");
                assert!(says.iter().any(|s| reason.contains(s)), "{says:?}: {reason}");
            }
            other => panic!("{says:?}: {other:?}"),
        }
    }
    // The same check passes a token minted now: the rows above fail on time alone.
    server.cosign(&url, &bundle_token(&server_key, now)).await.unwrap();
}

#[tokio::test]
async fn verifier_serves_only_a_bundle_it_verified() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "s", key.clone(), "").await;
    let token = SignerClient::new(&socket, Duration::from_secs(5)).unwrap().sign_bundle(CA.as_bytes()).await.unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("primary.pem"), pem(&key)).unwrap();
    let token_file = dir.path().join("token");
    // First a token by another key: nothing may be served.
    let stranger = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_stranger, stranger_socket) = signer_unix(dir.path(), "x", stranger, "").await;
    let forged =
        SignerClient::new(&stranger_socket, Duration::from_secs(5)).unwrap().sign_bundle(CA.as_bytes()).await.unwrap();
    std::fs::write(&token_file, &forged).unwrap();
    let (_verifier, verifier_socket, client) = verifier(dir.path(), "main", "    chain: [primary.pem]\n").await;
    let get = |path: &'static str| {
        let (client, url) = (client.clone(), HttpUrl::unix(&verifier_socket, path));
        async move { client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap() }
    };
    let refused = get("/trustbundle?instance=main").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "a forged token was served");
    // The genuine token: served, and the state the verifier persisted is the genuine one.
    std::fs::write(&token_file, &token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let r = get("/trustbundle?instance=main").await;
        if r.status == StatusCode::OK {
            break r;
        }
        assert!(Instant::now() < deadline, "never served the genuine bundle: {:?}", r.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(served.body, CA.as_bytes());
    let spiffe = get("/trustbundle?instance=main&format=spiffe").await;
    assert_eq!(spiffe.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&spiffe.body).contains("\"keys\""));
    for (path, want) in [
        ("/nope", StatusCode::NOT_FOUND),
        ("/trustbundle", StatusCode::BAD_REQUEST),
        ("/trustbundle?instance=other", StatusCode::NOT_FOUND),
        ("/trustbundle?instance=main&format=jwks", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(get(path).await.status, want, "{path}");
    }
}

/// A keyset with `threshold: 2` over three keys: one layer is not served, two layers of different keys are
/// (the same key twice and the other rules are in `crypto/tests/policy.rs`).
#[tokio::test]
async fn verifier_with_a_threshold_keyset_serves_two_of_three_and_refuses_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<Arc<SoftwareKey>> = (0..3).map(|_| Arc::new(SoftwareKey::generate(KeyType::EccP256))).collect();
    let mut sockets = Vec::new();
    let mut running = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (r, s) = signer_unix(dir.path(), &format!("s{i}"), k.clone(), "").await;
        running.push(r);
        sockets.push(SignerClient::new(&s, Duration::from_secs(5)).unwrap());
    }
    let keydir = dir.path().join("keys");
    std::fs::create_dir_all(&keydir).unwrap();
    for (i, k) in keys.iter().enumerate() {
        std::fs::write(keydir.join(format!("{i}.pem")), pem(k)).unwrap();
    }
    let one = sockets[0].sign_bundle(CA.as_bytes()).await.unwrap();
    let c_then_a = sockets[0].sign_token(&sockets[2].sign_bundle(CA.as_bytes()).await.unwrap()).await.unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &one).unwrap();
    let (_verifier, vsock, client) =
        verifier(dir.path(), "ha", "    threshold: 2\n    keys: [0.pem, 1.pem, 2.pem]\n").await;
    let url = HttpUrl::unix(&vsock, "/trustbundle?instance=ha");
    let status = || async { client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap().status };
    assert_eq!(status().await, StatusCode::SERVICE_UNAVAILABLE, "one signature of a 2-of-3 keyset was served");
    std::fs::write(&token_file, &c_then_a).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status().await != StatusCode::OK {
        assert!(Instant::now() < deadline, "2 of 3 (key 2 inside, key 0 outside) never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A keyset bound to `trust-domain: example.org`: a bundle signed for it is served; signed for another, or
/// bound to none, it is not; an agent asking for another trust domain gets 403.
#[tokio::test]
async fn verifier_with_a_trust_domain_serves_only_bundles_signed_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "s", key.clone(), "").await;
    let signer = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    let for_us = signer.sign_bundle_for(CA.as_bytes(), Some("example.org")).await.unwrap();
    // Another trust domain's CA, signed for it: the node bound to example.org refuses it.
    let their_ca = include_str!("../../crypto/tests/data/ca-other-td.pem");
    let for_them = signer.sign_bundle_for(their_ca.as_bytes(), Some("other.org")).await.unwrap();
    let unbound = signer.sign_bundle(CA.as_bytes()).await.unwrap();
    // signer-unix refuses what is not a trust domain name, before signing anything; and a bundle whose CA
    // names another trust domain than the one it is to be bound to.
    match signer.sign_bundle_for(CA.as_bytes(), Some("Not A Domain")).await {
        Err(SignerClientError::BadTrustDomain(_)) => {}
        other => panic!("{other:?}"),
    }
    match signer.sign_bundle_for(CA.as_bytes(), Some("elsewhere.org")).await {
        Err(SignerClientError::Status { status, reason, .. }) => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(reason.contains("trust domain example.org, not elsewhere.org"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let keydir = dir.path().join("keys");
    std::fs::create_dir_all(&keydir).unwrap();
    std::fs::write(keydir.join("k.pem"), pem(&key)).unwrap();
    let verify = |token: &str| {
        let text = "keydir: keys\nkeyset:\n  main:\n    url: file:///unused\n    chain: [k.pem]\n    trust-domain: example.org\n";
        let cfg = services::verifier::VerifierConfig::parse(&dir.path().join("v.conf"), text).unwrap();
        cfg.keysets["main"].verify(token, crypto::unix_now()).map(|_| ()).map_err(|e| e.to_string())
    };
    assert_eq!(verify(&for_us), Ok(()));
    assert!(verify(&for_them).unwrap_err().contains("signed for trust domain other.org"));
    assert!(verify(&unbound).unwrap_err().contains("bound to no trust domain"));

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &for_us).unwrap();
    let (_verifier, vsock, client) =
        verifier(dir.path(), "main", "    chain: [k.pem]\n    trust-domain: example.org\n").await;
    for (query, want) in [
        ("instance=main", StatusCode::OK),
        ("instance=main&spiffe-trust-domain=example.org", StatusCode::OK),
        ("instance=main&spiffe-trust-domain=other.org", StatusCode::FORBIDDEN),
    ] {
        let url = HttpUrl::unix(&vsock, &format!("/trustbundle?{query}"));
        let r = client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap();
        assert_eq!(r.status, want, "{query}: {}", String::from_utf8_lossy(&r.body));
    }
}

#[tokio::test]
async fn signer_unix_signs_keyset_documents_and_updates_and_refuses_what_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "a", key.clone(), "").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    let now = crypto::unix_now();
    let new_policy = policy(&[&key]);
    let doc = crypto::keyset::Document::new("main", 1, now + 30 * 86400, &new_policy).unwrap();

    // The document becomes the innermost layer of an update; its layers live until the document expires.
    let update = client.sign_keyset(doc.text()).await.unwrap();
    let inspected = crypto::token::inspect(&update).unwrap();
    assert_eq!(
        (inspected.kind, inspected.payload, inspected.exp),
        (crypto::token::Kind::KeysetUpdate, "spiffeks", doc.expires())
    );
    // Wrapped again, it stays an update; a node holding `policy` accepts it, and no bundle verifier does.
    let wrapped = client.sign_token(&update).await.unwrap();
    assert_eq!(crypto::token::inspect(&wrapped).unwrap().kind, crypto::token::Kind::KeysetUpdate);
    let refused = policy(&[&key]).verify(&update, now).unwrap_err();
    assert!(
        matches!(refused.kind, crypto::VerifyErrorKind::WrongKind { .. }),
        "an update is never a bundle: {refused}"
    );
    // GET /policy answers the publish policy (its own key when none is configured).
    let current = crypto::keyset::policy_from_json(&client.policy().await.unwrap(), crypto::Limits::default()).unwrap();
    assert!(current.chain()[0].same_key(&new_policy.chain()[0]));
    crypto::keyset::verify_update(&current, "main", 0, &update, now).unwrap();

    let expired = crypto::keyset::Document::new("main", 1, now - 1, &new_policy).unwrap();
    let post = |ct: &'static str, path: &'static str, body: String| {
        let http = HttpClient::new(ClientOptions::default()).unwrap();
        let socket = socket.clone();
        async move {
            let url = HttpUrl::unix(&socket, path);
            let headers = [(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct))];
            http.send(Method::POST, &url, &headers, Bytes::from(body)).await.unwrap()
        }
    };
    const KS: &str = "application/spiffe-keyset+json";
    for (what, resp, says) in [
        ("an expired document", post(KS, "/sign", expired.text().to_owned()).await, "expired"),
        ("not a document", post(KS, "/sign", "{\"keyset\":\"main\"}".into()).await, "not a keyset document"),
        ("a bundle sent as a document", post(KS, "/sign", CA.into()).await, "not a keyset document"),
        (
            "a trust domain on a document",
            post(KS, "/sign?trust-domain=example.org", doc.text().into()).await,
            "trust-domain",
        ),
        (
            "an update to publish as a bundle",
            post("application/jwt", "/publish", update.clone()).await,
            "a keyset update",
        ),
    ] {
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        let want = if what.contains("publish") { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
        assert_eq!(resp.status, want, "{what}: {body}");
        assert!(body.contains(says), "{what}: {body}");
    }
    assert!(!dir.path().join("www-a/spiffetrustbundle.token").exists(), "nothing was published");
}

/// A bundle token over `CA` by `key`, issued at `iat`.
/// The agent's request for keyset `main`.
async fn get_bundle(client: HttpClient, socket: PathBuf) -> common::client::ClientResponse {
    let url = HttpUrl::unix(&socket, "/trustbundle?instance=main");
    client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap()
}

fn bundle_token(key: &SoftwareKey, iat: u64) -> String {
    token_over(key, crypto::token::Payload::Bundle(CA.into()), iat)
}

fn token_over(key: &SoftwareKey, payload: crypto::token::Payload, iat: u64) -> String {
    let claims =
        crypto::token::Claims { payload, iss: String::new(), iat, nbf: iat, exp: iat + 3600, trust_domain: None };
    let b = crypto::token::TokenBuilder::new(crypto::Alg::Es256, &claims);
    let sig = key.sign_digest(&b.digest()).unwrap();
    b.finish(&sig).unwrap()
}

/// The verifier judges a token's times by its clock: it serves a bundle until the token's `exp` and not a second
/// longer, and a token signed for later (`iat`, `nbf`) only from then on. The clock is a manual one moved forward,
/// instead of a test waiting out a token's lifetime.
#[tokio::test]
async fn the_verifier_serves_a_token_from_its_iat_until_its_exp_by_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let key = SoftwareKey::generate(KeyType::EccP256);
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/primary.pem"), pem(&key)).unwrap();
    let start = crypto::unix_now();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, bundle_token(&key, start)).unwrap();
    let clock = Clock::manual(start);
    let (_v, socket, client) = verifier_by(dir.path(), "main", "    chain: [primary.pem]\n", clock.clone()).await;
    let status = || get_bundle(client.clone(), socket.clone());
    assert_eq!(status().await.status, StatusCode::OK);
    clock.advance(3599);
    assert_eq!(status().await.status, StatusCode::OK, "served one second before exp");
    clock.advance(2);
    let expired = status().await;
    assert_eq!(expired.status, StatusCode::SERVICE_UNAVAILABLE, "served after exp");
    // A token signed for an hour from now is refused until the clock gets there.
    std::fs::write(&token_file, bundle_token(&key, start + 7200)).unwrap();
    assert_eq!(status().await.status, StatusCode::SERVICE_UNAVAILABLE, "served before its iat");
    clock.advance(3600);
    assert_eq!(status().await.status, StatusCode::OK, "not served once its iat came");
}

/// One series of a Prometheus text scrape of `addr`, if present.
async fn scrape(client: &HttpClient, addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    let url = HttpUrl::parse(&format!("http://{addr}/metrics")).unwrap();
    let body = client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap().body;
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The verifier's metrics say why it refused each token (`rejections_total` by reason) and when the offline backup
/// key stands in (`backup_key_in_use`), so the shipped alerts can fire on them: garbage, a stranger's signature,
/// the backup standing in, the primary again, then the primary's token expired (by a manual clock).
#[tokio::test]
async fn the_verifier_counts_each_rejection_by_reason_and_shows_the_backup_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (a, c, x) = (
        SoftwareKey::generate(KeyType::EccP256),
        SoftwareKey::generate(KeyType::EccP256),
        SoftwareKey::generate(KeyType::EccP256),
    );
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/a.pem"), pem(&a)).unwrap();
    std::fs::write(dir.path().join("keys/c.pem"), pem(&c)).unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let start = crypto::unix_now();
    let clock = Clock::manual(start);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a.b.c").unwrap();
    let keyset = format!("    chain: [a.pem]\n    backup: c.pem\nmetrics-addr: \"{metrics}\"\n");
    let (_v, socket, client) = verifier_by(dir.path(), "main", &keyset, clock.clone()).await;
    let series = |name: &str, labels: &str| format!("spire_attestor_tpm_verifier_{name}{{keyset=\"main\"{labels}}}");
    let until = |what: &'static str, name: String, want: fn(f64) -> bool| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let got = scrape(&client, metrics, &name).await;
                if got.is_some_and(want) {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}: {name} = {got:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let rejected = |reason: &str| series("rejections_total", &format!(",reason=\"{reason}\""));
    let backup = series("backup_key_in_use", "");
    assert_eq!(get_bundle(client.clone(), socket.clone()).await.status, StatusCode::SERVICE_UNAVAILABLE);
    until("garbage", rejected("malformed"), |v| v >= 1.0).await;
    std::fs::write(&token_file, bundle_token(&x, start)).unwrap();
    until("a stranger's signature", rejected("signature"), |v| v >= 1.0).await;
    std::fs::write(&token_file, bundle_token(&c, start)).unwrap();
    until("the backup standing in", backup.clone(), |v| v == 1.0).await;
    assert_eq!(get_bundle(client.clone(), socket.clone()).await.status, StatusCode::OK);
    std::fs::write(&token_file, bundle_token(&a, start + 1)).unwrap();
    clock.advance(1);
    until("the primary again", backup, |v| v == 0.0).await;
    assert_eq!(scrape(&client, metrics, &rejected("expired")).await.unwrap_or(0.0), 0.0);
    // Past exp and the 5 s of clock skew tolerated on it.
    clock.advance(3610);
    assert_eq!(get_bundle(client.clone(), socket.clone()).await.status, StatusCode::SERVICE_UNAVAILABLE);
    until("the primary's token expired", rejected("expired"), |v| v >= 1.0).await;
}

/// After an update retires the key that signed the last bundle, a restart must keep that bundle's signing time
/// as the rollback floor: the old code threw the stored state away (its token no longer verifies), and then
/// took an older token of a key still trusted.
#[tokio::test]
async fn the_rollback_floor_survives_a_restart_after_the_key_that_set_it_was_retired() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (SoftwareKey::generate(KeyType::EccP256), SoftwareKey::generate(KeyType::EccP256));
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/a.pem"), pem(&a)).unwrap();
    let now = crypto::unix_now();
    let keys_file = dir.path().join("keys.tokens");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let keyset =
        format!("    chain: [a.pem]\n    keys-url: file://{}\nmetrics-addr: \"{metrics}\"\n", keys_file.display());
    let wait = |what: &'static str, client: HttpClient, socket: PathBuf, want: StatusCode| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = get_bundle(client.clone(), socket.clone()).await.status;
            if status == want {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: still {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // a's bundle is served; then the update to chain [b] arrives and a's bundle is no longer served.
    std::fs::write(dir.path().join("token"), bundle_token(&a, now - 10)).unwrap();
    {
        let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
        wait("a's bundle", client.clone(), socket.clone(), StatusCode::OK).await;
        let vb = crypto::keys::VerifyingKey::from_spki_der("b.pem", b.public_key().spki_der()).unwrap();
        let next = crypto::policy::Policy::new(vec![vb], None, crypto::Limits::default()).unwrap();
        let doc = crypto::keyset::Document::new("main", 1, now + 86400, &next).unwrap();
        let by_a = token_over(&a, crypto::token::Payload::Keyset(doc.text().into()), now);
        std::fs::write(&keys_file, token_over(&b, crypto::token::Payload::Token(by_a), now)).unwrap();
        wait("a retired", client, socket, StatusCode::SERVICE_UNAVAILABLE).await;
    }
    // The stopped verifier lets go of its metrics port (the event a restart needs), then it restarts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(metrics).is_err() {
        assert!(Instant::now() < deadline, "the stopped verifier kept its metrics port");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Restarted: b's token older than a's last one is a rollback; b's newer one is served.
    std::fs::write(dir.path().join("token"), bundle_token(&b, now - 100)).unwrap();
    let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
    let rollbacks = || {
        let client = client.clone();
        async move {
            let url = HttpUrl::parse(&format!("http://{metrics}/metrics")).unwrap();
            let text =
                String::from_utf8(client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap().body.to_vec())
                    .unwrap();
            text.lines()
                .find_map(|l| {
                    l.strip_prefix("spire_attestor_tpm_verifier_rejections_total{keyset=\"main\",reason=\"rollback\"} ")
                })
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while rollbacks().await == 0 {
        assert!(Instant::now() < deadline, "b's older token was never refused as a rollback");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get_bundle(client.clone(), socket.clone()).await.status, StatusCode::SERVICE_UNAVAILABLE);
    std::fs::write(dir.path().join("token"), bundle_token(&b, now)).unwrap();
    wait("b's newer bundle", client, socket, StatusCode::OK).await;
}

/// `keys-mirrors` stand in for `keys-url` as `mirrors` do for `url`: an update the first source does not have
/// (404, a missing file) is taken from the next. The old code stopped at the first "none published".
#[tokio::test]
async fn a_keyset_update_missing_at_keys_url_is_taken_from_a_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (SoftwareKey::generate(KeyType::EccP256), SoftwareKey::generate(KeyType::EccP256));
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/a.pem"), pem(&a)).unwrap();
    let now = crypto::unix_now();
    let vb = crypto::keys::VerifyingKey::from_spki_der("b.pem", b.public_key().spki_der()).unwrap();
    let next = crypto::policy::Policy::new(vec![vb], None, crypto::Limits::default()).unwrap();
    let doc = crypto::keyset::Document::new("main", 1, now + 86400, &next).unwrap();
    let by_a = token_over(&a, crypto::token::Payload::Keyset(doc.text().into()), now);
    let mirror = dir.path().join("mirror.tokens");
    std::fs::write(&mirror, token_over(&b, crypto::token::Payload::Token(by_a), now)).unwrap();
    // Only b may sign now: b's bundle is served once the mirror's update is in.
    std::fs::write(dir.path().join("token"), bundle_token(&b, now)).unwrap();
    let keyset = format!(
        "    chain: [a.pem]\n    keys-url: file://{}\n    keys-mirrors: [\"file://{}\"]\n",
        dir.path().join("missing.tokens").display(),
        mirror.display()
    );
    let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
    let url = HttpUrl::unix(&socket, "/trustbundle?instance=main");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap();
        if r.status == StatusCode::OK {
            assert_eq!(r.body, CA.as_bytes());
            break;
        }
        assert!(Instant::now() < deadline, "the mirror's update was never taken: {}", r.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An idle keep-alive connection on a unix socket is closed after the 5 s idle limit (ServerLimits'
/// header_timeout), well before the old 10 s: idle clients cannot hold the socket's connections for long.
#[tokio::test]
async fn an_idle_keep_alive_connection_on_the_verifier_socket_is_closed_after_5_s() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let key = SoftwareKey::generate(KeyType::EccP256);
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/k.pem"), pem(&key)).unwrap();
    let (_v, socket, _) = verifier(dir.path(), "main", "    chain: [k.pem]\n").await;
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    stream.write_all(b"GET /trustbundle?instance=main HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&buf[..n]));
    let idle = Instant::now();
    // The rest of that response, if any, then the close.
    loop {
        match tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("an idle keep-alive connection was still open after 8 s"),
        }
    }
    assert!(idle.elapsed() >= Duration::from_secs(4), "closed after {:?}, before the idle limit", idle.elapsed());
}
