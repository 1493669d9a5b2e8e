//! The token format: compact JWS with header `{"alg":"RS256","typ":"JWT"}` (or ES256) and claims
//! `{"spiffetb":"<bundle>"|"jwt":"<inner token>","iss":..,["spiffetd":..,]"exp":..,"nbf":..,"iat":..}`, byte-compatible with
//! the Go original (golang-jwt v5: field order as above, integer NumericDates, Go's HTML-safe string escaping).
//!
//! A keyset update (ours) has the same shape with `typ` `spiffe-keyset+jwt` in EVERY layer and the keyset
//! document in claim `spiffeks` at the innermost one ([`Kind`]): a bundle verifier refuses its first header, an
//! update verifier refuses a bundle token's, and neither kind's innermost claim is accepted in the other.
//!
//! Invariant: a layer is accepted only after its signature verified with a key whose type matches the header's
//! `alg`, and its `exp` (required), `nbf`, `iat` and lifetime passed; claims are parsed only after the
//! signature verified.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use sha2::Digest;

use crate::error::{VerifyError, VerifyErrorKind as K};
use crate::keys::VerifyingKey;
use crate::{Alg, Limits};

mod build;
pub use build::{claims_json, header_json, TokenBuilder};

/// The two kinds of token, told apart by the header's `typ` in every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A trust bundle token (`typ` `JWT`, or none, as golang-jwt writes and reads it).
    Bundle,
    /// A signed keyset update (`typ` `spiffe-keyset+jwt`).
    KeysetUpdate,
}

impl Kind {
    /// The header's `typ`.
    pub fn typ(self) -> &'static str {
        match self {
            Kind::Bundle => "JWT",
            Kind::KeysetUpdate => KEYSET_TYP,
        }
    }

    /// The innermost payload claim of this kind.
    pub fn terminal_claim(self) -> &'static str {
        match self {
            Kind::Bundle => "spiffetb",
            Kind::KeysetUpdate => "spiffeks",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Bundle => "a bundle token",
            Kind::KeysetUpdate => "a keyset update",
        })
    }
}

/// The `typ` of every layer of a keyset update.
pub const KEYSET_TYP: &str = "spiffe-keyset+jwt";

/// What a layer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Claim `spiffetb`: the bundle text (PEM or SPIFFE JSON).
    Bundle(String),
    /// Claim `jwt`: the previous compact token, wrapped by a co-signer.
    Token(String),
    /// Claim `spiffeks`: a keyset document (JSON), the innermost payload of a keyset update.
    Keyset(String),
}

impl Payload {
    /// The claim name carrying this payload.
    pub fn claim(&self) -> &'static str {
        match self {
            Payload::Bundle(_) => "spiffetb",
            Payload::Token(_) => "jwt",
            Payload::Keyset(_) => "spiffeks",
        }
    }

    /// The kind of token a layer with this payload belongs to: a wrapping layer has its inner token's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Payload::Bundle(_) => Kind::Bundle,
            Payload::Keyset(_) => Kind::KeysetUpdate,
            Payload::Token(inner) => kind_of(inner).unwrap_or(Kind::Bundle),
        }
    }
}

/// One layer's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The payload.
    pub payload: Payload,
    /// Issuer (omitted from the JSON when empty, as Go does).
    pub iss: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Not before, unix seconds.
    pub nbf: u64,
    /// Expires, unix seconds.
    pub exp: u64,
    /// Claim `spiffetd`: the SPIFFE trust domain the bundle is for (innermost layer only; absent in the Go
    /// original's tokens, whose verifier ignores claims it does not know).
    pub trust_domain: Option<String>,
}

pub use crate::trust_domain::is_trust_domain;

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    crit: Option<IgnoredAny>,
    jku: Option<IgnoredAny>,
    jwk: Option<IgnoredAny>,
    x5u: Option<IgnoredAny>,
    x5c: Option<IgnoredAny>,
}

/// A NumericDate: a JSON number of seconds (integer or float, as golang-jwt accepts).
#[derive(Debug, Clone, Copy)]
struct NumericDate(Option<u64>);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Number::deserialize(d)?;
        if let Some(u) = v.as_u64() {
            return Ok(NumericDate(Some(u)));
        }
        match v.as_f64() {
            Some(f) if (0.0..1e15).contains(&f) => Ok(NumericDate(Some(f as u64))),
            Some(_) | None => Ok(NumericDate(None)),
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    spiffetb: Option<String>,
    jwt: Option<String>,
    iss: Option<String>,
    spiffetd: Option<String>,
    spiffeks: Option<String>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
}

/// The parts of a compact token, decoded but not verified.
struct Parts<'t> {
    alg: Alg,
    kind: Kind,
    signing_input: &'t str,
    claims_b64: &'t str,
    signature: Vec<u8>,
}

fn fail(kind: K) -> VerifyError {
    VerifyError { layer: 0, kind }
}

fn split<'t>(token: &'t str, limits: &Limits) -> Result<Parts<'t>, VerifyError> {
    if token.is_empty() {
        return Err(fail(K::Empty));
    }
    if token.len() > limits.max_token_len {
        return Err(fail(K::TooLarge(limits.max_token_len)));
    }
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(fail(K::Malformed));
    };
    if h.is_empty() || c.is_empty() {
        return Err(fail(K::Malformed));
    }
    let header_bytes = B64.decode(h).map_err(|_| fail(K::Base64("header")))?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|e| fail(K::Json { part: "header", reason: e.to_string() }))?;
    for (name, present) in [
        ("crit", header.crit.is_some()),
        ("jku", header.jku.is_some()),
        ("jwk", header.jwk.is_some()),
        ("x5u", header.x5u.is_some()),
        ("x5c", header.x5c.is_some()),
    ] {
        if present {
            return Err(fail(K::ForbiddenHeader(name)));
        }
    }
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(fail(K::AlgNone));
    }
    let alg = Alg::from_name(&header.alg).ok_or_else(|| fail(K::AlgNotAllowed(header.alg.clone())))?;
    let kind = match header.typ {
        None => Kind::Bundle,
        Some(typ) if typ.eq_ignore_ascii_case("JWT") => Kind::Bundle,
        Some(typ) if typ == KEYSET_TYP => Kind::KeysetUpdate,
        Some(typ) => return Err(fail(K::WrongType(typ))),
    };
    let signature = B64.decode(s).map_err(|_| fail(K::Base64("signature")))?;
    Ok(Parts { alg, kind, signing_input: &token[..h.len() + 1 + c.len()], claims_b64: c, signature })
}

fn parse_claims(claims_b64: &str) -> Result<RawClaims, VerifyError> {
    let bytes = B64.decode(claims_b64).map_err(|_| fail(K::Base64("claims")))?;
    serde_json::from_slice(&bytes).map_err(|e| fail(K::Json { part: "claims", reason: e.to_string() }))
}

fn time(v: Option<NumericDate>, name: &'static str) -> Result<Option<u64>, VerifyError> {
    match v {
        None => Ok(None),
        Some(NumericDate(Some(t))) => Ok(Some(t)),
        Some(NumericDate(None)) => Err(fail(K::BadTime(name))),
    }
}

/// The payload of `raw`, which must be exactly one of the two claims `kind` allows.
fn payload(raw: &mut RawClaims, kind: Kind) -> Result<Payload, VerifyError> {
    let (spiffetb, jwt, spiffeks) = (raw.spiffetb.take(), raw.jwt.take(), raw.spiffeks.take());
    match (kind, spiffetb, jwt, spiffeks) {
        (Kind::Bundle, Some(b), None, None) => Ok(Payload::Bundle(b)),
        (Kind::KeysetUpdate, None, None, Some(d)) => Ok(Payload::Keyset(d)),
        (_, None, Some(t), None) => Ok(Payload::Token(t)),
        (Kind::Bundle, None, None, Some(_)) => {
            Err(fail(K::WrongKind { expected: Kind::Bundle, got: Kind::KeysetUpdate }))
        }
        (Kind::KeysetUpdate, Some(_), None, None) => {
            Err(fail(K::WrongKind { expected: Kind::KeysetUpdate, got: Kind::Bundle }))
        }
        (Kind::Bundle, ..) => Err(fail(K::WrongPayloadKind { expected: "exactly one of spiffetb or jwt" })),
        (Kind::KeysetUpdate, ..) => Err(fail(K::WrongPayloadKind { expected: "exactly one of spiffeks or jwt" })),
    }
}

fn check_claims(mut raw: RawClaims, kind: Kind, now: u64, limits: &Limits) -> Result<Claims, VerifyError> {
    let exp = time(raw.exp, "exp")?.ok_or_else(|| fail(K::MissingExp))?;
    let iat = time(raw.iat, "iat")?.ok_or_else(|| fail(K::MissingIat))?;
    let nbf = time(raw.nbf, "nbf")?;
    let leeway = limits.leeway_secs;
    if now > exp.saturating_add(leeway) {
        return Err(fail(K::Expired { exp, now }));
    }
    if let Some(nbf) = nbf {
        if nbf > now.saturating_add(leeway) {
            return Err(fail(K::NotYetValid { nbf, now }));
        }
    }
    if iat > now.saturating_add(leeway) {
        return Err(fail(K::IssuedInFuture { iat, now }));
    }
    let lifetime = i128::from(exp) - i128::from(iat);
    if lifetime <= 0 || lifetime > i128::from(limits.max_lifetime_secs) {
        return Err(fail(K::LifetimeTooLong { secs: lifetime, max: limits.max_lifetime_secs }));
    }
    let payload = payload(&mut raw, kind)?;
    Ok(Claims {
        payload,
        iss: raw.iss.unwrap_or_default(),
        iat,
        nbf: nbf.unwrap_or(iat),
        exp,
        trust_domain: raw.spiffetd,
    })
}

/// A layer that verified: which key signed it, and its claims.
#[derive(Debug, Clone)]
pub struct VerifiedLayer<'k> {
    /// The key that verified the signature.
    pub key: &'k VerifyingKey,
    /// The layer's claims.
    pub claims: Claims,
}

/// Verifies the outermost layer of bundle token `token` with whichever of `keys` signed it (only keys whose
/// type matches the header's `alg` are tried), then checks its time claims against `now`.
pub fn verify_layer<'k>(
    token: &str,
    keys: &[&'k VerifyingKey],
    now: u64,
    limits: &Limits,
) -> Result<VerifiedLayer<'k>, VerifyError> {
    verify_layer_of(Kind::Bundle, token, keys, now, limits)
}

/// [`verify_layer`] for a layer of a token of `kind`: a layer of the other kind is refused before any
/// signature is checked.
pub fn verify_layer_of<'k>(
    kind: Kind,
    token: &str,
    keys: &[&'k VerifyingKey],
    now: u64,
    limits: &Limits,
) -> Result<VerifiedLayer<'k>, VerifyError> {
    let parts = split(token, limits)?;
    if parts.kind != kind {
        return Err(fail(K::WrongKind { expected: kind, got: parts.kind }));
    }
    let candidates: Vec<&'k VerifyingKey> = keys.iter().copied().filter(|k| k.alg() == parts.alg).collect();
    if candidates.is_empty() {
        let first =
            keys.first().ok_or_else(|| fail(K::BadSignature { expected: "(no key)".into(), backup_tried: false }))?;
        return Err(fail(K::AlgMismatch { header: parts.alg, key: first.name().to_owned(), key_alg: first.alg() }));
    }
    let key = candidates.into_iter().find(|k| k.verify(parts.signing_input.as_bytes(), &parts.signature)).ok_or_else(
        || {
            let expected = keys.first().map(|k| k.name().to_owned()).unwrap_or_default();
            fail(K::BadSignature { expected, backup_tried: keys.len() > 1 })
        },
    )?;
    let claims = check_claims(parse_claims(parts.claims_b64)?, kind, now, limits)?;
    Ok(VerifiedLayer { key, claims })
}

/// True when the outermost signature of `token` verifies with `key` (no time checks). For diagnosing a
/// failure only.
pub fn signed_by(token: &str, key: &VerifyingKey, limits: &Limits) -> bool {
    split(token, limits)
        .map(|p| p.alg == key.alg() && key.verify(p.signing_input.as_bytes(), &p.signature))
        .unwrap_or(false)
}

/// The kind of `token`, from its outermost header, WITHOUT verifying anything.
pub fn kind_of(token: &str) -> Result<Kind, VerifyError> {
    Ok(split(token, &Limits::default())?.kind)
}

/// What [`inspect`] learns from a token without verifying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// The header's algorithm.
    pub alg: Alg,
    /// Bundle token or keyset update.
    pub kind: Kind,
    /// The payload claim's name (`spiffetb`, `spiffeks` or `jwt`).
    pub payload: &'static str,
    /// The `exp` claim.
    pub exp: u64,
}

/// Checks that `token` is a well-formed token of this format (header, an allowed `alg`, claims with `exp`,
/// `iat` and exactly one payload of its kind) WITHOUT verifying its signature or times. Used to refuse obviously wrong
/// input early and to make sure an error body is never taken for a token.
pub fn inspect(token: &str) -> Result<Inspected, VerifyError> {
    let limits = Limits::default();
    let parts = split(token, &limits)?;
    if parts.signature.is_empty() {
        return Err(fail(K::Malformed));
    }
    let mut raw = parse_claims(parts.claims_b64)?;
    let exp = time(raw.exp, "exp")?.ok_or_else(|| fail(K::MissingExp))?;
    time(raw.iat, "iat")?.ok_or_else(|| fail(K::MissingIat))?;
    let payload = payload(&mut raw, parts.kind)?.claim();
    Ok(Inspected { alg: parts.alg, kind: parts.kind, payload, exp })
}

/// A compact token whose every layer is well formed (a header with an allowed `alg`, claims with `exp`, `iat` and
/// exactly one payload of the token's kind), read once, WITHOUT verifying any signature or time: what the signer
/// client hands on, so the plugin, the co-signer hops and the re-sign schedule read its fields instead of parsing
/// it again. An error body is never a `Token`. Dereferences to the compact text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    text: String,
    kind: Kind,
    layers: usize,
    exp: u64,
    /// SHA-256 of the token the outermost layer wraps, when it wraps one.
    wrapped: Option<[u8; 32]>,
}

impl Token {
    /// Reads every layer of `text` (trimmed) once, at most `Limits::default().max_depth` deep.
    pub fn parse(text: &str) -> Result<Token, VerifyError> {
        let limits = Limits::default();
        let text = text.trim();
        let mut current = text.to_owned();
        let (mut kind, mut exp, mut wrapped) = (None, u64::MAX, None);
        for layer in 0..limits.max_depth {
            let at = |e: VerifyError| VerifyError { layer, kind: e.kind };
            let parts = split(&current, &limits).map_err(at)?;
            if parts.signature.is_empty() {
                return Err(at(fail(K::Malformed)));
            }
            let outer = *kind.get_or_insert(parts.kind);
            if parts.kind != outer {
                return Err(at(fail(K::WrongKind { expected: outer, got: parts.kind })));
            }
            let mut raw = parse_claims(parts.claims_b64).map_err(at)?;
            exp = exp.min(time(raw.exp, "exp").map_err(at)?.ok_or_else(|| at(fail(K::MissingExp)))?);
            time(raw.iat, "iat").map_err(at)?.ok_or_else(|| at(fail(K::MissingIat)))?;
            match payload(&mut raw, parts.kind).map_err(at)? {
                Payload::Token(inner) => {
                    if layer == 0 {
                        wrapped = Some(sha2::Sha256::digest(inner.as_bytes()).into());
                    }
                    current = inner;
                }
                _ => return Ok(Token { text: text.to_owned(), kind: outer, layers: layer + 1, exp, wrapped }),
            }
        }
        Err(VerifyError { layer: limits.max_depth, kind: K::TooManyLayers(limits.max_depth) })
    }

    /// The compact text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The compact text, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// Bundle token or keyset update.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// How many layers it has (1: signed once).
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// The earliest `exp` of all its layers: when it stops being good, whoever signed it.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// Whether its outermost layer wraps exactly `inner` (checked WITHOUT verifying its signature): what a
    /// co-signer, or a signer-unix asked to add its layer, sends back must be the token it was given plus one
    /// layer, never another token.
    pub fn wraps(&self, inner: &Token) -> bool {
        self.layers == inner.layers + 1 && self.wrapped == Some(sha2::Sha256::digest(inner.text.as_bytes()).into())
    }
}

impl std::ops::Deref for Token {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<str> for Token {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for Token {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for Token {
    fn eq(&self, other: &String) -> bool {
        &self.text == other
    }
}

impl PartialEq<Token> for String {
    fn eq(&self, other: &Token) -> bool {
        *self == other.text
    }
}

impl PartialEq<Token> for &str {
    fn eq(&self, other: &Token) -> bool {
        *self == other.text
    }
}

impl AsRef<[u8]> for Token {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl AsRef<str> for Token {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

/// The payload of `token`'s outermost layer, WITHOUT verifying its signature or times. A co-signer's reply is
/// checked with this to wrap exactly the token it was sent.
pub fn outer_payload_unverified(token: &str, limits: &Limits) -> Result<Payload, VerifyError> {
    let parts = split(token, limits)?;
    payload(&mut parse_claims(parts.claims_b64)?, parts.kind)
}

/// The innermost layer of `token`, reached by following the `jwt` claims WITHOUT verifying anything, and its
/// payload. Bounded by `limits.max_depth`; every layer must be of the outermost one's kind. Used by
/// signer-unix to find the layer it must have signed in a co-signed token, and to read the keyset document
/// of an update before its layers are verified against the keys it names.
pub fn innermost_unverified(token: &str, limits: &Limits) -> Result<(String, Payload), VerifyError> {
    let mut current = token.to_owned();
    let mut kind = None;
    for depth in 0..limits.max_depth {
        let at = |e: VerifyError| VerifyError { layer: depth, kind: e.kind };
        let parts = split(&current, limits).map_err(at)?;
        let outer = *kind.get_or_insert(parts.kind);
        if parts.kind != outer {
            return Err(at(fail(K::WrongKind { expected: outer, got: parts.kind })));
        }
        match payload(&mut parse_claims(parts.claims_b64).map_err(at)?, parts.kind).map_err(at)? {
            Payload::Token(inner) => current = inner,
            terminal => return Ok((current, terminal)),
        }
    }
    Err(VerifyError { layer: limits.max_depth, kind: K::TooManyLayers(limits.max_depth) })
}
