//! `spire-server-attestor-tpm-sign keys`: builds a signed keyset update.
//!
//! The document (keyset, version, expiry, new policy with its keys as PEM) is signed by signer-unix at SOCKET
//! (innermost), wrapped by each co-signer URL in order (the current policy's layers), then by the signer-unix
//! of each key the update introduces (`--new-key-socket`, outermost). The result is checked against signer-unix's
//! publish policy (the policy the update replaces, as nodes verify it) before anything is written.
//!
//! Invariant: nothing is written, and nothing printed on standard output, unless every signature was obtained
//! and the whole update verifies against the policy it replaces.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::client::{ClientError, HttpUrl};
use common::signer_client::{SignerClient, SignerClientError};
use crypto::keys::VerifyingKey;
use crypto::keyset::{Document, DocumentError, UpdateError};
use crypto::policy::Policy;

/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// What the new keyset holds.
#[derive(Debug, Clone)]
pub enum NewPolicy {
    /// `--chain` (innermost signer first) and an optional `--backup`.
    Chain {
        /// The chain's key files.
        chain: Vec<PathBuf>,
        /// The backup's key file.
        backup: Option<PathBuf>,
    },
    /// `--threshold K --keys ...`.
    Threshold {
        /// K.
        threshold: usize,
        /// The set's key files.
        keys: Vec<PathBuf>,
    },
}

/// One `sign keys` run.
#[derive(Debug, Clone)]
pub struct KeysRequest {
    /// The keyset's name, as the nodes' config names it.
    pub keyset: String,
    /// The new version (above the one nodes hold).
    pub version: u64,
    /// The new policy.
    pub policy: NewPolicy,
    /// How long the update stays valid.
    pub valid_for: Duration,
    /// signer-unix sockets of the keys the update introduces.
    pub new_key_sockets: Vec<PathBuf>,
    /// signer-unix of the current policy (innermost signer).
    pub socket: PathBuf,
    /// Co-signers of the current policy, in order.
    pub urls: Vec<String>,
    /// Per-call timeout.
    pub timeout: Duration,
}

/// Why no update was produced; each variant names the step. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key file could not be read.
    #[error("key file {path}: {source}")]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file is not a usable public key.
    #[error("key file {path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        source: crypto::KeyError,
    },
    /// The new policy is invalid.
    #[error("the new policy: {0}")]
    Policy(#[from] crypto::PolicyError),
    /// The document could not be built.
    #[error("the keyset document: {0}")]
    Document(#[from] DocumentError),
    /// A co-signer URL is unusable.
    #[error("co-signer URL: {0}")]
    Url(ClientError),
    /// Building a client failed.
    #[error("client set-up: {0}")]
    Client(ClientError),
    /// signer-unix's publish policy (the one replaced) could not be had.
    #[error("reading the policy the update replaces from signer-unix at {socket}: {source}")]
    CurrentPolicy {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A signer failed.
    #[error("signing at {step}: {source}")]
    Sign {
        /// Which signer.
        step: String,
        /// Why.
        source: SignerClientError,
    },
    /// A new key's signer-unix answered with a token that does not wrap the one sent.
    #[error("signer-unix at {0} answered with a token that does not wrap the update sent")]
    NotWrapped(PathBuf),
    /// The update does not verify against the policy it replaces.
    #[error("the update does not verify against the policy it replaces (signer-unix's publish policy): {0}")]
    Check(UpdateError),
}

fn load_key(path: &Path) -> Result<VerifyingKey, KeysError> {
    use std::io::Read;
    let read = |source| KeysError::ReadKey { path: path.to_owned(), source };
    let mut text = Vec::new();
    std::fs::File::open(path).map_err(read)?.take(MAX_KEY_FILE).read_to_end(&mut text).map_err(read)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    VerifyingKey::from_pem(&name, &text).map_err(|source| KeysError::Key { path: path.to_owned(), source })
}

fn new_policy(p: &NewPolicy) -> Result<Policy, KeysError> {
    let limits = crypto::Limits::default();
    let load_all = |files: &[PathBuf]| files.iter().map(|f| load_key(f)).collect::<Result<Vec<_>, _>>();
    Ok(match p {
        NewPolicy::Chain { chain, backup } => {
            Policy::new(load_all(chain)?, backup.as_deref().map(load_key).transpose()?, limits)?
        }
        NewPolicy::Threshold { threshold, keys } => Policy::threshold(*threshold, load_all(keys)?, limits)?,
    })
}

/// Builds, signs and checks the update; returns the token (the caller writes it).
pub async fn build(req: &KeysRequest) -> Result<String, KeysError> {
    let policy = new_policy(&req.policy)?;
    let now = crypto::unix_now();
    let expires = now + req.valid_for.as_secs().clamp(1, crypto::keyset::MAX_UPDATE_LIFETIME_SECS);
    let document = Document::new(&req.keyset, req.version, expires, &policy)?;
    let cosigners =
        req.urls.iter().map(|u| HttpUrl::parse(u)).collect::<Result<Vec<_>, _>>().map_err(KeysError::Url)?;
    let local = SignerClient::new(&req.socket, req.timeout).map_err(KeysError::Client)?;
    let current_policy = |source: Box<dyn std::error::Error + Send + Sync>| KeysError::CurrentPolicy {
        socket: req.socket.clone(),
        source,
    };
    let current_json = local.policy().await.map_err(|e| current_policy(Box::new(e)))?;
    let current = crypto::keyset::policy_from_json(&current_json, crypto::Limits::default())
        .map_err(|e| current_policy(Box::new(e)))?;
    let step = |name: String| move |source| KeysError::Sign { step: name, source };
    let mut token =
        local.sign_keyset(document.text()).await.map_err(step(format!("signer-unix {}", req.socket.display())))?;
    for url in &cosigners {
        token = local.cosign(url, &token).await.map_err(step(format!("co-signer {url}")))?;
    }
    for socket in &req.new_key_sockets {
        let signer = SignerClient::new(socket, req.timeout).map_err(KeysError::Client)?;
        let wrapped =
            signer.sign_token(&token).await.map_err(step(format!("new key's signer-unix {}", socket.display())))?;
        if !crypto::token::wraps_exactly(&wrapped, &token, &crypto::Limits::default()) {
            return Err(KeysError::NotWrapped(socket.clone()));
        }
        token = wrapped;
    }
    let held = req.version.saturating_sub(1);
    let update = crypto::keyset::verify_update(&current, &req.keyset, held, &token, crypto::unix_now())
        .map_err(KeysError::Check)?;
    for l in &update.layers {
        tracing::info!(layer = l.depth, key = %l.key_name, backup = l.backup, exp = l.exp, "update layer verified");
    }
    tracing::info!(keyset = %req.keyset, version = req.version, expires, "keyset update signed and checked");
    Ok(token)
}
