//! signer-unix and signer-http in-process: what they sign, publish and co-sign, and what they refuse.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::client::{ClientOptions, HttpClient, HttpUrl};
use common::signer_client::{SignerClient, SignerClientError};
use crypto::token::Token;
use http::{Method, StatusCode};
use tpm::mock::SoftwareKey;
use tpm::KeyType;

use super::support::*;

#[tokio::test]
async fn signer_unix_signs_a_bundle_publishes_only_what_verifies_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "a", key.clone(), "").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();

    let token = client.sign_bundle(CA.as_bytes()).await.unwrap();
    let verified = policy(&[&key]).verify(&token, common::clock::unix_now()).unwrap();
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
        ("publish a token by another key", client.publish(&foreign).await.map(drop), StatusCode::UNPROCESSABLE_ENTITY),
        ("publish garbage", client.publish("a.b.c").await.map(drop), StatusCode::UNPROCESSABLE_ENTITY),
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
    eventually("the address served again after its connections closed", || async {
        let mut again = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        holds(raw_get(&mut again).await.starts_with(b"HTTP/1.1 "), || "not answered".into())
    })
    .await;
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
    let verified = policy(&[&server_key, &cosigner_key]).verify(&token, common::clock::unix_now()).unwrap();
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
    let now = common::clock::unix_now();
    for (iat, says) in [(now - 3600 - 60, &["expired at"][..]), (now + 600, &["in the future", "not valid before"])] {
        match server.cosign(&url, &Token::parse(&bundle_token(&server_key, iat)).unwrap()).await {
            Err(SignerClientError::Status { status, reason, .. }) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{says:?}: {reason}");
                assert!(says.iter().any(|s| reason.contains(s)), "{says:?}: {reason}");
            }
            other => panic!("{says:?}: {other:?}"),
        }
    }
    // The same check passes a token minted now: the rows above fail on time alone.
    server.cosign(&url, &Token::parse(&bundle_token(&server_key, now)).unwrap()).await.unwrap();
}

#[tokio::test]
async fn signer_unix_signs_keyset_documents_and_updates_and_refuses_what_is_not_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "a", key.clone(), "").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    let now = common::clock::unix_now();
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
            post("application/jwt", "/publish", update.to_string()).await,
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

/// A bundle near `max-body` signs into a token past what verifiers take (1 MiB): it is refused as too large
/// (413), no longer as a failed self-check, which sent operators looking for a wrong key in the TPM.
#[tokio::test]
async fn a_bundle_whose_token_would_be_too_large_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix(dir.path(), "a", key, "max-body: 2097152\n").await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    // 700 RSA CA certificates (the bundle parser takes up to 1,000): 857 KB of PEM, a token of about 1.15 MB.
    let big = include_str!("../../../crypto/tests/data/ca-rsa.pem").repeat(700);
    match client.sign_bundle(big.as_bytes()).await {
        Err(SignerClientError::Status { status, reason, .. }) => {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{reason}");
            assert!(reason.contains("more than the 1048576"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}
