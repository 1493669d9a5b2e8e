//! Client side of the signing chain: signer-unix's socket API and co-signer (signer-http) URLs.
//!
//! Invariant: nothing but a well-formed token ever leaves these functions as a token: a [`Token`], read once
//! here, whose fields (kind, layers, earliest `exp`) later hops use instead of parsing it again. A non-200 status,
//! an empty body, or a body that is not a compact JWS is an error carrying the peer's reason, so an error body
//! can never be published as a token (the Go original's defect).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};

use crate::client::{ClientError, ClientOptions, HttpClient, HttpUrl};
use crypto::token::Token;
use crypto::TrustDomain;

/// signer-unix's socket path in the upstream units; the sign plugin and signer-http use it by default.
pub const DEFAULT_SOCKET: &str = "/var/run/spire/server-attestor-tpm/signer-unix.sock";

/// Why a sign, co-sign or publish call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerClientError {
    /// Transport failure (connect, timeout, TLS, oversized reply).
    #[error(transparent)]
    Transport(#[from] ClientError),
    /// The peer answered with an error status.
    #[error("{peer} answered {status}: {reason}")]
    Status {
        /// Who answered.
        peer: String,
        /// The status.
        status: StatusCode,
        /// The first line of its body.
        reason: String,
    },
    /// The peer answered 200 but not with a token.
    #[error("{peer} answered 200 without a token: {why}")]
    NotAToken {
        /// Who answered.
        peer: String,
        /// What was wrong.
        why: String,
    },
}

/// Talks to signer-unix over its unix socket, and to co-signers over HTTP(S).
#[derive(Debug, Clone)]
pub struct SignerClient {
    socket: PathBuf,
    http: HttpClient,
}

fn reason(body: &[u8]) -> String {
    let mut line = crate::report::peer_line(&String::from_utf8_lossy(body), 200);
    if line.is_empty() {
        line = "(no reason given)".into();
    }
    line
}

impl SignerClient {
    /// A client for the signer-unix socket at `socket`; every call is bounded by `timeout`.
    pub fn new(socket: &Path, timeout: Duration) -> Result<SignerClient, ClientError> {
        Self::with_options(socket, ClientOptions { timeout, ..ClientOptions::default() })
    }

    /// A client with explicit options (timeout, body cap, CA file for https co-signers).
    pub fn with_options(socket: &Path, opts: ClientOptions) -> Result<SignerClient, ClientError> {
        Ok(SignerClient { socket: socket.to_owned(), http: HttpClient::new(opts)? })
    }

    async fn post_for_token(
        &self,
        url: &HttpUrl,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Token, SignerClientError> {
        let headers = [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
        let resp = self.http.send(Method::POST, url, &headers, body).await?;
        let peer = url.to_string();
        if resp.status != StatusCode::OK {
            return Err(SignerClientError::Status { peer, status: resp.status, reason: reason(&resp.body) });
        }
        let text = std::str::from_utf8(&resp.body)
            .map_err(|_| SignerClientError::NotAToken { peer: peer.clone(), why: "body is not UTF-8".into() })?
            .trim();
        Token::parse(text).map_err(|e| SignerClientError::NotAToken { peer, why: e.to_string() })
    }

    /// Has signer-unix sign a bundle (PEM or SPIFFE JSON); returns the token.
    pub async fn sign_bundle(&self, bundle: &[u8]) -> Result<Token, SignerClientError> {
        self.sign_bundle_for(bundle, None).await
    }

    /// [`SignerClient::sign_bundle`], the token bound to `trust_domain` (claim `spiffetd`) when given.
    pub async fn sign_bundle_for(
        &self,
        bundle: &[u8],
        trust_domain: Option<&TrustDomain>,
    ) -> Result<Token, SignerClientError> {
        let path = match trust_domain {
            Some(td) => format!("/sign?trust-domain={td}"),
            None => "/sign".to_owned(),
        };
        let url = HttpUrl::unix(&self.socket, &path);
        self.post_for_token(&url, "application/x-pem-file", Bytes::copy_from_slice(bundle)).await
    }

    /// Has signer-unix sign keyset document `document` (JSON): the innermost layer of a keyset update.
    pub async fn sign_keyset(&self, document: &str) -> Result<Token, SignerClientError> {
        let url = HttpUrl::unix(&self.socket, "/sign");
        self.post_for_token(&url, "application/spiffe-keyset+json", Bytes::copy_from_slice(document.as_bytes())).await
    }

    /// signer-unix's publish policy (what nodes verify, as its config says), as keyset policy JSON.
    pub async fn policy(&self) -> Result<String, SignerClientError> {
        let url = HttpUrl::unix(&self.socket, "/policy");
        let resp = self.http.send(Method::GET, &url, &[], Bytes::new()).await?;
        if resp.status != StatusCode::OK {
            return Err(SignerClientError::Status {
                peer: url.to_string(),
                status: resp.status,
                reason: reason(&resp.body),
            });
        }
        String::from_utf8(resp.body.to_vec())
            .map_err(|_| SignerClientError::NotAToken { peer: url.to_string(), why: "policy is not UTF-8".into() })
    }

    /// Has signer-unix wrap `token` with its own signature (claim `jwt`).
    pub async fn sign_token(&self, token: &str) -> Result<Token, SignerClientError> {
        let url = HttpUrl::unix(&self.socket, "/sign");
        self.post_for_token(&url, "application/jwt", Bytes::copy_from_slice(token.as_bytes())).await
    }

    /// Has the co-signer at `url` (signer-http) add its signature to `token`. The reply must wrap exactly
    /// `token`: a faulty co-signer, or anyone on a plain-HTTP hop, cannot swap in another token. (Its own
    /// signature is checked by signer-unix's `/publish` against the configured chain, before anything is
    /// published.)
    pub async fn cosign(&self, url: &HttpUrl, token: &Token) -> Result<Token, SignerClientError> {
        let reply = self.post_for_token(url, "application/jwt", Bytes::copy_from_slice(token.as_bytes())).await?;
        if !reply.wraps(token) {
            return Err(SignerClientError::NotAToken {
                peer: url.to_string(),
                why: "the reply does not wrap the token sent".into(),
            });
        }
        Ok(reply)
    }

    /// Publishes `token`: `Ok(true)` once it is written; `Ok(false)` when signer-unix keeps a token signed after
    /// it (409: this one is superseded, e.g. by a concurrent publish; a token older than the one published is
    /// never written).
    pub async fn publish(&self, token: &str) -> Result<bool, SignerClientError> {
        let url = HttpUrl::unix(&self.socket, "/publish");
        let headers = [(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"))];
        let resp = self.http.send(Method::POST, &url, &headers, Bytes::copy_from_slice(token.as_bytes())).await?;
        if resp.status == StatusCode::CONFLICT {
            tracing::info!(reason = %reason(&resp.body), "not published: a token signed later is published already");
            return Ok(false);
        }
        if resp.status != StatusCode::OK {
            return Err(SignerClientError::Status {
                peer: url.to_string(),
                status: resp.status,
                reason: reason(&resp.body),
            });
        }
        Ok(true)
    }

    /// Signs `bundle` locally, then has each co-signer in `cosigners` add its signature, in order.
    /// Publishes nothing.
    pub async fn sign_chain(&self, bundle: &[u8], cosigners: &[HttpUrl]) -> Result<Token, SignerClientError> {
        self.sign_chain_for(bundle, None, cosigners).await
    }

    /// [`SignerClient::sign_chain`], the innermost layer bound to `trust_domain` when given.
    pub async fn sign_chain_for(
        &self,
        bundle: &[u8],
        trust_domain: Option<&TrustDomain>,
        cosigners: &[HttpUrl],
    ) -> Result<Token, SignerClientError> {
        let mut token = self.sign_bundle_for(bundle, trust_domain).await?;
        for url in cosigners {
            token = self.cosign(url, &token).await?;
        }
        Ok(token)
    }
}
