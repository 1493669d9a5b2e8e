//! Writing a token layer as golang-jwt does: the header and claims JSON byte for byte, the signing input and the
//! signature appended.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sha2::Digest;

use super::{Claims, Kind, Payload};
use crate::error::TokenError;
use crate::Alg;

/// Writes `s` as a JSON string the way Go's encoding/json does (HTML-safe: `<`, `>`, `&`, U+2028, U+2029
/// escaped).
fn go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The claims JSON exactly as golang-jwt marshals them.
pub fn claims_json(claims: &Claims) -> String {
    let name = claims.payload.claim();
    let value = match &claims.payload {
        Payload::Bundle(v) | Payload::Token(v) | Payload::Keyset(v) => v,
    };
    let mut out = String::with_capacity(value.len() + 128);
    out.push_str("{\"");
    out.push_str(name);
    out.push_str("\":");
    go_json_string(&mut out, value);
    if !claims.iss.is_empty() {
        out.push_str(",\"iss\":");
        go_json_string(&mut out, &claims.iss);
    }
    if let Some(td) = &claims.trust_domain {
        out.push_str(",\"spiffetd\":");
        go_json_string(&mut out, td);
    }
    out.push_str(&format!(",\"exp\":{},\"nbf\":{},\"iat\":{}}}", claims.exp, claims.nbf, claims.iat));
    out
}

/// The header JSON golang-jwt writes (map keys sorted: alg, typ), with the `typ` of `kind`.
pub fn header_json(alg: Alg, kind: Kind) -> String {
    format!("{{\"alg\":\"{}\",\"typ\":\"{}\"}}", alg.as_str(), kind.typ())
}

/// An unsigned token: its signing input, ready for a signature over its SHA-256 digest.
#[derive(Debug, Clone)]
pub struct TokenBuilder {
    alg: Alg,
    signing_input: String,
}

impl TokenBuilder {
    /// Builds the signing input `b64url(header).b64url(claims)`. The header's `typ` follows the payload: a
    /// keyset document, or a wrapped keyset update, makes a keyset update layer ([`Payload::kind`]).
    pub fn new(alg: Alg, claims: &Claims) -> TokenBuilder {
        let header = B64.encode(header_json(alg, claims.payload.kind()));
        let body = B64.encode(claims_json(claims));
        TokenBuilder { alg, signing_input: format!("{header}.{body}") }
    }

    /// The signing input.
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// SHA-256 of the signing input: what the TPM signs.
    pub fn digest(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.signing_input.as_bytes()).into()
    }

    /// Appends the signature (RS256: 256 bytes for RSA-2048, up to 1024; ES256: 64 bytes `r || s`).
    pub fn finish(self, signature: &[u8]) -> Result<String, TokenError> {
        let ok = match self.alg {
            Alg::Rs256 => (256..=1024).contains(&signature.len()),
            Alg::Es256 => signature.len() == 64,
        };
        if !ok {
            let want = if self.alg == Alg::Es256 { 64 } else { 256 };
            return Err(TokenError::SignatureLength { alg: self.alg, want, got: signature.len() });
        }
        Ok(format!("{}.{}", self.signing_input, B64.encode(signature)))
    }
}
