//! The crate's error types. Messages name the layer, the key (by its configured name) and the reason; they
//! never carry key material or the token itself.

use crate::Alg;

/// A public key could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum KeyError {
    /// No PEM block, or not the PEM block of a public key.
    #[error("key {name}: not a PEM public key ({reason})")]
    NotPem {
        /// The key's name.
        name: String,
        /// What was found instead.
        reason: String,
    },
    /// The DER inside could not be decoded.
    #[error("key {name}: malformed public key")]
    Malformed {
        /// The key's name.
        name: String,
    },
    /// A key type this project does not sign with.
    #[error("key {name}: unsupported key type {found} (use RSA >= 2048 bits or ECC P-256)")]
    Unsupported {
        /// The key's name.
        name: String,
        /// What it is.
        found: String,
    },
}

/// A trust bundle could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum BundleError {
    /// Neither PEM certificates nor SPIFFE bundle JSON.
    #[error("no certificates: neither PEM nor SPIFFE bundle JSON")]
    NoCertificates,
    /// A PEM block other than CERTIFICATE.
    #[error("PEM block {0:?} is not a CERTIFICATE")]
    NotCertificate(String),
    /// A PEM block whose base64 or framing is broken.
    #[error("malformed PEM block")]
    BadPem,
    /// A certificate that does not parse as X.509.
    #[error("certificate {index} does not parse as X.509")]
    BadCertificate {
        /// Position in the bundle.
        index: usize,
    },
    /// SPIFFE JSON that does not follow the bundle format.
    #[error("SPIFFE bundle JSON: {0}")]
    BadJson(String),
    /// No certificate is a CA.
    #[error("no CA certificate (basicConstraints cA=true) in the bundle")]
    NoCaCertificate,
    /// Too many certificates.
    #[error("more than {0} certificates")]
    TooMany(usize),
    /// A certificate carries a `spiffe` URI whose trust domain is not a valid trust domain name.
    #[error(
        "certificate {index} carries SPIFFE ID {uri:?}, whose trust domain is not valid (a-z, 0-9, '.', '-', '_')"
    )]
    BadSpiffeId {
        /// Position in the bundle.
        index: usize,
        /// The URI (its first 120 characters).
        uri: String,
    },
    /// A certificate whose key cannot be served in SPIFFE form (only RSA and EC P-256/384/521 can): a bundle is
    /// refused whole rather than served differently in PEM and in SPIFFE JSON.
    #[error("certificate {index} has a key type SPIFFE bundles cannot carry (RSA or EC P-256/P-384/P-521 only)")]
    UnsupportedKey {
        /// Position in the bundle.
        index: usize,
    },
}

/// A token could not be assembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The signature has the wrong length for the algorithm.
    #[error("{alg} signature must be {want} bytes, got {got}")]
    SignatureLength {
        /// The algorithm.
        alg: Alg,
        /// Expected length.
        want: usize,
        /// Actual length.
        got: usize,
    },
}

/// A verification policy could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PolicyError {
    /// The chain has no keys.
    #[error("chain needs at least one key")]
    EmptyChain,
    /// The chain is longer than the depth limit.
    #[error("chain has {0} keys; at most {1}")]
    TooLong(usize, usize),
    /// The same key twice.
    #[error("key {0} appears twice in the chain and backup")]
    DuplicateKey(String),
    /// A threshold of 0, or above the number of keys.
    #[error("threshold {threshold} needs 1..={keys} (the number of keys)")]
    BadThreshold {
        /// The threshold.
        threshold: usize,
        /// How many keys there are.
        keys: usize,
    },
}

/// Why a token was refused: the layer (0 = outermost) and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[error("layer {layer}: {kind}")]
pub struct VerifyError {
    /// Which layer failed; 0 is the outermost.
    pub layer: usize,
    /// What failed.
    pub kind: VerifyErrorKind,
}

/// The reasons a token layer is refused. Each has its own variant so tests and callers can tell them apart.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// Empty input.
    #[error("empty token")]
    Empty,
    /// Larger than the limit.
    #[error("token larger than {0} bytes")]
    TooLarge(usize),
    /// Not three dot-separated parts.
    #[error("not a compact JWS (three base64url parts separated by dots)")]
    Malformed,
    /// A part is not base64url.
    #[error("{0} is not base64url")]
    Base64(&'static str),
    /// A layer of the other kind of token (a keyset update offered as a bundle token, or the reverse).
    #[error("{got}, not {expected}")]
    WrongKind {
        /// What the caller verifies.
        expected: crate::token::Kind,
        /// What the layer is.
        got: crate::token::Kind,
    },
    /// Header or claims are not the JSON expected.
    #[error("{part} is not valid JSON: {reason}")]
    Json {
        /// "header" or "claims".
        part: &'static str,
        /// The parser's reason.
        reason: String,
    },
    /// `alg: none`.
    #[error("alg \"none\" is never accepted")]
    AlgNone,
    /// An algorithm we never accept (HS*, PS*, RS384...).
    #[error("alg {0:?} is not accepted (RS256 or ES256 only)")]
    AlgNotAllowed(String),
    /// The header's algorithm does not match the key type.
    #[error("alg {header} in the header does not match key {key} ({key_alg})")]
    AlgMismatch {
        /// The header's algorithm.
        header: Alg,
        /// The expected key's name.
        key: String,
        /// The expected key's algorithm.
        key_alg: Alg,
    },
    /// A header we refuse to trust (crit, jku, jwk, x5u, x5c).
    #[error("header {0:?} is not accepted")]
    ForbiddenHeader(&'static str),
    /// `typ` other than JWT.
    #[error("typ {0:?} is not JWT")]
    WrongType(String),
    /// The signature does not verify with the expected key (nor the backup, when tried).
    #[error("signature does not verify with {expected}{}", if *.backup_tried { " nor the backup key" } else { "" })]
    BadSignature {
        /// The key expected for this layer.
        expected: String,
        /// Whether the backup key was tried too.
        backup_tried: bool,
    },
    /// The layer is signed by another chain key: the layers are in the wrong order.
    #[error("signed by {found}, but {expected} signs this layer: chain layers in the wrong order")]
    WrongOrder {
        /// The key that signed it.
        found: String,
        /// The key expected here.
        expected: String,
    },
    /// The backup key signed this layer, but it already stood in for another layer.
    #[error("the backup key already stood in for another layer; it may replace only one")]
    BackupAlreadyUsed,
    /// No `exp`.
    #[error("exp is required")]
    MissingExp,
    /// No `iat`.
    #[error("iat is required")]
    MissingIat,
    /// Past `exp`.
    #[error("expired at {exp} (now {now})")]
    Expired {
        /// The `exp` claim.
        exp: u64,
        /// The verification time.
        now: u64,
    },
    /// Before `nbf`.
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The `nbf` claim.
        nbf: u64,
        /// The verification time.
        now: u64,
    },
    /// `iat` in the future.
    #[error("issued in the future ({iat}, now {now})")]
    IssuedInFuture {
        /// The `iat` claim.
        iat: u64,
        /// The verification time.
        now: u64,
    },
    /// `exp - iat` beyond the limit, or not positive.
    #[error("validity of {secs} s is outside 1..={max} s")]
    LifetimeTooLong {
        /// `exp - iat`.
        secs: i128,
        /// The limit.
        max: u64,
    },
    /// A time claim that is not a non-negative number.
    #[error("claim {0} is not a valid time")]
    BadTime(&'static str),
    /// Both or neither of `spiffetb` / `jwt`, or the wrong one for this depth.
    #[error("expected claim {expected}")]
    WrongPayloadKind {
        /// "spiffetb" or "jwt".
        expected: &'static str,
    },
    /// A threshold policy: fewer distinct keys of the set signed than the threshold.
    #[error("{needed} of the keyset's keys must sign; signed by {} ({}), missing {}", signed.len(), list(signed), list(missing))]
    ThresholdNotMet {
        /// The threshold.
        needed: usize,
        /// The keys whose layers verified, outermost first.
        signed: Vec<String>,
        /// The keys of the set that did not sign.
        missing: Vec<String>,
    },
    /// A key signed a second layer (each key signs one layer at most).
    #[error("key {0} signed a second layer; each key signs one layer at most")]
    SameKeyTwice(String),
    /// A threshold policy: the layer is signed by none of the set's keys that have not signed yet.
    #[error("signed by none of the keyset's keys that have not signed yet ({0})")]
    NotInKeySet(String),
    /// Chain keys signed no layer: the token has fewer layers than the chain (a side's token that lacks its
    /// co-signature).
    #[error("no layer by {}{}: the token has {layers} of the chain's {needed} layers", missing.join(", "), if *backup_used { " (the backup stands in for one of them)" } else { "" })]
    MissingLayers {
        /// The chain keys without a layer, innermost first.
        missing: Vec<String>,
        /// The layers the token has.
        layers: usize,
        /// The layers the chain needs.
        needed: usize,
        /// Whether the backup signed one of the layers.
        backup_used: bool,
    },
    /// The token has fewer layers than the chain has keys.
    #[error("too few layers: the chain needs {0}")]
    TooFewLayers(usize),
    /// The token has more layers than the chain has keys.
    #[error("too many layers: the chain has {0}")]
    TooManyLayers(usize),
    /// The innermost payload is not a usable bundle.
    #[error("payload is not a trust bundle: {0}")]
    NotABundle(BundleError),
}

/// `a, b, c`, or `none`.
fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl VerifyErrorKind {
    /// A short, fixed name for the kind of refusal (a metric label): `malformed`, `wrong_kind`, `signature`,
    /// `expired`, `time`, `threshold`, `layers` or `not_a_bundle`.
    pub fn class(&self) -> &'static str {
        use VerifyErrorKind as K;
        match self {
            K::Empty
            | K::TooLarge(_)
            | K::Malformed
            | K::Base64(_)
            | K::Json { .. }
            | K::AlgNone
            | K::AlgNotAllowed(_)
            | K::ForbiddenHeader(_)
            | K::WrongType(_)
            | K::WrongPayloadKind { .. } => "malformed",
            K::WrongKind { .. } => "wrong_kind",
            K::AlgMismatch { .. }
            | K::BadSignature { .. }
            | K::WrongOrder { .. }
            | K::BackupAlreadyUsed
            | K::SameKeyTwice(_)
            | K::NotInKeySet(_) => "signature",
            K::Expired { .. } => "expired",
            K::MissingExp
            | K::MissingIat
            | K::NotYetValid { .. }
            | K::IssuedInFuture { .. }
            | K::LifetimeTooLong { .. }
            | K::BadTime(_) => "time",
            K::ThresholdNotMet { .. } => "threshold",
            K::TooFewLayers(_) | K::TooManyLayers(_) | K::MissingLayers { .. } => "layers",
            K::NotABundle(_) => "not_a_bundle",
        }
    }
}
