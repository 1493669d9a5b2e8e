//! The boot state, beyond SPIRE's `tpm_devid`: the server asks for a TPM2_Quote over configured PCRs, qualified by
//! the challenge's nonce and signed by the AK that credential activation binds to the EK in the same exchange.
//!
//! The request and the answer ride as extra JSON fields of SPIRE's challenge messages (`PCRQuote`), which SPIRE's
//! agent ignores: it answers without a quote, and gets no `pcr:` selectors. A quote is accepted only when the AK's
//! signature verifies, it is a TPM-generated quote, its qualifying data is the nonce, its PCR selection is exactly
//! the one asked for, and its digest is the hash of the PCR values reported. A policy of named PCR value sets
//! (`pcr_policy`) gives `boot:<name>` for each set the values match.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::devid::error::DevIdError;
use crate::devid::tpm2::{self, alg, Attest, KeyParams, RsaSignature, TpmPublic};
use crate::devid::{constant_time_eq, strip};

/// The PCRs a TPM has in each bank.
pub const PCR_COUNT: u8 = 24;

/// One PCR bank and a set of its PCRs, written `sha256:0,1,2,3,4,5,6,7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank's hash (TPM_ALG_ID).
    pub hash: u16,
    /// The PCR indices, ascending.
    pub pcrs: BTreeSet<u8>,
}

fn bank_name(hash: u16) -> Option<&'static str> {
    match hash {
        alg::SHA1 => Some("sha1"),
        alg::SHA256 => Some("sha256"),
        alg::SHA384 => Some("sha384"),
        alg::SHA512 => Some("sha512"),
        _ => None,
    }
}

fn bank_hash(name: &str) -> Option<u16> {
    match name {
        "sha1" => Some(alg::SHA1),
        "sha256" => Some(alg::SHA256),
        "sha384" => Some(alg::SHA384),
        "sha512" => Some(alg::SHA512),
        _ => None,
    }
}

impl FromStr for PcrSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<PcrSelection, String> {
        let (bank, list) = s.split_once(':').ok_or_else(|| format!("{s:?}: write BANK:PCR,PCR,... (sha256:0,1,7)"))?;
        let hash = bank_hash(bank).ok_or_else(|| format!("{bank:?}: the bank is sha1, sha256, sha384 or sha512"))?;
        let mut pcrs = BTreeSet::new();
        for item in list.split(',') {
            let index: u8 = item.trim().parse().map_err(|_| format!("{item:?} is not a PCR index"))?;
            if index >= PCR_COUNT {
                return Err(format!("PCR {index} does not exist (0 to {})", PCR_COUNT - 1));
            }
            if !pcrs.insert(index) {
                return Err(format!("PCR {index} is listed twice"));
            }
        }
        Ok(PcrSelection { hash, pcrs })
    }
}

impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.pcrs.iter().map(u8::to_string).collect();
        write!(f, "{}:{}", bank_name(self.hash).unwrap_or("unknown"), list.join(","))
    }
}

impl PcrSelection {
    /// The selection bitmap as a TPMS_PCR_SELECTION carries it (3 octets, PCR 0 in bit 0 of the first).
    pub fn bitmap(&self) -> Vec<u8> {
        let mut map = vec![0u8; usize::from(PCR_COUNT / 8)];
        for &i in &self.pcrs {
            map[usize::from(i / 8)] |= 1 << (i % 8);
        }
        map
    }

    /// The bank's name (`sha256`).
    pub fn bank(&self) -> &'static str {
        bank_name(self.hash).unwrap_or("unknown")
    }
}

/// The server's request, in message 2 (`PCRQuote`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    /// The selection, as `sha256:0,1,7`.
    #[serde(rename = "PCRSelection", default)]
    pub selection: String,
}

/// The agent's answer, in message 3 (`PCRQuote`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteAnswer {
    /// TPMS_ATTEST of TPM2_Quote.
    #[serde(rename = "Quoted", with = "crate::devid::wire::b64", default)]
    pub quoted: Vec<u8>,
    /// TPMT_SIGNATURE over it, by the AK.
    #[serde(rename = "Signature", with = "crate::devid::wire::b64", default)]
    pub signature: Vec<u8>,
    /// The selected PCRs' values, in ascending PCR order.
    #[serde(rename = "PCRValues", with = "crate::devid::wire::b64_list", default)]
    pub values: Vec<Vec<u8>>,
}

/// PCR values that a verified quote covered: index to value.
pub type PcrValues = BTreeMap<u8, Vec<u8>>;

/// Verifies `answer` against the request (`selection`, `nonce`) with the AK of this exchange.
pub fn verify(
    ak_pub: &TpmPublic,
    nonce: &[u8],
    selection: &PcrSelection,
    answer: &QuoteAnswer,
) -> Result<PcrValues, DevIdError> {
    let refuse = |why: String| Err(DevIdError::Quote(why));
    let KeyParams::Rsa { modulus, exponent, .. } = &ak_pub.params else {
        return Err(DevIdError::AkNotRsa);
    };
    let sig = RsaSignature::parse(&answer.signature)
        .map_err(|source| DevIdError::Tpm2 { field: "PCRQuote.Signature", cause: source })?;
    if sig.scheme != alg::RSASSA || sig.hash != ak_pub.scheme.hash {
        return refuse(format!("signature scheme 0x{:04x}/0x{:04x} is not the AK's", sig.scheme, sig.hash));
    }
    let algorithm = match sig.hash {
        alg::SHA256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        alg::SHA384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
        alg::SHA512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        other => return refuse(format!("signature hash 0x{other:04x} is not supported")),
    };
    let e = TpmPublic::rsa_exponent(*exponent).to_be_bytes();
    let key = ring::signature::RsaPublicKeyComponents { n: strip(modulus), e: strip(&e) };
    if key.verify(algorithm, &answer.quoted, &sig.signature).is_err() {
        return refuse("its signature does not verify with this exchange's AK".into());
    }
    let attest = Attest::parse_quote(&answer.quoted, "PCRQuote.Quoted (TPMS_ATTEST)")
        .map_err(|source| DevIdError::Tpm2 { field: "PCRQuote.Quoted", cause: source })?;
    if attest.magic != tpm2::TPM_GENERATED {
        return refuse(format!("not generated by a TPM (magic 0x{:08x})", attest.magic));
    }
    let Some(info) = attest.quote.filter(|_| attest.kind == tpm2::ST_ATTEST_QUOTE) else {
        return refuse(format!("not a quote (attestation type 0x{:04x})", attest.kind));
    };
    if !constant_time_eq(&attest.extra_data, nonce) {
        return refuse("it was not made for this exchange (its qualifying data is not the nonce)".into());
    }
    let asked = vec![(selection.hash, selection.bitmap())];
    if info.selection != asked {
        return refuse(format!("it covers other PCRs than {selection}"));
    }
    let size = tpm2::digest_len(selection.hash).unwrap_or(0);
    if answer.values.len() != selection.pcrs.len() || answer.values.iter().any(|v| v.len() != size) {
        return refuse(format!("{} PCR values of {size} bytes were expected", selection.pcrs.len()));
    }
    let digest = tpm2::hash(sig.hash, &answer.values.concat())
        .map_err(|source| DevIdError::Tpm2 { field: "PCRQuote.PCRValues", cause: source })?;
    if !constant_time_eq(&digest, &info.digest) {
        return refuse("the PCR values reported are not the ones quoted (their digest differs)".into());
    }
    Ok(selection.pcrs.iter().copied().zip(answer.values.iter().cloned()).collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `pcr:` selectors of verified values: `pcr:sha256:<index>:<hex>`.
pub fn selectors(selection: &PcrSelection, values: &PcrValues) -> Vec<String> {
    values.iter().map(|(i, v)| format!("pcr:{}:{i}:{}", selection.bank(), hex(v))).collect()
}

/// Named, allowed PCR value sets (`pcr_policy`): a set matches when every PCR it names has its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrPolicy(BTreeMap<String, BTreeMap<u8, Vec<u8>>>);

/// The policy as written: names to maps of `BANK:INDEX` to lowercase hex.
pub type RawPolicy = BTreeMap<String, BTreeMap<String, String>>;

impl PcrPolicy {
    /// Checks the policy as written against `selection`: every PCR it names must be in the selection, with a
    /// value of the bank's size.
    pub fn new(raw: RawPolicy, selection: &PcrSelection) -> Result<PcrPolicy, String> {
        let size = tpm2::digest_len(selection.hash).unwrap_or(0);
        let mut out = BTreeMap::new();
        for (name, set) in raw {
            if !crate::devid::ek::is_node_name(&name) {
                return Err(format!("{name:?} is not a name (letters, digits, '.', '-', '_')"));
            }
            if set.is_empty() {
                return Err(format!("{name}: names no PCR"));
            }
            let mut values = BTreeMap::new();
            for (pcr, value) in set {
                let (bank, index) = pcr.split_once(':').ok_or_else(|| format!("{name}: {pcr:?} is not BANK:INDEX"))?;
                let index: u8 = index.parse().map_err(|_| format!("{name}: {pcr:?} is not BANK:INDEX"))?;
                if bank != selection.bank() || !selection.pcrs.contains(&index) {
                    return Err(format!("{name}: {pcr} is not in pcr_selection ({selection})"));
                }
                let bytes = unhex(&value)
                    .filter(|b| b.len() == size)
                    .ok_or_else(|| format!("{name}: {pcr} is not {size} bytes of lowercase hex"))?;
                values.insert(index, bytes);
            }
            out.insert(name, values);
        }
        Ok(PcrPolicy(out))
    }

    /// The names of the sets `values` match.
    pub fn matches(&self, values: &PcrValues) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, set)| set.iter().all(|(i, want)| values.get(i).is_some_and(|v| constant_time_eq(v, want))))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Why no set matches: for each, the first PCR that differs, with its value and the set's.
    pub fn explain(&self, selection: &PcrSelection, values: &PcrValues) -> String {
        let mut parts = Vec::new();
        for (name, set) in &self.0 {
            if let Some((i, want)) = set.iter().find(|(i, want)| values.get(i) != Some(want)) {
                let got = values.get(i).map(|v| hex(v)).unwrap_or_else(|| "not quoted".into());
                parts.push(format!("{name}: {}:{i} is {got}, the entry wants {}", selection.bank(), hex(want)));
            }
        }
        parts.join("; ")
    }

    /// Whether it names no set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devid::tpm2::Scheme;
    use rsa::signature::{SignatureEncoding, Signer};

    /// A software RSA key posing as the exchange's AK (RSASSA, SHA-256).
    struct Ak {
        key: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
        public: TpmPublic,
    }

    fn ak() -> Ak {
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let public = TpmPublic {
            name_alg: alg::SHA256,
            attributes: 0x0005_0072,
            auth_policy: Vec::new(),
            symmetric: (alg::NULL, 0, 0),
            scheme: Scheme { scheme: alg::RSASSA, hash: alg::SHA256 },
            params: KeyParams::Rsa { bits: 2048, exponent: 0, modulus: private.n().to_bytes_be() },
        };
        Ak { key: rsa::pkcs1v15::SigningKey::new(private), public }
    }

    /// A TPMS_ATTEST of a quote as a TPM writes it.
    fn attest(magic: u32, kind: u16, nonce: &[u8], selection: &[(u16, Vec<u8>)], digest: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        out.extend(kind.to_be_bytes());
        for b in [&[0u8; 34][..], nonce] {
            out.extend((b.len() as u16).to_be_bytes());
            out.extend(b);
        }
        out.extend([0u8; 17]); // clockInfo
        out.extend([0u8; 8]); // firmwareVersion
        out.extend((selection.len() as u32).to_be_bytes());
        for (hash, map) in selection {
            out.extend(hash.to_be_bytes());
            out.push(map.len() as u8);
            out.extend(map);
        }
        out.extend((digest.len() as u16).to_be_bytes());
        out.extend(digest);
        out
    }

    fn sign(ak: &Ak, quoted: Vec<u8>, values: Vec<Vec<u8>>) -> QuoteAnswer {
        let sig = ak.key.sign(&quoted).to_vec();
        let signature = RsaSignature { scheme: alg::RSASSA, hash: alg::SHA256, signature: sig }.marshal();
        QuoteAnswer { quoted, signature, values }
    }

    #[test]
    fn selections_parse_print_and_map_as_the_tpm_does() {
        let s: PcrSelection = "sha256:0,1,7,23".parse().unwrap();
        assert_eq!(s.to_string(), "sha256:0,1,7,23");
        assert_eq!(s.bitmap(), vec![0b1000_0011, 0, 0b1000_0000]);
        for (bad, says) in [
            ("0,1", "BANK:PCR"),
            ("md5:0", "the bank is"),
            ("sha256:24", "does not exist"),
            ("sha256:1,1", "twice"),
            ("sha256:", "not a PCR index"),
        ] {
            let err = bad.parse::<PcrSelection>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// A quote is taken only when every part of it is the one asked for; each forgery is refused with its reason.
    #[test]
    fn a_quote_verifies_only_as_asked_and_each_forgery_is_refused() {
        let (ak, other) = (ak(), ak());
        let selection: PcrSelection = "sha256:0,7".parse().unwrap();
        let nonce = [7u8; 32];
        let values = vec![vec![0u8; 32], vec![0xab; 32]];
        let digest = |v: &[Vec<u8>]| tpm2::hash(alg::SHA256, &v.concat()).unwrap();
        let asked = vec![(alg::SHA256, selection.bitmap())];
        let honest = sign(
            &ak,
            attest(tpm2::TPM_GENERATED, tpm2::ST_ATTEST_QUOTE, &nonce, &asked, &digest(&values)),
            values.clone(),
        );
        let got = verify(&ak.public, &nonce, &selection, &honest).unwrap();
        assert_eq!(got.get(&7), Some(&vec![0xab; 32]));
        let sel = selectors(&selection, &got);
        assert_eq!(sel[1], format!("pcr:sha256:7:{}", "ab".repeat(32)));

        let other_pcrs = vec![(alg::SHA256, "sha256:0,8".parse::<PcrSelection>().unwrap().bitmap())];
        let altered = vec![vec![0u8; 32], vec![0xac; 32]];
        let rows: Vec<(&str, QuoteAnswer, &str)> = vec![
            ("another key", sign(&other, honest.quoted.clone(), values.clone()), "does not verify"),
            (
                "another nonce",
                sign(
                    &ak,
                    attest(tpm2::TPM_GENERATED, tpm2::ST_ATTEST_QUOTE, &[8u8; 32], &asked, &digest(&values)),
                    values.clone(),
                ),
                "not the nonce",
            ),
            (
                "other PCRs",
                sign(
                    &ak,
                    attest(tpm2::TPM_GENERATED, tpm2::ST_ATTEST_QUOTE, &nonce, &other_pcrs, &digest(&values)),
                    values.clone(),
                ),
                "other PCRs",
            ),
            ("altered values", QuoteAnswer { values: altered, ..honest.clone() }, "not the ones quoted"),
            ("a value missing", QuoteAnswer { values: values[..1].to_vec(), ..honest.clone() }, "were expected"),
            (
                "not TPM-generated",
                sign(&ak, attest(0x1234_5678, tpm2::ST_ATTEST_QUOTE, &nonce, &asked, &digest(&values)), values.clone()),
                "not generated by a TPM",
            ),
            (
                "a certify, not a quote",
                sign(&ak, attest(tpm2::TPM_GENERATED, tpm2::ST_ATTEST_CERTIFY, &nonce, &[], &[]), values.clone()),
                "not a quote",
            ),
        ];
        for (what, answer, says) in rows {
            let err = verify(&ak.public, &nonce, &selection, &answer).unwrap_err().to_string();
            assert!(err.contains(says), "{what}: {says:?} not in {err}");
        }
    }

    #[test]
    fn a_policy_names_the_sets_that_match_and_says_which_pcr_differs() {
        let selection: PcrSelection = "sha256:0,7".parse().unwrap();
        let raw: RawPolicy = serde_json::from_str(&format!(
            r#"{{"appliance": {{"sha256:0": "{}", "sha256:7": "{}"}}, "any-firmware": {{"sha256:7": "{}"}}}}"#,
            "00".repeat(32),
            "ab".repeat(32),
            "ab".repeat(32)
        ))
        .unwrap();
        let policy = PcrPolicy::new(raw, &selection).unwrap();
        let values: PcrValues = [(0, vec![0u8; 32]), (7, vec![0xab; 32])].into();
        assert_eq!(policy.matches(&values), ["any-firmware", "appliance"]);
        let other: PcrValues = [(0, vec![1u8; 32]), (7, vec![0xab; 32])].into();
        assert_eq!(policy.matches(&other), ["any-firmware"]);
        let booted_else: PcrValues = [(0, vec![0u8; 32]), (7, vec![0xcd; 32])].into();
        assert!(policy.matches(&booted_else).is_empty());
        let why = policy.explain(&selection, &booted_else);
        assert!(why.contains(&format!("appliance: sha256:7 is {}", "cd".repeat(32))), "{why}");
        for (bad, says) in [
            (r#"{"x": {"sha256:9": "00"}}"#, "not in pcr_selection"),
            (r#"{"x": {"sha1:0": "00"}}"#, "not in pcr_selection"),
            (r#"{"x": {"sha256:0": "00"}}"#, "32 bytes"),
            (r#"{"x": {}}"#, "names no PCR"),
            (r#"{"x y": {"sha256:0": "00"}}"#, "not a name"),
        ] {
            let raw: RawPolicy = serde_json::from_str(bad).unwrap();
            let err = PcrPolicy::new(raw, &selection).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
