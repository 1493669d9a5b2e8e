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
#[non_exhaustive]
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
    /// A certificate of the bundle carries a SPIFFE ID that does not parse.
    #[error("{0}")]
    BadCertificate(crate::BundleError),
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
    pub fn check_trust_domain(&self, want: &crate::TrustDomain) -> Result<(), TrustDomainError> {
        let want = want.as_str();
        match self.trust_domain.as_deref() {
            None => return Err(TrustDomainError::Unbound { want: want.to_owned() }),
            Some(got) if got != want => {
                return Err(TrustDomainError::Signed { got: got.to_owned(), want: want.to_owned() })
            }
            Some(_) => {}
        }
        let domains = self.bundle.spiffe_trust_domains().map_err(TrustDomainError::BadCertificate)?;
        if let Some(got) = domains.into_iter().find(|td| td != want) {
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
    /// That key's fingerprint (hex SHA-256 of its canonical SubjectPublicKeyInfo).
    pub key_fingerprint: String,
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
            key_fingerprint: key.fingerprint().to_owned(),
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

/// The policy in a few words, naming its keys: `chain a.pem, b.pem, backup c.pem` or `threshold 2 of a.pem,
/// b.pem, c.pem` (for refusals that say which keys a token was checked against).
impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |keys: &[VerifyingKey]| keys.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
        match &self.rule {
            Rule::Chain { chain, backup } => {
                write!(f, "chain {}", names(chain))?;
                match backup {
                    Some(b) => write!(f, ", backup {}", b.name()),
                    None => Ok(()),
                }
            }
            Rule::Threshold { threshold, keys } => write!(f, "threshold {threshold} of {}", names(keys)),
        }
    }
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
                Err(e) if matches!(e.kind, K::BadSignature { .. } | K::AlgMismatch { .. }) => {
                    return Err(self.explain(token, at(e.kind), limits))
                }
                // Anything else (a malformed layer, another kind of token, a time) is exactly what it says.
                Err(e) => return Err(at(e.kind)),
            };
            let backup = !std::ptr::eq(layer.key, expected);
            backup_used |= backup;
            layers.push(LayerInfo::of(depth, layer.key, backup, &layer.claims));
            let c = layer.claims;
            let innermost = depth == n - 1;
            current = match (c.payload, innermost) {
                (Payload::Token(inner), false) => inner,
                (_, false) => return Err(self.explain(token, at(K::TooFewLayers(n)), limits)),
                (Payload::Token(_), true) => return Err(self.explain(token, at(K::TooManyLayers(n)), limits)),
                (payload, true) => {
                    return Ok(Peeled { layers, used_backup: backup_used, payload, trust_domain: c.trust_domain });
                }
            };
        }
        // The loop returns at the innermost layer.
        Err(VerifyError { layer: n, kind: K::TooFewLayers(n) })
    }

    /// Says what is really wrong with chain token `token` when `failed` (a signature that does not verify
    /// with the key expected at its layer, or too few or too many layers) refused it: who signed each layer is
    /// compared with the chain, and the first of these that holds is the reason: a layer signed by none of the
    /// keys (`failed` itself, which names the key expected there); a key, or the backup, that signed two
    /// layers; more layers than the chain has keys; chain keys in the wrong order; chain keys with no layer (a
    /// side-a token that lacks b's co-signature is that, not an order problem); else a chain key where another
    /// belongs. Runs only on a refusal, at most `max_depth + 1` layers times the keys in signature checks.
    fn explain(&self, token: &str, failed: VerifyError, limits: &Limits) -> VerifyError {
        let (chain, backup) = (self.chain(), self.backup());
        let n = chain.len();
        let keys: Vec<&VerifyingKey> = chain.iter().chain(backup).collect();
        let at = |layer, kind| VerifyError { layer, kind };
        let name = |i: usize| keys[i].name().to_owned();
        // Expected at layer d (0 = outermost): chain[n - 1 - d].
        let expected_at = |d: usize| chain.get(n.wrapping_sub(1 + d)).map(|k| k.name().to_owned());
        let Some(who) = signers(token, &keys, limits).into_iter().collect::<Option<Vec<usize>>>() else {
            return failed;
        };
        for (d, i) in who.iter().enumerate() {
            if who[..d].contains(i) {
                return at(d, if *i == n { K::BackupAlreadyUsed } else { K::SameKeyTwice(name(*i)) });
            }
        }
        if who.len() > n {
            return at(0, K::TooManyLayers(n));
        }
        // Chain keys only (the backup may stand anywhere), outermost first: their chain positions must fall.
        let placed: Vec<(usize, usize)> = who.iter().copied().enumerate().filter(|&(_, i)| i < n).collect();
        if let Some(w) = placed.windows(2).find(|w| w[0].1 < w[1].1) {
            let (d, i) = w[0];
            let expected = expected_at(d).unwrap_or_else(|| name(w[1].1));
            return at(d, K::WrongOrder { found: name(i), expected });
        }
        let backup_used = who.contains(&n);
        let missing: Vec<String> = (0..n).filter(|i| !who.contains(i)).map(name).collect();
        if missing.len() > usize::from(backup_used) {
            let layer = who.len().min(failed.layer);
            return at(layer, K::MissingLayers { missing, layers: who.len(), needed: n, backup_used });
        }
        match (&failed.kind, who.get(failed.layer)) {
            (K::BadSignature { .. } | K::AlgMismatch { .. }, Some(&i)) if i < n => {
                let expected = expected_at(failed.layer).unwrap_or_default();
                at(failed.layer, K::WrongOrder { found: name(i), expected })
            }
            _ => failed,
        }
    }
}

/// Who signed each layer of `token`, outermost first: the index in `keys` of the key whose signature verifies,
/// or `None`. Signatures only (no times, no claims): for explaining a refusal, never for accepting.
fn signers(token: &str, keys: &[&VerifyingKey], limits: &Limits) -> Vec<Option<usize>> {
    let mut out = Vec::new();
    let mut current = token.trim().to_owned();
    for _ in 0..=limits.max_depth {
        out.push(keys.iter().position(|k| token::signed_by(&current, k, limits)));
        match token::outer_payload_unverified(&current, limits) {
            Ok(Payload::Token(inner)) => current = inner,
            _ => break,
        }
    }
    out
}
