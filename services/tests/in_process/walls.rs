//! The walls around keyset updates and the verifier's sources, each with the attack that got through before:
//! the co-signer as a signing oracle for updates, updates signed for any socket peer, a co-signed token the Go
//! original's signer-unix config could not publish, one keys mirror freezing a node, a corrupt keys state
//! re-trusting retired keys, hanging keys sources delaying bootstrap one after the other, a rollback through a
//! mirror and a 304 after `exp`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::client::{HttpClient, HttpUrl};
use common::clock::Clock;
use common::signer_client::{SignerClient, SignerClientError};
use crypto::keys::VerifyingKey;
use crypto::keyset::Document;
use crypto::policy::Policy;
use crypto::token::Payload;
use http::{Method, StatusCode};
use tpm::mock::SoftwareKey;
use tpm::{KeySigner, KeyType};

use super::support::*;

fn key() -> Arc<SoftwareKey> {
    Arc::new(SoftwareKey::generate(KeyType::EccP256))
}

fn verifying(name: &str, key: &SoftwareKey) -> VerifyingKey {
    VerifyingKey::from_spki_der(name, key.public_key().spki_der()).unwrap()
}

/// The uid this test runs as (the peer uid signer-unix sees).
fn my_uid(dir: &Path) -> u32 {
    std::fs::metadata(dir).unwrap().uid()
}

/// A keyset update for `keyset` to `chain [to]` at `version`, signed by `signers` innermost first.
fn update(keyset: &str, version: u64, to: (&str, &SoftwareKey), signers: &[&SoftwareKey], now: u64) -> String {
    let policy = Policy::new(vec![verifying(to.0, to.1)], None, crypto::Limits::default()).unwrap();
    let doc = Document::new(keyset, version, now + 86400, &policy).unwrap();
    let mut token = token_over(signers[0], Payload::Keyset(doc.text().into()), now);
    for s in &signers[1..] {
        token = token_over(s, Payload::Token(token), now);
    }
    token
}

fn refused(result: Result<impl std::fmt::Debug, SignerClientError>, want: StatusCode, says: &[&str]) {
    match result {
        Err(SignerClientError::Status { status, reason, .. }) => {
            assert_eq!(status, want, "{reason}");
            for s in says {
                assert!(reason.contains(s), "{s:?} not in {reason:?}");
            }
        }
        other => panic!("expected {want} saying {says:?}, got {other:?}"),
    }
}

/// Whoever controls server b wrote a keyset document of their own, signed it with b, and had a's signer-http add
/// a's layer: under `threshold: 2` every node took it. signer-http now refuses every keyset update, and still
/// co-signs b's bundle tokens.
#[tokio::test]
async fn signer_http_is_no_oracle_for_keyset_updates() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, attacker) = (key(), key(), key());
    let uid = format!("keyset-uids: [{}]\n", my_uid(dir.path()));
    let (_b_unix, b_socket) = signer_unix(dir.path(), "b", b.clone(), &uid).await;
    let (_a_unix, a_socket) = signer_unix(dir.path(), "a", a.clone(), &uid).await;
    let (_a_http, port) = signer_http(dir.path(), &a_socket, &b).await;
    let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/sign")).unwrap();
    let server_b = SignerClient::new(&b_socket, Duration::from_secs(5)).unwrap();
    let now = common::clock::unix_now();
    let theirs = Policy::new(vec![verifying("a.pem", &attacker)], None, crypto::Limits::default()).unwrap();
    let doc = Document::new("a", 1, now + 86400, &theirs).unwrap();
    let started = server_b.sign_keyset(doc.text()).await.unwrap();
    refused(server_b.cosign(&url, &started).await, StatusCode::FORBIDDEN, &["does not co-sign keyset updates"]);
    let bundle = server_b.sign_bundle(CA.as_bytes()).await.unwrap();
    let cosigned = server_b.cosign(&url, &bundle).await.unwrap();
    assert_eq!(policy(&[&*b, &*a]).verify(&cosigned, now).unwrap().layers.len(), 2);
}

/// signer-unix signs keyset documents, and adds layers to updates, only for the uids in `keyset-uids` (root by
/// default): not for the signer-http group or any other peer of its socket. Bundles are signed for every peer.
#[tokio::test]
async fn signer_unix_signs_keyset_updates_only_for_keyset_uids() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let me = my_uid(dir.path());
    let (_strict, strict_socket) =
        signer_unix(dir.path(), "strict", k.clone(), &format!("keyset-uids: [{}]\n", me.wrapping_add(4242))).await;
    let (_mine, mine_socket) = signer_unix(dir.path(), "mine", k.clone(), &format!("keyset-uids: [{me}]\n")).await;
    let strict = SignerClient::new(&strict_socket, Duration::from_secs(5)).unwrap();
    let mine = SignerClient::new(&mine_socket, Duration::from_secs(5)).unwrap();
    let now = common::clock::unix_now();
    let doc = Document::new("main", 1, now + 86400, &policy(&[&*k])).unwrap();
    let started = mine.sign_keyset(doc.text()).await.unwrap();
    for (what, result) in [
        ("a keyset document", strict.sign_keyset(doc.text()).await),
        ("a layer on an update", strict.sign_token(&started).await),
    ] {
        eprintln!("{what}");
        refused(result, StatusCode::FORBIDDEN, &["keyset-uids", &format!("uid {me}")]);
    }
    // Bundles and bundle tokens: signed for any peer of the socket.
    let bundle = strict.sign_bundle(CA.as_bytes()).await.unwrap();
    strict.sign_token(&bundle).await.unwrap();
    mine.sign_token(&started).await.unwrap();
}

/// Whoever runs as signer-http on server b (no root needed) had b's signer-unix sign a bundle of their own, had
/// a's signer-http co-sign it (its outer layer is b's, as a co-sign request's is), and had b's signer-unix publish
/// it: a two-layer token for any CA. Peers outside `bundle-uids` (root by default) now only add layers to tokens.
#[tokio::test]
async fn only_bundle_uids_have_bundles_signed_or_tokens_published() {
    let dir = tempfile::tempdir().unwrap();
    let (b, a) = (key(), key());
    let me = my_uid(dir.path());
    let outsider = format!("bundle-uids: [{}]\n", me.wrapping_add(4242));
    let (_b_unix, b_socket) = signer_unix(dir.path(), "b", b.clone(), &outsider).await;
    let as_signer_http = SignerClient::new(&b_socket, Duration::from_secs(5)).unwrap();
    let now = common::clock::unix_now();
    refused(
        as_signer_http.sign_bundle(CA.as_bytes()).await,
        StatusCode::FORBIDDEN,
        &["bundle-uids", &format!("uid {me}")],
    );
    let by_b = token_over(&b, Payload::Bundle(CA.into()), now);
    let cosigned = token_over(&a, Payload::Token(by_b.clone()), now);
    refused(as_signer_http.publish(&cosigned).await, StatusCode::FORBIDDEN, &["bundle-uids"]);
    assert!(!dir.path().join("www-b/spiffetrustbundle.token").exists(), "published");
    // What signer-http is for: a layer on a token.
    let wrapped = as_signer_http.sign_token(&token_over(&a, Payload::Bundle(CA.into()), now)).await.unwrap();
    assert_eq!(policy(&[&*a, &*b]).verify(&wrapped, now).unwrap().layers.len(), 2);
}

/// A socket peer republished an older token, still valid and signed by this signer (say from before a CA was
/// removed), over the newer one: nodes that had not yet seen the newer one took it. /publish now never goes back
/// in time, across a restart too; the same token again, or a newer one, still goes out.
#[tokio::test]
async fn publish_never_goes_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let now = common::clock::unix_now();
    let (older, newer) =
        (token_over(&k, Payload::Bundle(CA.into()), now - 120), token_over(&k, Payload::Bundle(CA.into()), now - 60));
    let published = dir.path().join("www-a/spiffetrustbundle.token");
    {
        let (_a, socket) = signer_unix(dir.path(), "a", k.clone(), "").await;
        let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
        assert!(client.publish(&newer).await.unwrap());
        assert!(
            !client.publish(&older).await.unwrap(),
            "an older token was published (the client sees 409 as superseded)"
        );
        assert_eq!(std::fs::read_to_string(&published).unwrap(), newer);
        client.publish(&newer).await.unwrap();
    }
    let (_a, socket) = signer_unix(dir.path(), "a", k.clone(), "").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    assert!(!client.publish(&older).await.unwrap(), "an older token was published after a restart");
    let latest = client.sign_bundle(CA.as_bytes()).await.unwrap();
    client.publish(&latest).await.unwrap();
    assert_eq!(std::fs::read_to_string(&published).unwrap(), latest);
}

/// The Go original's signer-unix config has no `keydir` and no `chain`. Our signer-unix then refused every
/// co-signed token (it tried its own key on the co-signer's layer), so an HA pair switched binary by binary
/// stopped publishing. Now it publishes a token whose innermost layer is its own and whose outer layers are
/// well formed and unexpired; with a chain, every layer is verified, and a refusal names the layer and the keys.
#[tokio::test]
async fn publish_takes_cosigned_tokens_without_a_chain_and_names_the_failing_layer_with_one() {
    let (a, b, stranger) = (key(), key(), key());
    let dir = dir_with_keys(&[("a.pem", &*a), ("b.pem", &*b)]);
    let (_upstream, upstream_socket) = signer_unix(dir.path(), "upstream", a.clone(), "").await;
    let (_chained, chained_socket) =
        signer_unix(dir.path(), "chained", a.clone(), "keydir: keys\nchain: [a.pem, b.pem]\n").await;
    let upstream = SignerClient::new(&upstream_socket, Duration::from_secs(5)).unwrap();
    let chained = SignerClient::new(&chained_socket, Duration::from_secs(5)).unwrap();
    let now = common::clock::unix_now();
    let by_a = upstream.sign_bundle(CA.as_bytes()).await.unwrap();
    let cosigned = token_over(&b, Payload::Token(by_a.to_string()), now);
    upstream.publish(&cosigned).await.unwrap();
    let published = dir.path().join("www-upstream/spiffetrustbundle.token");
    assert_eq!(std::fs::read_to_string(&published).unwrap(), cosigned);
    chained.publish(&cosigned).await.unwrap();

    let by_stranger = token_over(&stranger, Payload::Bundle(CA.into()), now);
    let cases: Vec<(&str, &SignerClient, String, Vec<&str>)> = vec![
        (
            "no chain: an expired co-signature",
            &upstream,
            token_over(&b, Payload::Token(by_a.to_string()), now - 7200),
            vec!["layer 0", "expired"],
        ),
        (
            "no chain: the innermost layer is not this signer's",
            &upstream,
            token_over(&b, Payload::Token(by_stranger.clone()), now),
            vec!["layer 1", "signature does not verify"],
        ),
        (
            "no chain: a co-signature that is not a token layer",
            &upstream,
            format!("{}.x", token_over(&b, Payload::Token(by_a.to_string()), now)),
            vec!["layer 0", "not a compact JWS"],
        ),
        (
            "chain: a co-signature by a stranger",
            &chained,
            token_over(&stranger, Payload::Token(by_a.to_string()), now),
            vec!["layer 0", "signature does not verify with b.pem", "(chain a.pem, b.pem)"],
        ),
        (
            "chain: b's co-signature missing",
            &chained,
            by_a.to_string(),
            vec!["layer 0", "no layer by b.pem", "(chain a.pem, b.pem)"],
        ),
    ];
    for (what, signer, token, says) in cases {
        eprintln!("{what}");
        refused(signer.publish(&token).await, StatusCode::UNPROCESSABLE_ENTITY, &says);
    }
    assert_eq!(std::fs::read_to_string(&published).unwrap(), cosigned, "the last good token stays published");
}

/// Polls the agent's request until it answers `want` (10 s at most).
async fn until_status(client: &HttpClient, socket: &Path, want: StatusCode, what: &str) {
    eventually(what, || async {
        let got = get_bundle(client.clone(), socket.to_owned()).await.status;
        holds(got == want, || format!("still {got}"))
    })
    .await
}

/// Every keys source counts. The old verifier stopped at the first that answered anything: with `keys-url` down
/// (exactly when a TPM or server died), an empty, garbage or refused first mirror kept a node on version 0 for
/// good, while a later mirror held the update. Nor did it follow an update chain split across two sources.
#[tokio::test]
async fn a_keyset_update_is_found_whatever_the_other_keys_sources_answer() {
    let (a, b, c, rogue) = (key(), key(), key(), key());
    let now = common::clock::unix_now();
    let v1 = update("main", 1, ("b.pem", &b), &[&a, &b], now);
    let v2 = update("main", 2, ("c.pem", &c), &[&b, &c], now);
    let cases: Vec<(&str, Option<String>, String, &Arc<SoftwareKey>)> = vec![
        ("keys-url missing", None, v1.clone(), &b),
        ("keys-url answers garbage", Some("<html>oops</html>\n".into()), v1.clone(), &b),
        ("keys-url answers nothing", Some(String::new()), v1.clone(), &b),
        ("keys-url holds a refused update", Some(update("main", 1, ("r.pem", &rogue), &[&rogue], now)), v1.clone(), &b),
        ("keys-url holds v2, the mirror v1", Some(v2.clone()), v1.clone(), &c),
    ];
    for (what, first, mirror, signer) in cases {
        let dir = dir_with_keys(&[("a.pem", &*a)]);
        let (first_file, mirror_file) = (dir.path().join("keys.tokens"), dir.path().join("mirror.tokens"));
        if let Some(text) = first {
            std::fs::write(&first_file, text).unwrap();
        }
        std::fs::write(&mirror_file, mirror).unwrap();
        // Only the key the updates lead to may sign now: its bundle is served once they are in.
        std::fs::write(dir.path().join("token"), bundle_token(signer, now)).unwrap();
        let keyset = format!(
            "    chain: [a.pem]\n    keys-url: file://{}\n    keys-mirrors: [\"file://{}\"]\n",
            first_file.display(),
            mirror_file.display()
        );
        let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
        until_status(&client, &socket, StatusCode::OK, what).await;
    }
}

/// A tarpit: accepts connections and never answers; reports each accepted connection.
async fn tarpit() -> (u16, tokio::sync::mpsc::UnboundedReceiver<tokio::net::TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Keys sources are fetched at once: the second hanging source is asked while the first still hangs. The old
/// verifier asked them one after the other, so a node with nothing cached answered its first agent only after
/// every source had timed out in turn (14.6 s with three on a tarpit).
#[tokio::test]
async fn hanging_keys_sources_are_asked_at_once() {
    let a = key();
    let dir = dir_with_keys(&[("a.pem", &*a)]);
    let ((p1, mut first), (p2, mut second)) = (tarpit().await, tarpit().await);
    let keyset = format!(
        "    chain: [a.pem]\n    keys-url: http://127.0.0.1:{p1}/keys\n    keys-mirrors: [\"http://127.0.0.1:{p2}/keys\"]\ntimeout: 30s\n"
    );
    let (_v, _socket, _client) = verifier(dir.path(), "main", &keyset).await;
    let wait = Duration::from_secs(10);
    let held = tokio::time::timeout(wait, first.recv()).await.expect("keys-url never asked").unwrap();
    tokio::time::timeout(wait, second.recv()).await.expect("the mirror was not asked while keys-url hung").unwrap();
    // keys-url's connection is still open (its request may be waiting unread; closed would read 0 bytes): its
    // fetch had not given up when the mirror was asked.
    let mut probe = [0u8; 1];
    match held.try_read(&mut probe) {
        Ok(1) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("keys-url's connection was closed before the mirror was asked: {other:?}"),
    }
}

/// A keys state that cannot be read used to mean "trust the config's keys": a node re-trusted the keys updates
/// had retired, and dropped the version it held. Now the keyset trusts nothing and says why; an operator who
/// removes the file means: trust keydir again.
#[tokio::test]
async fn a_corrupt_keys_state_trusts_nothing_until_it_is_removed() {
    let a = key();
    let dir = dir_with_keys(&[("a.pem", &*a)]);
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let state = dir.path().join("state/main.keys.json");
    std::fs::write(&state, "{ not json").unwrap();
    std::fs::write(dir.path().join("token"), bundle_token(&a, common::clock::unix_now())).unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let keyset = format!("    chain: [a.pem]\nmetrics-addr: \"{metrics}\"\n");
    {
        let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
        let series = "spire_attestor_tpm_verifier_rejections_total{keyset=\"main\",reason=\"keys_state\"}";
        eventually("a's token refused for the unusable state", || async {
            holds(scrape(&client, metrics, series).await.unwrap_or(0.0) >= 1.0, || format!("{series} < 1"))
        })
        .await;
        assert_eq!(get_bundle(client.clone(), socket.clone()).await.status, StatusCode::SERVICE_UNAVAILABLE);
        let url = HttpUrl::parse(&format!("http://{metrics}/healthz")).unwrap();
        let health = client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap();
        let said = String::from_utf8_lossy(&health.body).into_owned();
        assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE, "{said}");
        assert!(said.contains("main.keys.json") && said.contains("trusting no key"), "{said}");
    }
    wait_until_free(metrics).await;
    std::fs::remove_file(&state).unwrap();
    let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
    until_status(&client, &socket, StatusCode::OK, "keydir trusted again once the state was removed").await;
}

/// Waits until a stopped daemon lets go of `addr` (the event a restart on the same port needs).
async fn wait_until_free(addr: std::net::SocketAddr) {
    let what = format!("the stopped verifier to let go of {addr}");
    eventually(&what, || async { holds(std::net::TcpListener::bind(addr).is_ok(), || "still bound".into()) }).await;
}

/// A mirror that serves an older token than the one accepted from `url` is a rollback: refused, counted, and the
/// newer bundle stays served.
#[tokio::test]
async fn an_older_token_from_a_mirror_is_a_rollback() {
    let a = key();
    let dir = dir_with_keys(&[("a.pem", &*a)]);
    let now = common::clock::unix_now();
    let mirror = dir.path().join("mirror.token");
    std::fs::write(dir.path().join("token"), bundle_token(&a, now)).unwrap();
    std::fs::write(&mirror, bundle_token(&a, now - 60)).unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let keyset =
        format!("    mirrors: [\"file://{}\"]\n    chain: [a.pem]\nmetrics-addr: \"{metrics}\"\n", mirror.display());
    let (_v, socket, client) = verifier(dir.path(), "main", &keyset).await;
    until_status(&client, &socket, StatusCode::OK, "the newer token").await;
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let series = "spire_attestor_tpm_verifier_rejections_total{keyset=\"main\",reason=\"rollback\"}";
    eventually("the mirror's older token refused as a rollback", || async {
        holds(scrape(&client, metrics, series).await.unwrap_or(0.0) >= 1.0, || format!("{series} < 1"))
    })
    .await;
    let served = get_bundle(client.clone(), socket.clone()).await;
    assert_eq!((served.status, served.body.as_ref()), (StatusCode::OK, CA.as_bytes()));
}

/// An HTTP source that answers `304 Not Modified` to any conditional request, and the token with an `ETag`
/// otherwise.
async fn etag_source(token: String) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let token = token.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let Ok(n) = stream.read(&mut buf).await else { return };
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                let reply = if head.contains("if-none-match") {
                    "HTTP/1.1 304 Not Modified\r\nETag: \"t\"\r\nConnection: close\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nETag: \"t\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{token}",
                        token.len()
                    )
                };
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    port
}

/// A source that keeps answering 304 does not keep an expired token served: past its `exp` (by the verifier's
/// clock) the node answers 503.
#[tokio::test]
async fn a_304_after_exp_serves_nothing() {
    let a = key();
    let dir = dir_with_keys(&[("a.pem", &*a)]);
    let start = common::clock::unix_now();
    let clock = Clock::manual(start);
    let port = etag_source(bundle_token(&a, start)).await;
    // The keyset's url is the file; the HTTP source is its mirror: the file is missing, so the mirror answers.
    let keyset = format!("    mirrors: [\"http://127.0.0.1:{port}/t\"]\n    chain: [a.pem]\n");
    let (_v, socket, client) = verifier_by(dir.path(), "main", &keyset, clock.clone()).await;
    until_status(&client, &socket, StatusCode::OK, "the token").await;
    clock.advance(3600 + 10);
    until_status(&client, &socket, StatusCode::SERVICE_UNAVAILABLE, "past exp, on 304s").await;
}

/// A connection to `addr` from the loopback address `from` (127.0.0.2 is another peer than 127.0.0.1).
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// One peer cannot take the metrics endpoint: 40 idle connections from 127.0.0.2 used to hold every one of its 8
/// slots, and `/healthz` went unanswered for 25 s (Prometheus gives up after 10). A peer now holds 2 connections
/// at most, so a scrape from another address is answered while they stay open.
#[tokio::test]
async fn one_peer_cannot_take_the_metrics_endpoint() {
    let a = key();
    let dir = dir_with_keys(&[("a.pem", &*a)]);
    std::fs::write(dir.path().join("token"), bundle_token(&a, common::clock::unix_now())).unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let metrics = std::net::SocketAddr::from(([0, 0, 0, 0], metrics.port()));
    let keyset = format!("    chain: [a.pem]\nmetrics-addr: \"{metrics}\"\n");
    let (_v, _socket, _client) = verifier(dir.path(), "main", &keyset).await;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], metrics.port()));
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(connect_from([127, 0, 0, 2], target).await);
    }
    let quick = HttpClient::new(common::client::ClientOptions {
        timeout: Duration::from_secs(3),
        max_body: 1 << 20,
        ca_file: None,
    })
    .unwrap();
    let url = HttpUrl::parse(&format!("http://{target}/healthz")).unwrap();
    let answer = quick.send(Method::GET, &url, &[], Bytes::new()).await;
    assert!(answer.is_ok(), "/healthz unanswered while one peer held 40 idle connections: {answer:?}");
    drop(idle);
}

/// signer-http's metrics answer this host and its allowed peers only: another address is closed before a byte is
/// read (it was served to anyone who could reach the port).
#[tokio::test]
async fn signer_http_metrics_answer_its_allowed_peers_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let (_local, local_socket) = signer_unix(dir.path(), "local", k.clone(), "").await;
    let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    let (_http, _) =
        signer_http_with(dir.path(), &local_socket, &k, &format!("metrics-addr: \"0.0.0.0:{port}\"\n")).await;
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let read_all = |mut s: tokio::net::TcpStream| async move {
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        out
    };
    let s = eventually("metrics to listen", || async {
        tokio::net::TcpStream::connect(target).await.map_err(|e| e.to_string())
    })
    .await;
    assert!(read_all(s).await.starts_with(b"HTTP/1.1 200"), "127.0.0.1 (this host) is answered");
    let other = read_all(connect_from([127, 0, 0, 2], target).await).await;
    assert!(other.is_empty(), "127.0.0.2 is not in allowed-addrs, yet: {}", String::from_utf8_lossy(&other));
}
