//! A SPIFFE trust domain name, validated once where it enters (a config key, a query parameter, SPIRE's
//! Configure request): 1 to 255 of lowercase letters, digits, `.`, `-` and `_`. Everything past the edge holds
//! a [`TrustDomain`] and never checks a string again.

use std::fmt;
use std::str::FromStr;

/// A valid SPIFFE trust domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

/// A string that is not a trust domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SPIFFE trust domain name (1 to 255 of a-z, 0-9, '.', '-', '_')")]
pub struct BadTrustDomain(pub String);

/// Whether `td` is a SPIFFE trust domain name.
pub fn is_trust_domain(td: &str) -> bool {
    (1..=255).contains(&td.len()) && td.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

impl TrustDomain {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustDomain {
    type Err = BadTrustDomain;

    fn from_str(s: &str) -> Result<TrustDomain, BadTrustDomain> {
        if is_trust_domain(s) {
            Ok(TrustDomain(s.to_owned()))
        } else {
            Err(BadTrustDomain(s.chars().take(300).collect()))
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for TrustDomain {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustDomain, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
