//! The verification policy of a keyset: `chain` lists the keys in signing order (first = innermost signer,
//! last = outermost co-signer); an optional `backup` key may stand in for at most one chain key.
//!
//! Invariants: the token must have exactly as many layers as the chain has keys; EVERY layer's signature and
//! time claims verify (the Go original let outer layers through unverified when a backup was configured);
//! the innermost payload is a bundle with at least one CA certificate.

use crate::bundle::Bundle;
use crate::error::{PolicyError, VerifyError, VerifyErrorKind as K};
use crate::keys::VerifyingKey;
use crate::token::{self, Payload};
use crate::Limits;

/// A keyset's policy.
#[derive(Debug, Clone)]
pub struct Policy {
    chain: Vec<VerifyingKey>,
    backup: Option<VerifyingKey>,
    limits: Limits,
}

/// One verified layer, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// 0 = outermost.
    pub depth: usize,
    /// Name of the key that verified it.
    pub key_name: String,
    /// Whether that key was the backup.
    pub backup: bool,
    /// Issuer.
    pub iss: String,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires.
    pub exp: u64,
}

/// A token that passed the policy.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The innermost bundle.
    pub bundle: Bundle,
    /// The layers, outermost first.
    pub layers: Vec<LayerInfo>,
    /// The earliest `exp` of all layers: the token is good until then.
    pub expires_at: u64,
    /// The innermost `iat`: when the bundle was signed (the rollback counter).
    pub signed_at: u64,
    /// Whether the backup key stood in for a chain key.
    pub used_backup: bool,
}

impl Policy {
    /// Builds a policy. Keys must be distinct; the chain is not empty and no longer than `limits.max_depth`.
    pub fn new(chain: Vec<VerifyingKey>, backup: Option<VerifyingKey>, limits: Limits) -> Result<Policy, PolicyError> {
        if chain.is_empty() {
            return Err(PolicyError::EmptyChain);
        }
        if chain.len() > limits.max_depth {
            return Err(PolicyError::TooLong(chain.len(), limits.max_depth));
        }
        let all: Vec<&VerifyingKey> = chain.iter().chain(backup.iter()).collect();
        for (i, a) in all.iter().enumerate() {
            if all[..i].iter().any(|b| b.same_key(a)) {
                return Err(PolicyError::DuplicateKey(a.name().to_owned()));
            }
        }
        Ok(Policy { chain, backup, limits })
    }

    /// The chain, in signing order.
    pub fn chain(&self) -> &[VerifyingKey] {
        &self.chain
    }

    /// The backup key, if any.
    pub fn backup(&self) -> Option<&VerifyingKey> {
        self.backup.as_ref()
    }

    /// Verifies every layer of `token` at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, VerifyError> {
        let n = self.chain.len();
        let mut current = token.trim().to_owned();
        let mut backup_used = false;
        let mut layers = Vec::with_capacity(n);
        for depth in 0..n {
            let at = |kind| VerifyError { layer: depth, kind };
            let expected = &self.chain[n - 1 - depth];
            let mut keys = vec![expected];
            if let Some(b) = self.backup.as_ref().filter(|_| !backup_used) {
                keys.push(b);
            }
            let layer = match token::verify_layer(&current, &keys, now, &self.limits) {
                Ok(l) => l,
                Err(e) => return Err(at(self.diagnose(&current, e.kind, expected, backup_used))),
            };
            let backup = !std::ptr::eq(layer.key, expected);
            backup_used |= backup;
            let c = layer.claims;
            layers.push(LayerInfo {
                depth,
                key_name: layer.key.name().to_owned(),
                backup,
                iss: c.iss,
                iat: c.iat,
                nbf: c.nbf,
                exp: c.exp,
            });
            let innermost = depth == n - 1;
            current = match (c.payload, innermost) {
                (Payload::Token(inner), false) => inner,
                (Payload::Bundle(_), false) => return Err(at(K::TooFewLayers(n))),
                (Payload::Token(_), true) => return Err(at(K::TooManyLayers(n))),
                (Payload::Bundle(text), true) => {
                    let bundle = Bundle::parse(&text).map_err(|e| at(K::NotABundle(e)))?;
                    let expires_at = layers.iter().map(|l| l.exp).min().unwrap_or(0);
                    let signed_at = layers.last().map(|l| l.iat).unwrap_or(0);
                    return Ok(Verified { bundle, layers, expires_at, signed_at, used_backup: backup_used });
                }
            };
        }
        // The loop returns at the innermost layer.
        Err(VerifyError { layer: n, kind: K::TooFewLayers(n) })
    }

    /// Refines a signature failure: a layer signed by another chain key means the layers are out of order; a
    /// layer signed by the backup after the backup already stood in is a second use.
    fn diagnose(&self, token: &str, kind: K, expected: &VerifyingKey, backup_used: bool) -> K {
        if !matches!(kind, K::BadSignature { .. }) {
            return kind;
        }
        if backup_used && self.backup.as_ref().is_some_and(|b| token::signed_by(token, b, &self.limits)) {
            return K::BackupAlreadyUsed;
        }
        if let Some(other) =
            self.chain.iter().find(|k| !k.same_key(expected) && token::signed_by(token, k, &self.limits))
        {
            return K::WrongOrder { found: other.name().to_owned(), expected: expected.name().to_owned() };
        }
        K::BadSignature { expected: expected.name().to_owned(), backup_tried: self.backup.is_some() && !backup_used }
    }
}
