//! The verifier in-process: what it serves, by which keys and clock, what it counts, what it refuses.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{HttpClient, HttpUrl};
use common::clock::Clock;
use common::signer_client::{SignerClient, SignerClientError};
use http::{Method, StatusCode};
use services::ConfigFile;
use tpm::mock::SoftwareKey;
use tpm::{KeySigner, KeyType};

use super::support::*;

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
    let served = eventually("the genuine bundle served", || async {
        let r = get("/trustbundle?instance=main").await;
        if r.status == StatusCode::OK {
            Ok(r)
        } else {
            Err(r.status.to_string())
        }
    })
    .await;
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
    eventually("2 of 3 (key 2 inside, key 0 outside) served", || async {
        let got = status().await;
        holds(got == StatusCode::OK, || got.to_string())
    })
    .await;
}

/// A keyset bound to `trust-domain: example.org`: a bundle signed for it is served; signed for another, or
/// bound to none, it is not; an agent asking for another trust domain gets 403.
#[tokio::test]
async fn verifier_with_a_trust_domain_serves_only_bundles_signed_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "s", key.clone(), "").await;
    let signer = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    let for_us = signer.sign_bundle_for(CA.as_bytes(), Some(&"example.org".parse().unwrap())).await.unwrap();
    // Another trust domain's CA, signed for it: the node bound to example.org refuses it.
    let their_ca = include_str!("../../../crypto/tests/data/ca-other-td.pem");
    let for_them = signer.sign_bundle_for(their_ca.as_bytes(), Some(&"other.org".parse().unwrap())).await.unwrap();
    let unbound = signer.sign_bundle(CA.as_bytes()).await.unwrap();
    // signer-unix refuses what is not a trust domain name, before signing anything; and a bundle whose CA
    // names another trust domain than the one it is to be bound to.
    assert!("Not A Domain".parse::<crypto::TrustDomain>().is_err(), "the client cannot even name it");
    let http = HttpClient::new(common::client::ClientOptions::default()).unwrap();
    let url = HttpUrl::unix(&socket, "/sign?trust-domain=Not%20A%20Domain");
    let refused = http.send(Method::POST, &url, &[], Bytes::from(CA)).await.unwrap();
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{:?}", refused.body);
    assert!(String::from_utf8_lossy(&refused.body).contains("not a SPIFFE trust domain name"));
    match signer.sign_bundle_for(CA.as_bytes(), Some(&"elsewhere.org".parse().unwrap())).await {
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
        cfg.keysets["main"].verify(token, common::clock::unix_now()).map(|_| ()).map_err(|e| e.to_string())
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

/// The verifier judges a token's times by its clock: it serves a bundle until the token's `exp` and not a second
/// longer, and a token signed for later (`iat`, `nbf`) only from then on. The clock is a manual one moved forward,
/// instead of a test waiting out a token's lifetime.
#[tokio::test]
async fn the_verifier_serves_a_token_from_its_iat_until_its_exp_by_its_clock() {
    let key = SoftwareKey::generate(KeyType::EccP256);
    let dir = dir_with_keys(&[("primary.pem", &key)]);
    let start = common::clock::unix_now();
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

/// The verifier's metrics say why it refused each token (`rejections_total` by reason) and when the offline backup
/// key stands in (`backup_key_in_use`), so the shipped alerts can fire on them: garbage, a stranger's signature,
/// the backup standing in, the primary again, then the primary's token expired (by a manual clock).
#[tokio::test]
async fn the_verifier_counts_each_rejection_by_reason_and_shows_the_backup_in_use() {
    let (a, c, x) = (
        SoftwareKey::generate(KeyType::EccP256),
        SoftwareKey::generate(KeyType::EccP256),
        SoftwareKey::generate(KeyType::EccP256),
    );
    let dir = dir_with_keys(&[("a.pem", &a), ("c.pem", &c)]);
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let start = common::clock::unix_now();
    let clock = Clock::manual(start);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a.b.c").unwrap();
    let keyset = format!("    chain: [a.pem]\n    backup: c.pem\nmetrics-addr: \"{metrics}\"\n");
    let (_v, socket, client) = verifier_by(dir.path(), "main", &keyset, clock.clone()).await;
    let series = |name: &str, labels: &str| format!("spire_attestor_tpm_verifier_{name}{{keyset=\"main\"{labels}}}");
    let until = |what: &'static str, name: String, want: fn(f64) -> bool| {
        let client = client.clone();
        async move {
            eventually(what, || async {
                let got = scrape(&client, metrics, &name).await;
                holds(got.is_some_and(want), || format!("{name} = {got:?}"))
            })
            .await
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
    let (a, b) = (SoftwareKey::generate(KeyType::EccP256), SoftwareKey::generate(KeyType::EccP256));
    let dir = dir_with_keys(&[("a.pem", &a)]);
    let now = common::clock::unix_now();
    let keys_file = dir.path().join("keys.tokens");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let keyset =
        format!("    chain: [a.pem]\n    keys-url: file://{}\nmetrics-addr: \"{metrics}\"\n", keys_file.display());
    let wait = |what: &'static str, client: HttpClient, socket: PathBuf, want: StatusCode| async move {
        eventually(what, || async {
            let status = get_bundle(client.clone(), socket.clone()).await.status;
            holds(status == want, || format!("still {status}"))
        })
        .await
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
    eventually("the stopped verifier to free its metrics port", || async {
        holds(std::net::TcpListener::bind(metrics).is_ok(), || "still bound".into())
    })
    .await;
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
    eventually("b's older token refused as a rollback", || async {
        holds(rollbacks().await > 0, || "no rollback counted".into())
    })
    .await;
    assert_eq!(get_bundle(client.clone(), socket.clone()).await.status, StatusCode::SERVICE_UNAVAILABLE);
    std::fs::write(dir.path().join("token"), bundle_token(&b, now)).unwrap();
    wait("b's newer bundle", client, socket, StatusCode::OK).await;
}

/// `keys-mirrors` stand in for `keys-url` as `mirrors` do for `url`: an update the first source does not have
/// (404, a missing file) is taken from the next. The old code stopped at the first "none published".
#[tokio::test]
async fn a_keyset_update_missing_at_keys_url_is_taken_from_a_mirror() {
    let (a, b) = (SoftwareKey::generate(KeyType::EccP256), SoftwareKey::generate(KeyType::EccP256));
    let dir = dir_with_keys(&[("a.pem", &a)]);
    let now = common::clock::unix_now();
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
    let served = eventually("the mirror's update taken", || async {
        let r = client.send(Method::GET, &url, &[], Bytes::new()).await.unwrap();
        if r.status == StatusCode::OK {
            Ok(r)
        } else {
            Err(r.status.to_string())
        }
    })
    .await;
    assert_eq!(served.body, CA.as_bytes());
}

/// An idle keep-alive connection on a unix socket is closed after the 5 s idle limit (ServerLimits'
/// header_timeout), well before the old 10 s: idle clients cannot hold the socket's connections for long.
#[tokio::test]
async fn an_idle_keep_alive_connection_on_the_verifier_socket_is_closed_after_5_s() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = SoftwareKey::generate(KeyType::EccP256);
    let dir = dir_with_keys(&[("k.pem", &key)]);
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
