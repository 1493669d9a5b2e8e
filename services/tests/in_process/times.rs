//! What the signers decide by the time, judged by a manual clock moved across the edge instead of waited for:
//! a keyset document's expiry at signer-unix, and a token's `exp` at the co-signer.

use std::sync::Arc;
use std::time::Duration;

use common::client::HttpUrl;
use common::clock::Clock;
use common::signer_client::{SignerClient, SignerClientError};
use crypto::token::Token;
use http::StatusCode;
use tpm::mock::SoftwareKey;
use tpm::KeyType;

use super::support::*;

fn refused_with(result: Result<Token, SignerClientError>, says: &str) {
    match result {
        Err(SignerClientError::Status { status, reason, .. }) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
            assert!(reason.contains(says), "{says:?} not in {reason:?}");
        }
        other => panic!("expected a 400 saying {says:?}, got {other:?}"),
    }
}

/// signer-unix signs a keyset document until it expires, and gives its layers the document's expiry; past it
/// (by its clock), the document is refused.
#[tokio::test]
async fn a_keyset_document_is_signed_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let start = common::clock::unix_now();
    let clock = Clock::manual(start);
    let key = Arc::new(SoftwareKey::generate(KeyType::EccP256));
    let (_signer, socket) = signer_unix_by(dir.path(), "a", key.clone(), "", clock.clone()).await;
    let client = SignerClient::new(&socket, Duration::from_secs(5)).unwrap();
    let doc = crypto::keyset::Document::new("main", 1, start + 100, &policy(&[&key])).unwrap();
    let signed = client.sign_keyset(doc.text()).await.unwrap();
    assert_eq!(signed.exp(), start + 100, "the layer lives until the document expires");
    clock.advance(99);
    client.sign_token(&signed).await.unwrap();
    client.sign_keyset(doc.text()).await.unwrap();
    clock.advance(1);
    refused_with(client.sign_keyset(doc.text()).await, "expired");
    refused_with(client.sign_token(&signed).await, "expired");
}

/// The co-signer takes its primary's token until `exp` plus the 5 s of clock skew it tolerates, and not after;
/// nor before its `iat` (less the same 5 s).
#[tokio::test]
async fn the_co_signer_takes_a_token_until_its_exp_by_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    let start = common::clock::unix_now();
    let clock = Clock::manual(start);
    let (server_key, local_key) =
        (Arc::new(SoftwareKey::generate(KeyType::EccP256)), Arc::new(SoftwareKey::generate(KeyType::EccP256)));
    let (_server, server_socket) = signer_unix_by(dir.path(), "server", server_key.clone(), "", clock.clone()).await;
    let (_local, local_socket) = signer_unix_by(dir.path(), "local", local_key, "", clock.clone()).await;
    let (_http, port) = signer_http_by(dir.path(), &local_socket, &server_key, "", clock.clone()).await;
    let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/sign")).unwrap();
    let server = SignerClient::new(&server_socket, Duration::from_secs(5)).unwrap();
    let token = server.sign_bundle(CA.as_bytes()).await.unwrap(); // 10 minutes, from `start`
    let early = Token::parse(&bundle_token(&server_key, start + 60)).unwrap();
    refused_with(server.cosign(&url, &early).await, "not valid before");
    clock.advance(600 + 5);
    let cosigned = server.cosign(&url, &token).await.unwrap();
    assert_eq!(cosigned.layers(), 2);
    clock.advance(1);
    refused_with(server.cosign(&url, &token).await, "expired at");
}
