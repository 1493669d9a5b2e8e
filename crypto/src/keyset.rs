//! Signed keyset updates: how the keys a keyset trusts change without touching the nodes.
//!
//! An update is a token of kind [`Kind::KeysetUpdate`] whose innermost claim `spiffeks` holds a
//! [`Document`]: the keyset's name, a `version` that only goes up, when the document expires, and the new policy
//! with its keys as PEM. Its layers, innermost first:
//! 1. layers that satisfy the keyset's CURRENT policy, exactly as a bundle token would (every layer verified;
//!    the backup at most once; or the threshold), the innermost one carrying the document;
//! 2. then one layer by each key the document introduces (a key the current policy does not hold), in any
//!    order: proof that the new key exists and can sign, as TUF asks of a new root.
//!
//! Invariants: every layer verifies; nothing but the document is read before the signatures are checked, and
//! it is only used to refuse early (wrong keyset, version not above the one held) or to learn which new keys
//! must have signed; the document's policy is built with the caller's limits.

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, VerifyError, VerifyErrorKind as K};
use crate::keys::VerifyingKey;
use crate::policy::{LayerInfo, Policy};
use crate::token::{self, Kind, Payload};
use crate::{KeyError, Limits};

/// Longest validity of a keyset update (`exp - iat` of each layer): a node that was off for months must still
/// be able to follow the update when it comes back, so updates live far longer than bundle tokens.
pub const MAX_UPDATE_LIFETIME_SECS: u64 = 400 * 24 * 3600;

/// The most a keyset update may raise the version held: a document signed with version `u64::MAX` (or any far
/// jump) would otherwise leave no version for any later update, freezing the keyset for good.
pub const MAX_VERSION_STEP: u64 = 1000;

/// Longest key name in a document.
const MAX_KEY_NAME: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    keyset: String,
    version: u64,
    expires: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<Vec<RawKey>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<RawKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<RawKey>>,
}

/// A policy alone, as JSON: `{"chain":[{"name":..,"pem":..}],"backup":{..}}` or `{"threshold":K,"keys":[..]}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<Vec<RawKey>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup: Option<RawKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keys: Option<Vec<RawKey>>,
}

impl RawPolicy {
    fn of(policy: &Policy) -> RawPolicy {
        RawPolicy {
            chain: policy.threshold_keys().is_none().then(|| policy.chain().iter().map(raw_key).collect()),
            backup: policy.backup().map(raw_key),
            threshold: policy.threshold_keys().map(|(k, _)| k),
            keys: policy.threshold_keys().map(|(_, keys)| keys.iter().map(raw_key).collect()),
        }
    }

    fn build(self, limits: Limits) -> Result<Policy, DocumentError> {
        let names: Vec<&str> = self
            .chain
            .iter()
            .flatten()
            .chain(&self.backup)
            .chain(self.keys.iter().flatten())
            .map(|k| k.name.as_str())
            .collect();
        if let Some((i, _)) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
            return Err(DocumentError::DuplicateKeyName(names[i].to_owned()));
        }
        match (self.chain, self.backup, self.threshold, self.keys) {
            (Some(chain), backup, None, None) => {
                let chain = chain.iter().map(key).collect::<Result<Vec<_>, _>>()?;
                let backup = backup.as_ref().map(key).transpose()?;
                Ok(Policy::new(chain, backup, limits)?)
            }
            (None, None, Some(threshold), Some(keys)) => {
                Ok(Policy::threshold(threshold, keys.iter().map(key).collect::<Result<Vec<_>, _>>()?, limits)?)
            }
            _ => Err(DocumentError::PolicyShape),
        }
    }
}

/// `policy` as JSON (its keys as PEM, with their names): what signer-unix's `GET /policy` answers.
pub fn policy_to_json(policy: &Policy) -> String {
    serde_json::to_string(&RawPolicy::of(policy)).unwrap_or_default()
}

/// The policy [`policy_to_json`] wrote, built with `limits`.
pub fn policy_from_json(text: &str, limits: Limits) -> Result<Policy, DocumentError> {
    let raw: RawPolicy = serde_json::from_str(text).map_err(|e| DocumentError::Json(e.to_string()))?;
    raw.build(limits)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    pem: String,
}

/// Why a keyset document is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not the JSON of a keyset document.
    #[error("not a keyset document: {0}")]
    Json(String),
    /// The keyset name is not one a config can hold.
    #[error("keyset name {0:?}: names use letters, digits, - and _")]
    BadName(String),
    /// Version 0 is what `keydir` holds; an update starts at 1.
    #[error("version must be at least 1 (0 is the keys in keydir)")]
    VersionZero,
    /// Neither or both of `chain` and `threshold`.
    #[error("give either chain (and backup) or threshold and keys")]
    PolicyShape,
    /// A key name is empty, too long, or not printable.
    #[error("key name {0:?}: 1 to 64 printable characters")]
    BadKeyName(String),
    /// Two keys of the document share a name: nodes name keys in logs and refusals, so each name means one key.
    #[error("key name {0:?} is given to two keys")]
    DuplicateKeyName(String),
    /// A key's PEM is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The policy is invalid (duplicate key, bad threshold, too many keys).
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A keyset document: the payload of an update.
#[derive(Debug, Clone)]
pub struct Document {
    keyset: String,
    version: u64,
    expires: u64,
    policy: Policy,
    text: String,
}

/// Whether `name` is a keyset name (as the verifier's config allows).
pub fn is_keyset_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn raw_key(k: &VerifyingKey) -> RawKey {
    RawKey { name: k.name().to_owned(), pem: k.to_pem() }
}

fn key(raw: &RawKey) -> Result<VerifyingKey, DocumentError> {
    let n = &raw.name;
    if n.is_empty() || n.len() > MAX_KEY_NAME || n.chars().any(|c| c.is_control()) {
        return Err(DocumentError::BadKeyName(n.clone()));
    }
    Ok(VerifyingKey::from_pem(n, raw.pem.as_bytes())?)
}

impl Document {
    /// A document for `keyset` at `version`, expiring at `expires` (unix seconds), holding `policy` (its keys
    /// keep their names).
    pub fn new(keyset: &str, version: u64, expires: u64, policy: &Policy) -> Result<Document, DocumentError> {
        let RawPolicy { chain, backup, threshold, keys } = RawPolicy::of(policy);
        let raw = RawDocument { keyset: keyset.to_owned(), version, expires, chain, backup, threshold, keys };
        let text = serde_json::to_string(&raw).map_err(|e| DocumentError::Json(e.to_string()))?;
        Self::parse(&text, *policy.limits())
    }

    /// Parses and checks a document; its policy is built with `limits`.
    pub fn parse(text: &str, limits: Limits) -> Result<Document, DocumentError> {
        let raw: RawDocument = serde_json::from_str(text).map_err(|e| DocumentError::Json(e.to_string()))?;
        if !is_keyset_name(&raw.keyset) {
            return Err(DocumentError::BadName(raw.keyset));
        }
        if raw.version == 0 {
            return Err(DocumentError::VersionZero);
        }
        let policy = RawPolicy { chain: raw.chain, backup: raw.backup, threshold: raw.threshold, keys: raw.keys }
            .build(limits)?;
        Ok(Document { keyset: raw.keyset, version: raw.version, expires: raw.expires, policy, text: text.to_owned() })
    }

    /// The keyset it is for.
    pub fn keyset(&self) -> &str {
        &self.keyset
    }

    /// Its version (1 and up).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When it expires (unix seconds): signers set each layer's `exp` no later than this.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The `exp` a signer gives a layer of this update signed at `now`: the document's expiry, capped at the
    /// longest lifetime verifiers accept; `None` when the document has expired.
    pub fn layer_exp(&self, now: u64) -> Option<u64> {
        (self.expires > now).then(|| self.expires.min(now + MAX_UPDATE_LIFETIME_SECS))
    }

    /// The policy it installs.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The JSON text, exactly as signed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The keys of this document that `current` does not hold: each must sign the update.
    pub fn introduced(&self, current: &Policy) -> Vec<&VerifyingKey> {
        self.policy.keys().filter(|k| !current.keys().any(|c| c.same_key(k))).collect()
    }

    /// The keys of `current` this document drops.
    pub fn retired(&self, current: &Policy) -> Vec<VerifyingKey> {
        current.keys().filter(|c| !self.policy.keys().any(|k| k.same_key(c))).cloned().collect()
    }
}

/// An update that passed every check.
#[derive(Debug, Clone)]
pub struct Update {
    /// The new document.
    pub document: Document,
    /// Every layer, outermost first.
    pub layers: Vec<LayerInfo>,
    /// The earliest `exp` of all layers.
    pub expires_at: u64,
    /// Whether the current policy's backup stood in for a chain key.
    pub used_backup: bool,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    /// Not a well-formed update (a bundle token, a malformed layer, a layer of another kind).
    #[error("not a keyset update: {0}")]
    NotAnUpdate(VerifyError),
    /// The document inside is unusable.
    #[error("keyset document: {0}")]
    Document(DocumentError),
    /// The update is for another keyset.
    #[error("the update is for keyset {got:?}, not {want:?}")]
    WrongKeyset {
        /// The document's keyset.
        got: String,
        /// This keyset.
        want: String,
    },
    /// Not above the version held: a replay or a rollback.
    #[error("version {version} is not above the version held ({held}): a replayed or rolled-back update")]
    NotNewer {
        /// The document's version.
        version: u64,
        /// The version held.
        held: u64,
    },
    /// The version jumps too far above the one held.
    #[error("version {version} is more than {} above the version held ({held})", MAX_VERSION_STEP)]
    VersionJump {
        /// The document's version.
        version: u64,
        /// The version held.
        held: u64,
    },
    /// A key of the document carries the name of another key of the current policy: a look-alike.
    #[error("the update names a new key {name:?}, the name of another key the keyset trusts now")]
    NameTaken {
        /// The name.
        name: String,
    },
    /// A layer of a key the update introduces failed (expired, malformed).
    #[error("new key's layer: {0}")]
    NewKeyLayer(VerifyError),
    /// Keys the update introduces did not sign it.
    #[error("the update introduces {} but {} did not sign it: every new key must sign its update", missing.join(", "), if missing.len() == 1 { "it" } else { "they" })]
    MissingNewKey {
        /// The new keys without a layer.
        missing: Vec<String>,
    },
    /// The layers do not satisfy the keyset's current policy.
    #[error("not signed as the keyset's current policy requires: {0}")]
    Current(VerifyError),
}

fn shifted(e: VerifyError, by: usize) -> VerifyError {
    VerifyError { layer: e.layer + by, kind: e.kind }
}

/// Verifies keyset update `token` for keyset `keyset`, whose current policy is `current` at version `held`,
/// at time `now`.
pub fn verify_update(current: &Policy, keyset: &str, held: u64, token: &str, now: u64) -> Result<Update, UpdateError> {
    let token = token.trim();
    let limits = Limits { max_lifetime_secs: MAX_UPDATE_LIFETIME_SECS, ..*current.limits() };
    let (_, payload) = token::innermost_unverified(token, &limits).map_err(UpdateError::NotAnUpdate)?;
    let Payload::Keyset(text) = payload else {
        let kind = K::WrongKind { expected: Kind::KeysetUpdate, got: Kind::Bundle };
        return Err(UpdateError::NotAnUpdate(VerifyError { layer: 0, kind }));
    };
    // Refusals that need no trust in the document: refusing is always safe.
    let document = Document::parse(&text, *current.limits()).map_err(UpdateError::Document)?;
    if document.keyset != keyset {
        return Err(UpdateError::WrongKeyset { got: document.keyset, want: keyset.to_owned() });
    }
    if document.version <= held {
        return Err(UpdateError::NotNewer { version: document.version, held });
    }
    if document.version - held > MAX_VERSION_STEP {
        return Err(UpdateError::VersionJump { version: document.version, held });
    }
    if let Some(k) = document.policy.keys().find(|k| current.keys().any(|c| c.name() == k.name() && !c.same_key(k))) {
        return Err(UpdateError::NameTaken { name: k.name().to_owned() });
    }
    // The new keys' layers, outermost.
    let mut unsigned = document.introduced(current);
    let mut layers = Vec::new();
    let mut rest = Some(token.to_owned());
    while let (false, Some(current_token)) = (unsigned.is_empty(), rest.as_deref()) {
        let depth = layers.len();
        let layer = match token::verify_layer_of(Kind::KeysetUpdate, current_token, &unsigned, now, &limits) {
            Ok(l) => l,
            Err(e) if matches!(e.kind, K::BadSignature { .. } | K::AlgMismatch { .. }) => break,
            Err(e) => return Err(UpdateError::NewKeyLayer(shifted(e, depth))),
        };
        unsigned.retain(|k| !std::ptr::eq(*k, layer.key));
        layers.push(LayerInfo::of(depth, layer.key, false, &layer.claims));
        let c = layer.claims;
        rest = match c.payload {
            Payload::Token(inner) => Some(inner),
            _ => None,
        };
    }
    let depth = layers.len();
    let peeled = match &rest {
        Some(rest) => current.peel(Kind::KeysetUpdate, rest, now, &limits).map_err(|e| shifted(e, depth)),
        None => Err(VerifyError { layer: depth, kind: K::TooFewLayers(current.chain().len().max(1)) }),
    };
    if !unsigned.is_empty() {
        // Say what is wrong with the part that should satisfy the current policy first: a layer by an unknown
        // key is that, not a missing new key.
        peeled.map_err(UpdateError::Current)?;
        return Err(UpdateError::MissingNewKey { missing: unsigned.iter().map(|k| k.name().to_owned()).collect() });
    }
    let peeled = peeled.map_err(UpdateError::Current)?;
    if peeled.payload != Payload::Keyset(text) {
        let kind = K::WrongKind { expected: Kind::KeysetUpdate, got: Kind::Bundle };
        return Err(UpdateError::NotAnUpdate(VerifyError { layer: depth, kind }));
    }
    layers.extend(peeled.layers.into_iter().map(|l| LayerInfo { depth: l.depth + depth, ..l }));
    let expires_at = layers.iter().map(|l| l.exp).min().unwrap_or(0);
    Ok(Update { document, layers, expires_at, used_backup: peeled.used_backup })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_names() {
        for good in ["main", "a-b_c", "X9"] {
            assert!(is_keyset_name(good), "{good}");
        }
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(!is_keyset_name(bad), "{bad}");
        }
    }
}
