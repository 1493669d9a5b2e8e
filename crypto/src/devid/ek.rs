//! The endorsement key (EK) policy shared by the `tpm_devid` server plugin and the enrollment CA: what makes an EK
//! acceptable, by its certificate chaining to a TPM manufacturer's CA, by its public key being listed in an
//! inventory, or both ([`EkMode`]), and what was proved about it ([`EkProof`]).
//!
//! An EK is named by its hash ([`EkHash`]): the SHA-256 of its DER SubjectPublicKeyInfo, built from the TPM's
//! public area (`reference devid-enrollment.md` §3: the spire-tpm-plugin's `pub_hash`, `openssl pkey -pubin
//! -outform der | sha256sum`), written `sha256:<lowercase hex>`. It needs no certificate, so virtual TPMs without
//! one can be listed.
//!
//! Invariants: an inventory line is either valid or refused whole, with its line number; a certificate's key must
//! be the EK's before its chain counts; the manufacturer, model and version come only from a certificate that
//! verified, never from anything the agent merely claims.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use der::Encode;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::chain::{self, Cert};
use super::tpm2::{KeyParams, TpmPublic, ECC_NIST_P256, ECC_NIST_P384};
use super::DevIdError;

const RSA_ENCRYPTION: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Longest name an inventory may give a node (it becomes the DevID certificate's subject CN).
pub const MAX_NAME: usize = 64;

/// The DER SubjectPublicKeyInfo of a TPM public key: RSA as `rsaEncryption` with NULL parameters around
/// `RSAPublicKey{n, e}` (exponent 0 meaning 65537), ECC as `id-ecPublicKey` with the named curve around the
/// uncompressed point, each coordinate padded to the field size.
pub fn spki_der(public: &TpmPublic) -> Result<Vec<u8>, DevIdError> {
    let (algorithm, key) = match &public.params {
        KeyParams::Rsa { modulus, exponent, .. } => {
            let e_bytes = TpmPublic::rsa_exponent(*exponent).to_be_bytes();
            let key = RsaPublicKey {
                n: der::asn1::UintRef::new(super::strip(modulus)).map_err(|_| DevIdError::EkKey("RSA modulus"))?,
                e: der::asn1::UintRef::new(super::strip(&e_bytes)).map_err(|_| DevIdError::EkKey("RSA exponent"))?,
            };
            let key = key.to_der().map_err(|_| DevIdError::EkKey("RSA key"))?;
            (AlgorithmIdentifierOwned { oid: RSA_ENCRYPTION, parameters: Some(der::asn1::Null.into()) }, key)
        }
        KeyParams::Ecc { curve, x, y, .. } => {
            let (oid, width) = match *curve {
                ECC_NIST_P256 => (P256, 32),
                ECC_NIST_P384 => (P384, 48),
                _ => return Err(DevIdError::EkKey("ECC curve other than P-256 or P-384")),
            };
            if x.len() > width || y.len() > width {
                return Err(DevIdError::EkKey("ECC point larger than its curve"));
            }
            let mut point = vec![0x04];
            point.extend(std::iter::repeat_n(0, width - x.len()));
            point.extend_from_slice(x);
            point.extend(std::iter::repeat_n(0, width - y.len()));
            point.extend_from_slice(y);
            (AlgorithmIdentifierOwned { oid: EC_PUBLIC_KEY, parameters: Some(oid.into()) }, point)
        }
    };
    let subject_public_key = der::asn1::BitString::from_bytes(&key).map_err(|_| DevIdError::EkKey("public key"))?;
    SubjectPublicKeyInfoOwned { algorithm, subject_public_key }.to_der().map_err(|_| DevIdError::EkKey("public key"))
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 A.1.1).
#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    n: der::asn1::UintRef<'a>,
    e: der::asn1::UintRef<'a>,
}

/// An EK's hash: SHA-256 over its DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EkHash(pub [u8; 32]);

impl EkHash {
    /// The hash of a TPM EK public area.
    pub fn of(public: &TpmPublic) -> Result<EkHash, DevIdError> {
        Ok(EkHash(
            ring::digest::digest(&ring::digest::SHA256, &spki_der(public)?)
                .as_ref()
                .try_into()
                .map_err(|_| DevIdError::EkKey("hash length"))?,
        ))
    }

    /// Lowercase hex, without the `sha256:` prefix (the `ek:hash:` selector's value).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for EkHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// Why an EK hash string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an EK hash: write sha256: and 64 lowercase hex digits")]
pub struct BadEkHash(pub String);

impl FromStr for EkHash {
    type Err = BadEkHash;

    fn from_str(s: &str) -> Result<EkHash, BadEkHash> {
        let bad = || BadEkHash(s.chars().take(80).collect());
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(EkHash(out))
    }
}

/// Whether `name` may be a node's name: 1 to 64 of letters, digits, `.`, `-` and `_` (it becomes a certificate's
/// subject CN and a selector value).
pub fn is_node_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Why an inventory is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    /// A line that is not `sha256:<hex> [name]`.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The same EK twice.
    #[error("line {line}: {hash} is listed twice (first on line {first})")]
    Duplicate {
        /// The second line.
        line: usize,
        /// The first.
        first: usize,
        /// The hash.
        hash: EkHash,
    },
}

/// The EKs an operator approved, each with the name that node may get: one `sha256:<hex> [name]` per line, `#`
/// comments and blank lines ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory(BTreeMap<EkHash, (Option<String>, usize)>);

impl Inventory {
    /// Parses an inventory file's text.
    pub fn parse(text: &str) -> Result<Inventory, InventoryError> {
        let mut out = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut words = content.split_whitespace();
            let bad = |reason: String| InventoryError::Line { line, reason };
            let hash: EkHash = words.next().unwrap_or("").parse().map_err(|e: BadEkHash| bad(e.to_string()))?;
            let name = words.next().map(str::to_owned);
            if let Some(n) = &name {
                if !is_node_name(n) {
                    return Err(bad(format!("name {n:?}: 1 to {MAX_NAME} letters, digits, '.', '-', '_'")));
                }
            }
            if let Some(extra) = words.next() {
                return Err(bad(format!("unexpected {extra:?} after the name")));
            }
            if let Some((_, first)) = out.get(&hash) {
                return Err(InventoryError::Duplicate { line, first: *first, hash });
            }
            out.insert(hash, (name, line));
        }
        Ok(Inventory(out))
    }

    /// Whether `hash` is listed, and the name it was listed with.
    pub fn get(&self, hash: &EkHash) -> Option<Option<&str>> {
        self.0.get(hash).map(|(name, _)| name.as_deref())
    }

    /// How many EKs are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What an EK needs to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkMode {
    /// A certificate that chains to a configured manufacturer CA.
    Ca,
    /// A hash listed in the inventory.
    Hash,
    /// Either.
    CaOrHash,
    /// Both.
    CaAndHash,
}

impl FromStr for EkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<EkMode, String> {
        match s {
            "ca" => Ok(EkMode::Ca),
            "hash" => Ok(EkMode::Hash),
            "ca_or_hash" => Ok(EkMode::CaOrHash),
            "ca_and_hash" => Ok(EkMode::CaAndHash),
            other => Err(format!("{other:?}: use ca, hash, ca_or_hash or ca_and_hash")),
        }
    }
}

impl fmt::Display for EkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EkMode::Ca => "ca",
            EkMode::Hash => "hash",
            EkMode::CaOrHash => "ca_or_hash",
            EkMode::CaAndHash => "ca_and_hash",
        })
    }
}

/// What a verified EK certificate's TCG subjectAltName says about the TPM (EK Credential Profile §3.2.9).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TpmInfo {
    /// `tcg-at-tpmManufacturer` (`id:` and 8 hex digits).
    pub manufacturer: Option<String>,
    /// `tcg-at-tpmModel`.
    pub model: Option<String>,
    /// `tcg-at-tpmVersion`.
    pub version: Option<String>,
}

/// What was proved about an EK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkProof {
    /// Its hash.
    pub hash: EkHash,
    /// The inventory's name for it, when it is listed with one.
    pub name: Option<String>,
    /// Whether it is listed in the inventory.
    pub listed: bool,
    /// What its certificate says, when the certificate chained to a configured CA.
    pub certified: Option<TpmInfo>,
}

impl EkProof {
    /// The selectors it proves, in order: `ek:hash:`, then `ek:manufacturer:`, `ek:model:`, `ek:version:` from a
    /// verified certificate, then `ek:name:` from the inventory.
    pub fn selectors(&self) -> Vec<String> {
        let mut out = vec![format!("ek:hash:{}", self.hash.hex())];
        if let Some(info) = &self.certified {
            for (kind, value) in
                [("manufacturer", &info.manufacturer), ("model", &info.model), ("version", &info.version)]
            {
                if let Some(v) = value {
                    out.push(format!("ek:{kind}:{v}"));
                }
            }
        }
        if let Some(name) = &self.name {
            out.push(format!("ek:name:{name}"));
        }
        out
    }
}

/// The EK policy: manufacturer CAs, an inventory, and which of the two an EK needs.
#[derive(Debug, Clone)]
pub struct EkPolicy {
    anchors: Vec<Cert>,
    inventory: Option<Inventory>,
    mode: EkMode,
}

/// Why an EK policy cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ek policy {mode} needs {missing}")]
pub struct EkPolicyError {
    /// The mode asked for.
    pub mode: EkMode,
    /// What it lacks.
    pub missing: &'static str,
}

impl EkPolicy {
    /// A policy over `anchors` (manufacturer CAs, possibly none) and `inventory`. `mode` defaults to whichever of
    /// the two is given, and `ca_or_hash` when both are.
    pub fn new(
        anchors: Vec<Cert>,
        inventory: Option<Inventory>,
        mode: Option<EkMode>,
    ) -> Result<EkPolicy, EkPolicyError> {
        let mode = match (mode, anchors.is_empty(), inventory.is_some()) {
            (Some(m), ..) => m,
            (None, false, true) => EkMode::CaOrHash,
            (None, true, true) => EkMode::Hash,
            (None, ..) => EkMode::Ca,
        };
        let needs_ca = matches!(mode, EkMode::Ca | EkMode::CaAndHash);
        let needs_hash = matches!(mode, EkMode::Hash | EkMode::CaAndHash);
        if (needs_ca || mode == EkMode::CaOrHash && inventory.is_none()) && anchors.is_empty() {
            return Err(EkPolicyError { mode, missing: "endorsement CAs (endorsement_ca_path)" });
        }
        if (needs_hash || mode == EkMode::CaOrHash && anchors.is_empty()) && inventory.is_none() {
            return Err(EkPolicyError { mode, missing: "an inventory of EK hashes" });
        }
        Ok(EkPolicy { anchors, inventory, mode })
    }

    /// The mode in force.
    pub fn mode(&self) -> EkMode {
        self.mode
    }

    /// The same policy with another inventory (reloaded from its file).
    pub fn with_inventory(&self, inventory: Option<Inventory>) -> EkPolicy {
        EkPolicy { inventory, ..self.clone() }
    }

    /// The endorsement CAs.
    pub fn anchors(&self) -> &[Cert] {
        &self.anchors
    }

    /// Checks an EK (its TPMT_PUBLIC, and its certificate when the TPM has one) at `now`.
    pub fn check(&self, ek_pub: &TpmPublic, ek_cert: Option<&[u8]>, now: u64) -> Result<EkProof, DevIdError> {
        let certified = match ek_cert.filter(|c| !c.is_empty()) {
            Some(der) if !self.anchors.is_empty() => {
                let cert = Cert::from_der(der)
                    .map_err(|reason| DevIdError::BadCertificate { what: "endorsement certificate", reason })?;
                if !cert.has_key(&spki_der(ek_pub)?) {
                    return Err(DevIdError::EkMismatch);
                }
                match chain::verify(&cert, &[], &self.anchors, now) {
                    Ok(_) => Ok(cert.tpm_info()),
                    Err(e) => Err(DevIdError::EkChain(e)),
                }
            }
            Some(_) => Err(DevIdError::Missing("endorsement CA (none configured)")),
            None => Err(DevIdError::Missing("endorsement certificate")),
        };
        self.decide(ek_pub, certified)
    }

    /// The policy's verdict on an EK, given what its certificate proved (`certified`: the TPM's details from a
    /// certificate that was checked and chains, or why it did not count) and the inventory.
    pub fn decide(&self, ek_pub: &TpmPublic, certified: Result<TpmInfo, DevIdError>) -> Result<EkProof, DevIdError> {
        let hash = EkHash::of(ek_pub)?;
        let listed = self.inventory.as_ref().and_then(|i| i.get(&hash));
        let unlisted = || DevIdError::EkNotListed { hash: hash.to_string() };
        let certified = match self.mode {
            EkMode::Ca => Some(certified?),
            EkMode::Hash => {
                listed.ok_or_else(unlisted)?;
                None
            }
            EkMode::CaAndHash => {
                listed.ok_or_else(unlisted)?;
                Some(certified?)
            }
            EkMode::CaOrHash => match (certified, listed) {
                (Ok(info), _) => Some(info),
                (Err(_), Some(_)) => None,
                (Err(e), None) => {
                    return Err(DevIdError::EkNeither { hash: hash.to_string(), certificate: Box::new(e) })
                }
            },
        };
        Ok(EkProof { hash, name: listed.flatten().map(str::to_owned), listed: listed.is_some(), certified })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ek_hashes_and_inventories() {
        let h = "sha256:8e9e9135a1a0f3f2f5f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9";
        let parsed: EkHash = h.parse().unwrap();
        assert_eq!(parsed.to_string(), h);
        for bad in [
            "",
            "8e9e",
            "sha256:8E9E9135a1a0f3f2f5f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9",
            "sha1:00",
            "sha256:zz",
        ] {
            assert!(bad.parse::<EkHash>().is_err(), "{bad:?}");
        }
        let text = format!("# fleet\n{h} node-1\n\nsha256:{} # no name\n", "0".repeat(64));
        let inv = Inventory::parse(&text).unwrap();
        assert_eq!(inv.len(), 2);
        assert_eq!(inv.get(&parsed), Some(Some("node-1")));
        assert_eq!(inv.get(&EkHash([0; 32])), Some(None));
        assert_eq!(inv.get(&EkHash([1; 32])), None);
        for (bad, says) in [
            (format!("{h} node 1\n"), "line 1"),
            (format!("\n{h} no/slash\n"), "line 2"),
            (format!("{h} a\n{h} b\n"), "listed twice"),
            ("sha256:abc\n".to_owned(), "not an EK hash"),
        ] {
            let err = Inventory::parse(&bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_mode_defaults_to_what_is_configured_and_refuses_what_is_missing() {
        let inv = Some(Inventory::default());
        assert_eq!(EkPolicy::new(vec![], inv.clone(), None).unwrap().mode(), EkMode::Hash);
        for (mode, inventory) in [(EkMode::Ca, inv.clone()), (EkMode::CaAndHash, inv.clone()), (EkMode::Hash, None)] {
            assert!(EkPolicy::new(vec![], inventory, Some(mode)).is_err(), "{mode}");
        }
        assert!(EkPolicy::new(vec![], None, None).is_err(), "nothing configured");
        assert_eq!("ca_or_hash".parse::<EkMode>(), Ok(EkMode::CaOrHash));
        assert!("either".parse::<EkMode>().is_err());
    }

    /// An RSA EK public area with modulus bytes `seed` repeated (its hash differs per seed).
    fn ek(seed: u8) -> TpmPublic {
        TpmPublic {
            name_alg: crate::devid::tpm2::alg::SHA256,
            attributes: 0x0003_00b2,
            auth_policy: vec![0; 32],
            symmetric: (crate::devid::tpm2::alg::AES, 128, crate::devid::tpm2::alg::CFB),
            scheme: crate::devid::tpm2::Scheme { scheme: crate::devid::tpm2::alg::NULL, hash: 0 },
            params: crate::devid::tpm2::KeyParams::Rsa { bits: 2048, exponent: 0, modulus: vec![0x80 | seed; 256] },
        }
    }

    /// Every mode against every combination of what the certificate proved and what the inventory says: the
    /// verdict, and the reason of each refusal.
    #[test]
    fn every_ek_policy_against_every_kind_of_ek() {
        let (listed, named, stranger) = (ek(1), ek(2), ek(3));
        let inventory =
            Inventory::parse(&format!("{}\n{} node-2\n", EkHash::of(&listed).unwrap(), EkHash::of(&named).unwrap()))
                .unwrap();
        fn good() -> Result<TpmInfo, DevIdError> {
            Ok(TpmInfo { manufacturer: Some("id:00001014".into()), model: Some("swtpm".into()), version: None })
        }
        fn bad() -> Result<TpmInfo, DevIdError> {
            Err(DevIdError::EkMismatch)
        }
        fn none() -> Result<TpmInfo, DevIdError> {
            Err(DevIdError::Missing("endorsement certificate"))
        }
        let anchors = || {
            // Any certificate: decide() is handed the certificate's verdict, the anchors only make the mode valid.
            let pem = include_str!("../../tests/data/ca-ec.pem");
            crate::devid::chain::parse_pem_bundle(pem.as_bytes()).unwrap()
        };
        type Verdict = Result<(bool, Option<&'static str>), &'static str>;
        // (mode, EK, certificate verdict, expected: Ok((certified, name)) or Err(reason fragment))
        type Certified = fn() -> Result<TpmInfo, DevIdError>;
        let rows: Vec<(EkMode, &TpmPublic, Certified, Verdict)> = vec![
            (EkMode::Ca, &stranger, good, Ok((true, None))),
            (EkMode::Ca, &listed, bad, Err("differs from EKPub")),
            (EkMode::Ca, &listed, none, Err("missing endorsement certificate")),
            (EkMode::Hash, &listed, none, Ok((false, None))),
            (EkMode::Hash, &named, good, Ok((false, Some("node-2")))),
            (EkMode::Hash, &stranger, good, Err("not in the inventory")),
            (EkMode::CaOrHash, &stranger, good, Ok((true, None))),
            (EkMode::CaOrHash, &named, none, Ok((false, Some("node-2")))),
            (EkMode::CaOrHash, &listed, bad, Ok((false, None))),
            (EkMode::CaOrHash, &stranger, bad, Err("neither certified")),
            (EkMode::CaOrHash, &stranger, none, Err("neither certified")),
            (EkMode::CaAndHash, &named, good, Ok((true, Some("node-2")))),
            (EkMode::CaAndHash, &named, none, Err("missing endorsement certificate")),
            (EkMode::CaAndHash, &stranger, good, Err("not in the inventory")),
        ];
        for (mode, ek_pub, certified, want) in rows {
            let policy = EkPolicy::new(anchors(), Some(inventory.clone()), Some(mode)).unwrap();
            let got = policy.decide(ek_pub, certified());
            match (got, want) {
                (Ok(proof), Ok((is_certified, name))) => {
                    assert_eq!(proof.certified.is_some(), is_certified, "{mode}: {proof:?}");
                    assert_eq!(proof.name.as_deref(), name, "{mode}");
                    let selectors = proof.selectors();
                    assert_eq!(selectors[0], format!("ek:hash:{}", EkHash::of(ek_pub).unwrap().hex()), "{mode}");
                    assert_eq!(selectors.contains(&"ek:model:swtpm".to_owned()), is_certified, "{mode}: {selectors:?}");
                    assert_eq!(selectors.iter().any(|s| s.starts_with("ek:name:")), name.is_some(), "{mode}");
                }
                (Err(e), Err(says)) => assert!(e.to_string().contains(says), "{mode}: {says:?} not in {e}"),
                (got, want) => panic!("{mode}: got {got:?}, want {want:?}"),
            }
        }
    }
}
