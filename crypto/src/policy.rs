//! The verification policy of a keyset, one of two kinds:
//! - a chain: `chain` lists the keys in signing order (first = innermost signer, last = outermost co-signer); an
//!   optional `backup` key may stand in for at most one chain key; the token has exactly as many layers;
//! - a threshold: `threshold: K` over `keys`: at least K layers, each signed by a different key of the set, in
//!   any order; no key counted twice, no layer by a key outside the set.
//!
//! Invariants: EVERY layer's signature and time claims verify (the Go original let outer layers through
//! unverified when a backup was configured); the innermost payload is a bundle with at least one CA certificate.

use crate::bundle::Bundle;
use crate::error::{PolicyError, VerifyError, VerifyErrorKind as K};
use crate::keys::VerifyingKey;
use crate::token::{self, Kind, Payload};
use crate::Limits;

/// A keyset's policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rule: Rule,
    limits: Limits,
}

#[derive(Debug, Clone)]
enum Rule {
    Chain { chain: Vec<VerifyingKey>, backup: Option<VerifyingKey> },
    Threshold { threshold: usize, keys: Vec<VerifyingKey> },
}

fn distinct<'a>(keys: impl Iterator<Item = &'a VerifyingKey>) -> Result<(), PolicyError> {
    let all: Vec<&VerifyingKey> = keys.collect();
    for (i, a) in all.iter().enumerate() {
        if all[..i].iter().any(|b| b.same_key(a)) {
            return Err(PolicyError::DuplicateKey(a.name().to_owned()));
        }
    }
    Ok(())
}

/// Why a verified token is not for the trust domain a keyset is bound to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustDomainError {
    /// The innermost signer bound it to no trust domain.
    #[error("the token is bound to no trust domain; this keyset accepts only {want}")]
    Unbound {
        /// The keyset's.
        want: String,
    },
    /// The innermost signer bound it to another trust domain.
    #[error("the token is signed for trust domain {got}, this keyset is for {want}")]
    Signed {
        /// The token's.
        got: String,
        /// The keyset's.
        want: String,
    },
    /// A CA certificate of the bundle names another trust domain.
    #[error("the bundle holds a CA certificate of trust domain {got}, this keyset is for {want}")]
    Certificate {
        /// The certificate's.
        got: String,
        /// The keyset's.
        want: String,
    },
}

impl Verified {
    /// Checks that the token was signed for `want` and that no CA certificate in it names another trust domain.
    pub fn check_trust_domain(&self, want: &str) -> Result<(), TrustDomainError> {
        match self.trust_domain.as_deref() {
            None => return Err(TrustDomainError::Unbound { want: want.to_owned() }),
            Some(got) if got != want => {
                return Err(TrustDomainError::Signed { got: got.to_owned(), want: want.to_owned() })
            }
            Some(_) => {}
        }
        if let Some(got) = self.bundle.spiffe_trust_domains().into_iter().find(|td| td != want) {
            return Err(TrustDomainError::Certificate { got, want: want.to_owned() });
        }
        Ok(())
    }
}

fn names(keys: &[&VerifyingKey]) -> Vec<String> {
    keys.iter().map(|k| k.name().to_owned()).collect()
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

impl LayerInfo {
    /// The record of a layer at `depth` that `key` verified.
    pub(crate) fn of(depth: usize, key: &VerifyingKey, backup: bool, c: &token::Claims) -> LayerInfo {
        LayerInfo {
            depth,
            key_name: key.name().to_owned(),
            backup,
            iss: c.iss.clone(),
            iat: c.iat,
            nbf: c.nbf,
            exp: c.exp,
        }
    }
}

/// What peeling every layer under a policy leaves: the layers and the innermost payload.
#[derive(Debug)]
pub(crate) struct Peeled {
    pub(crate) layers: Vec<LayerInfo>,
    pub(crate) used_backup: bool,
    pub(crate) payload: Payload,
    pub(crate) trust_domain: Option<String>,
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
    /// The trust domain the innermost signer bound the bundle to (claim `spiffetd`), if it did.
    pub trust_domain: Option<String>,
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
        distinct(chain.iter().chain(backup.iter()))?;
        Ok(Policy { rule: Rule::Chain { chain, backup }, limits })
    }

    /// Builds a threshold policy: `threshold` of `keys` (distinct, at most `limits.max_depth`) must sign.
    pub fn threshold(threshold: usize, keys: Vec<VerifyingKey>, limits: Limits) -> Result<Policy, PolicyError> {
        if keys.is_empty() {
            return Err(PolicyError::EmptyChain);
        }
        if keys.len() > limits.max_depth {
            return Err(PolicyError::TooLong(keys.len(), limits.max_depth));
        }
        if threshold == 0 || threshold > keys.len() {
            return Err(PolicyError::BadThreshold { threshold, keys: keys.len() });
        }
        distinct(keys.iter())?;
        Ok(Policy { rule: Rule::Threshold { threshold, keys }, limits })
    }

    /// A chain policy's chain, in signing order; empty for a threshold policy.
    pub fn chain(&self) -> &[VerifyingKey] {
        match &self.rule {
            Rule::Chain { chain, .. } => chain,
            Rule::Threshold { .. } => &[],
        }
    }

    /// A chain policy's backup key, if any.
    pub fn backup(&self) -> Option<&VerifyingKey> {
        match &self.rule {
            Rule::Chain { backup, .. } => backup.as_ref(),
            Rule::Threshold { .. } => None,
        }
    }

    /// A threshold policy's threshold and keys.
    pub fn threshold_keys(&self) -> Option<(usize, &[VerifyingKey])> {
        match &self.rule {
            Rule::Chain { .. } => None,
            Rule::Threshold { threshold, keys } => Some((*threshold, keys)),
        }
    }

    /// Every key the policy trusts (chain and backup, or the threshold's set).
    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.chain().iter().chain(self.backup()).chain(self.threshold_keys().map(|(_, k)| k).unwrap_or(&[]))
    }

    /// The limits tokens are checked with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Verifies every layer of bundle token `token` at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, VerifyError> {
        let p = self.peel(Kind::Bundle, token, now, &self.limits)?;
        let at = |kind| VerifyError { layer: p.layers.len().saturating_sub(1), kind };
        let Payload::Bundle(text) = p.payload else {
            return Err(at(K::WrongKind { expected: Kind::Bundle, got: Kind::KeysetUpdate }));
        };
        let bundle = Bundle::parse(&text).map_err(|e| at(K::NotABundle(e)))?;
        let expires_at = p.layers.iter().map(|l| l.exp).min().unwrap_or(0);
        let signed_at = p.layers.last().map(|l| l.iat).unwrap_or(0);
        Ok(Verified {
            bundle,
            layers: p.layers,
            expires_at,
            signed_at,
            used_backup: p.used_backup,
            trust_domain: p.trust_domain,
        })
    }

    /// Verifies every layer of `token`, a token of `kind`, with `limits`; returns the layers and the innermost
    /// payload (a bundle or a keyset document, never a token).
    pub(crate) fn peel(&self, kind: Kind, token: &str, now: u64, limits: &Limits) -> Result<Peeled, VerifyError> {
        match &self.rule {
            Rule::Chain { chain, backup } => self.peel_chain(kind, chain, backup.as_ref(), token, now, limits),
            Rule::Threshold { threshold, keys } => self.peel_threshold(kind, *threshold, keys, token, now, limits),
        }
    }

    fn peel_threshold(
        &self,
        kind: Kind,
        threshold: usize,
        keys: &[VerifyingKey],
        token: &str,
        now: u64,
        limits: &Limits,
    ) -> Result<Peeled, VerifyError> {
        let mut current = token.trim().to_owned();
        let mut signed: Vec<&VerifyingKey> = Vec::new();
        let mut layers = Vec::new();
        for depth in 0..keys.len() {
            let at = |kind| VerifyError { layer: depth, kind };
            // Last key first: a token signed in the set's order (first key innermost, as a chain is) costs one
            // signature check per layer; any other order at most one per key not yet counted.
            let unused: Vec<&VerifyingKey> =
                keys.iter().rev().filter(|k| !signed.iter().any(|s| s.same_key(k))).collect();
            let layer = token::verify_layer_of(kind, &current, &unused, now, limits).map_err(|e| {
                at(match e.kind {
                    K::BadSignature { .. } | K::AlgMismatch { .. } => {
                        match signed.iter().find(|k| token::signed_by(&current, k, limits)) {
                            Some(again) => K::SameKeyTwice(again.name().to_owned()),
                            None => K::NotInKeySet(names(&unused).into_iter().rev().collect::<Vec<_>>().join(", ")),
                        }
                    }
                    other => other,
                })
            })?;
            signed.push(layer.key);
            layers.push(LayerInfo::of(depth, layer.key, false, &layer.claims));
            let c = layer.claims;
            current = match c.payload {
                Payload::Token(inner) => inner,
                payload => {
                    if signed.len() < threshold {
                        let missing = keys.iter().filter(|k| !signed.iter().any(|s| s.same_key(k))).collect::<Vec<_>>();
                        return Err(at(K::ThresholdNotMet {
                            needed: threshold,
                            signed: names(&signed),
                            missing: names(&missing),
                        }));
                    }
                    return Ok(Peeled { layers, used_backup: false, payload, trust_domain: c.trust_domain });
                }
            };
        }
        // Every key signed a layer and there is still another: one too many.
        Err(VerifyError { layer: keys.len(), kind: K::TooManyLayers(keys.len()) })
    }

    fn peel_chain(
        &self,
        kind: Kind,
        chain: &[VerifyingKey],
        backup: Option<&VerifyingKey>,
        token: &str,
        now: u64,
        limits: &Limits,
    ) -> Result<Peeled, VerifyError> {
        let n = chain.len();
        let mut current = token.trim().to_owned();
        let mut backup_used = false;
        let mut layers = Vec::with_capacity(n);
        for depth in 0..n {
            let at = |kind| VerifyError { layer: depth, kind };
            let expected = &chain[n - 1 - depth];
            let mut keys = vec![expected];
            if let Some(b) = backup.filter(|_| !backup_used) {
                keys.push(b);
            }
            let layer = match token::verify_layer_of(kind, &current, &keys, now, limits) {
                Ok(l) => l,
                Err(e) => return Err(at(self.diagnose(&current, e.kind, expected, backup_used, limits))),
            };
            let backup = !std::ptr::eq(layer.key, expected);
            backup_used |= backup;
            layers.push(LayerInfo::of(depth, layer.key, backup, &layer.claims));
            let c = layer.claims;
            let innermost = depth == n - 1;
            current = match (c.payload, innermost) {
                (Payload::Token(inner), false) => inner,
                (_, false) => return Err(at(K::TooFewLayers(n))),
                (Payload::Token(_), true) => return Err(at(K::TooManyLayers(n))),
                (payload, true) => {
                    return Ok(Peeled { layers, used_backup: backup_used, payload, trust_domain: c.trust_domain });
                }
            };
        }
        // The loop returns at the innermost layer.
        Err(VerifyError { layer: n, kind: K::TooFewLayers(n) })
    }

    /// Refines a signature failure: a layer signed by another chain key means the layers are out of order; a
    /// layer signed by the backup after the backup already stood in is a second use.
    fn diagnose(&self, token: &str, kind: K, expected: &VerifyingKey, backup_used: bool, limits: &Limits) -> K {
        if !matches!(kind, K::BadSignature { .. }) {
            return kind;
        }
        if backup_used && self.backup().is_some_and(|b| token::signed_by(token, b, limits)) {
            return K::BackupAlreadyUsed;
        }
        if let Some(other) = self.chain().iter().find(|k| !k.same_key(expected) && token::signed_by(token, k, limits)) {
            return K::WrongOrder { found: other.name().to_owned(), expected: expected.name().to_owned() };
        }
        K::BadSignature { expected: expected.name().to_owned(), backup_tried: self.backup().is_some() && !backup_used }
    }
}
