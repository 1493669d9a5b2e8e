//! The few TPM 2.0 structures a `tpm_devid` server reads, parsed in pure Rust (TPM 2.0 Part 2: 12.2.4
//! TPMT_PUBLIC, 10.12.12 TPMS_ATTEST, 11.3.4 TPMT_SIGNATURE), plus the object Name (Part 1, 16).
//!
//! Invariant: parsers are strict: every length is bounded by the input, unknown algorithms are errors, and
//! trailing bytes are refused (go-tpm tolerates them; nothing SPIRE's agent sends has any).

use crate::devid::error::Tpm2Error;

/// TPM_ALG_ID values used here (Part 2, 6.3).
pub mod alg {
    /// RSA.
    pub const RSA: u16 = 0x0001;
    /// SHA-1.
    pub const SHA1: u16 = 0x0004;
    /// AES.
    pub const AES: u16 = 0x0006;
    /// SHA-256.
    pub const SHA256: u16 = 0x000B;
    /// SHA-384.
    pub const SHA384: u16 = 0x000C;
    /// SHA-512.
    pub const SHA512: u16 = 0x000D;
    /// NULL.
    pub const NULL: u16 = 0x0010;
    /// RSASSA-PKCS1-v1_5.
    pub const RSASSA: u16 = 0x0014;
    /// RSAES-PKCS1-v1_5.
    pub const RSAES: u16 = 0x0015;
    /// RSASSA-PSS.
    pub const RSAPSS: u16 = 0x0016;
    /// RSAES-OAEP.
    pub const OAEP: u16 = 0x0017;
    /// ECDSA.
    pub const ECDSA: u16 = 0x0018;
    /// ECDAA.
    pub const ECDAA: u16 = 0x001A;
    /// ECC.
    pub const ECC: u16 = 0x0023;
    /// CFB mode.
    pub const CFB: u16 = 0x0043;
}

/// TPMA_OBJECT bits (Part 2, 8.3).
pub mod attr {
    /// fixedTPM.
    pub const FIXED_TPM: u32 = 0x0000_0002;
    /// fixedParent.
    pub const FIXED_PARENT: u32 = 0x0000_0010;
    /// sensitiveDataOrigin.
    pub const SENSITIVE_DATA_ORIGIN: u32 = 0x0000_0020;
    /// userWithAuth.
    pub const USER_WITH_AUTH: u32 = 0x0000_0040;
    /// restricted.
    pub const RESTRICTED: u32 = 0x0001_0000;
    /// decrypt.
    pub const DECRYPT: u32 = 0x0002_0000;
    /// sign / encrypt.
    pub const SIGN: u32 = 0x0004_0000;
}

/// TPM_GENERATED_VALUE: the magic of every TPMS_ATTEST the TPM signs.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
/// TPM_ST_ATTEST_CERTIFY.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// The digest size of a TPM hash algorithm.
pub fn digest_len(hash: u16) -> Option<usize> {
    match hash {
        alg::SHA1 => Some(20),
        alg::SHA256 => Some(32),
        alg::SHA384 => Some(48),
        alg::SHA512 => Some(64),
        _ => None,
    }
}

/// Hashes `data` with a TPM hash algorithm.
pub fn hash(hash: u16, data: &[u8]) -> Result<Vec<u8>, Tpm2Error> {
    let alg = match hash {
        alg::SHA1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        alg::SHA256 => &ring::digest::SHA256,
        alg::SHA384 => &ring::digest::SHA384,
        alg::SHA512 => &ring::digest::SHA512,
        other => return Err(Tpm2Error::Unsupported { what: "hash algorithm", value: other }),
    };
    Ok(ring::digest::digest(alg, data).as_ref().to_vec())
}

/// A cursor over big-endian TPM marshalled bytes.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Tpm2Error> {
        if self.buf.len() < n {
            return Err(Tpm2Error::Short { what: self.what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Tpm2Error> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Tpm2Error> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Tpm2Error> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Tpm2Error> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], Tpm2Error> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn end(&self) -> Result<(), Tpm2Error> {
        match self.buf.is_empty() {
            true => Ok(()),
            false => Err(Tpm2Error::Trailing { what: self.what, count: self.buf.len() }),
        }
    }
}

/// A scheme with its hash (`NULL` when the key has no scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// The scheme's TPM_ALG_ID (e.g. RSASSA, ECDSA, NULL).
    pub scheme: u16,
    /// Its hash (NULL when the scheme is NULL).
    pub hash: u16,
}

/// The key-type specific part of a TPMT_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyParams {
    /// RSA.
    Rsa {
        /// Modulus size in bits.
        bits: u16,
        /// Public exponent (0 means 65537).
        exponent: u32,
        /// Modulus (big-endian).
        modulus: Vec<u8>,
    },
    /// ECC.
    Ecc {
        /// TPM_ECC_CURVE (0x0003 = NIST P-256, 0x0004 = P-384).
        curve: u16,
        /// KDF scheme (NULL for signing keys).
        kdf: u16,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC (RSA or ECC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// The name algorithm.
    pub name_alg: u16,
    /// TPMA_OBJECT.
    pub attributes: u32,
    /// The authorization policy digest.
    pub auth_policy: Vec<u8>,
    /// The symmetric algorithm of a storage/EK key: (alg, key bits, mode); NULL has bits and mode 0.
    pub symmetric: (u16, u16, u16),
    /// The signing or decryption scheme.
    pub scheme: Scheme,
    /// RSA or ECC parameters and unique field.
    pub params: KeyParams,
}

/// TPM_ECC_NIST_P256.
pub const ECC_NIST_P256: u16 = 0x0003;
/// TPM_ECC_NIST_P384.
pub const ECC_NIST_P384: u16 = 0x0004;

impl TpmPublic {
    /// Parses a TPMT_PUBLIC; `what` names the field in errors.
    pub fn parse(bytes: &[u8], what: &'static str) -> Result<TpmPublic, Tpm2Error> {
        let mut r = Reader { buf: bytes, what };
        let kind = r.u16()?;
        let name_alg = r.u16()?;
        digest_len(name_alg).ok_or(Tpm2Error::Unsupported { what: "name algorithm", value: name_alg })?;
        let attributes = r.u32()?;
        let auth_policy = r.tpm2b()?.to_vec();
        let sym_alg = r.u16()?;
        let symmetric = match sym_alg {
            alg::NULL => (alg::NULL, 0, 0),
            other => (other, r.u16()?, r.u16()?),
        };
        let scheme_alg = r.u16()?;
        let scheme = match scheme_alg {
            alg::NULL | alg::RSAES => Scheme { scheme: scheme_alg, hash: alg::NULL },
            alg::ECDAA => {
                let hash = r.u16()?;
                let _count = r.u16()?;
                Scheme { scheme: scheme_alg, hash }
            }
            _ => Scheme { scheme: scheme_alg, hash: r.u16()? },
        };
        let params = match kind {
            alg::RSA => {
                let bits = r.u16()?;
                let exponent = r.u32()?;
                let modulus = r.tpm2b()?.to_vec();
                KeyParams::Rsa { bits, exponent, modulus }
            }
            alg::ECC => {
                let curve = r.u16()?;
                let kdf = r.u16()?;
                if kdf != alg::NULL {
                    let _kdf_hash = r.u16()?;
                }
                let x = r.tpm2b()?.to_vec();
                let y = r.tpm2b()?.to_vec();
                KeyParams::Ecc { curve, kdf, x, y }
            }
            other => return Err(Tpm2Error::Unsupported { what: "public key type", value: other }),
        };
        r.end()?;
        Ok(TpmPublic { name_alg, attributes, auth_policy, symmetric, scheme, params })
    }

    /// Marshals back to TPMT_PUBLIC (the inverse of [`TpmPublic::parse`]; tests forge keys with it).
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let kind = match self.params {
            KeyParams::Rsa { .. } => alg::RSA,
            KeyParams::Ecc { .. } => alg::ECC,
        };
        let put_b = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(b);
        };
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&self.name_alg.to_be_bytes());
        out.extend_from_slice(&self.attributes.to_be_bytes());
        put_b(&mut out, &self.auth_policy);
        out.extend_from_slice(&self.symmetric.0.to_be_bytes());
        if self.symmetric.0 != alg::NULL {
            out.extend_from_slice(&self.symmetric.1.to_be_bytes());
            out.extend_from_slice(&self.symmetric.2.to_be_bytes());
        }
        out.extend_from_slice(&self.scheme.scheme.to_be_bytes());
        if !matches!(self.scheme.scheme, alg::NULL | alg::RSAES) {
            out.extend_from_slice(&self.scheme.hash.to_be_bytes());
            if self.scheme.scheme == alg::ECDAA {
                out.extend_from_slice(&0u16.to_be_bytes());
            }
        }
        match &self.params {
            KeyParams::Rsa { bits, exponent, modulus } => {
                out.extend_from_slice(&bits.to_be_bytes());
                out.extend_from_slice(&exponent.to_be_bytes());
                put_b(&mut out, modulus);
            }
            KeyParams::Ecc { curve, kdf, x, y } => {
                out.extend_from_slice(&curve.to_be_bytes());
                out.extend_from_slice(&kdf.to_be_bytes());
                if *kdf != alg::NULL {
                    out.extend_from_slice(&alg::SHA256.to_be_bytes());
                }
                put_b(&mut out, x);
                put_b(&mut out, y);
            }
        }
        out
    }

    /// The RSA public exponent, with 0 meaning the default 65537.
    pub fn rsa_exponent(exponent: u32) -> u32 {
        if exponent == 0 {
            65537
        } else {
            exponent
        }
    }

    /// True when every bit of `bits` is set.
    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits == bits
    }
}

/// The TPM Name of an object: `nameAlg || H_nameAlg(TPMT_PUBLIC)` (Part 1, 16).
pub fn name(public_bytes: &[u8], name_alg: u16) -> Result<Vec<u8>, Tpm2Error> {
    let mut out = name_alg.to_be_bytes().to_vec();
    out.extend(hash(name_alg, public_bytes)?);
    Ok(out)
}

/// TPMS_QUOTE_INFO: the PCRs a quote covers and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    /// TPML_PCR_SELECTION: (bank hash, selection bitmap) per bank, as the TPM wrote it.
    pub selection: Vec<(u16, Vec<u8>)>,
    /// The digest of the selected PCRs' values, in the signing scheme's hash.
    pub digest: Vec<u8>,
}

/// A parsed TPMS_ATTEST of type certify or quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// Magic (must be TPM_GENERATED).
    pub magic: u32,
    /// TPMI_ST_ATTEST.
    pub kind: u16,
    /// Name of the key that signed it.
    pub qualified_signer: Vec<u8>,
    /// The caller's qualifying data.
    pub extra_data: Vec<u8>,
    /// TPMS_CERTIFY_INFO.name (for kind = certify).
    pub certified_name: Vec<u8>,
    /// TPMS_QUOTE_INFO (for kind = quote).
    pub quote: Option<QuoteInfo>,
}

impl Attest {
    /// Parses a TPMS_ATTEST. Only the certify type has its attested part read; other types are reported by kind.
    pub fn parse(bytes: &[u8]) -> Result<Attest, Tpm2Error> {
        Self::parse_kind(bytes, "CertifiedDevID (TPMS_ATTEST)", ST_ATTEST_CERTIFY)
    }

    /// Parses a TPMS_ATTEST named `what` in errors. Only the quote type has its attested part read; other types
    /// are reported by kind.
    pub fn parse_quote(bytes: &[u8], what: &'static str) -> Result<Attest, Tpm2Error> {
        Self::parse_kind(bytes, what, ST_ATTEST_QUOTE)
    }

    fn parse_kind(bytes: &[u8], what: &'static str, wanted: u16) -> Result<Attest, Tpm2Error> {
        let mut r = Reader { buf: bytes, what };
        let magic = r.u32()?;
        let kind = r.u16()?;
        let qualified_signer = r.tpm2b()?.to_vec();
        let extra_data = r.tpm2b()?.to_vec();
        let _clock = r.u64()?;
        let _reset = r.u32()?;
        let _restart = r.u32()?;
        let _safe = r.u8()?;
        let _firmware = r.u64()?;
        let mut attest = Attest { magic, kind, qualified_signer, extra_data, certified_name: Vec::new(), quote: None };
        if kind != wanted {
            return Ok(attest);
        }
        match kind {
            ST_ATTEST_CERTIFY => {
                attest.certified_name = r.tpm2b()?.to_vec();
                let _qualified_name = r.tpm2b()?;
            }
            ST_ATTEST_QUOTE => {
                let count = r.u32()?;
                // A TPM has a handful of banks; more is not a quote any TPM made.
                if count > 16 {
                    return Err(Tpm2Error::Unsupported { what: "PCR bank count", value: count.min(0xffff) as u16 });
                }
                let mut selection = Vec::new();
                for _ in 0..count {
                    let hash = r.u16()?;
                    let size = r.u8()?;
                    selection.push((hash, r.take(usize::from(size))?.to_vec()));
                }
                let digest = r.tpm2b()?.to_vec();
                attest.quote = Some(QuoteInfo { selection, digest });
            }
            _ => return Ok(attest),
        }
        r.end()?;
        Ok(attest)
    }
}

/// A parsed TPMT_SIGNATURE of an RSA scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaSignature {
    /// TPM_ALG_ID of the scheme (RSASSA or RSAPSS).
    pub scheme: u16,
    /// The hash.
    pub hash: u16,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl RsaSignature {
    /// Parses a TPMT_SIGNATURE that must be RSASSA or RSAPSS.
    pub fn parse(bytes: &[u8]) -> Result<RsaSignature, Tpm2Error> {
        let mut r = Reader { buf: bytes, what: "CertificationSignature (TPMT_SIGNATURE)" };
        let scheme = r.u16()?;
        if !matches!(scheme, alg::RSASSA | alg::RSAPSS) {
            return Err(Tpm2Error::Unsupported { what: "certification signature scheme", value: scheme });
        }
        let hash = r.u16()?;
        let signature = r.tpm2b()?.to_vec();
        r.end()?;
        Ok(RsaSignature { scheme, hash, signature })
    }

    /// Marshals an RSA TPMT_SIGNATURE (tests forge certifications with it).
    pub fn marshal(&self) -> Vec<u8> {
        let mut out = self.scheme.to_be_bytes().to_vec();
        out.extend_from_slice(&self.hash.to_be_bytes());
        out.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.signature);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn parses_and_remarshals_the_reference_templates() {
        // tpm-devid.md §3: the AK, DevID RSA, DevID ECC and H-2 templates.
        for hex in [
            "0001000b00050072000000100014000b0800000000000000",
            "0001000b00040072000000100014000b0800000000000000",
            "0023000b00040072000000100018000b0003001000000000",
            "0023000b00030472000000060080004300100003001000000000",
        ] {
            let bytes = unhex(hex);
            let parsed = TpmPublic::parse(&bytes, "test").unwrap();
            assert_eq!(parsed.marshal(), bytes);
        }
        let ak = TpmPublic::parse(&unhex("0001000b00050072000000100014000b0800000000000000"), "ak").unwrap();
        assert_eq!(ak.scheme, Scheme { scheme: alg::RSASSA, hash: alg::SHA256 });
        assert!(ak.has(attr::RESTRICTED | attr::SIGN | attr::FIXED_TPM));
    }

    #[test]
    fn refuses_short_trailing_and_unknown() {
        let ak = unhex("0001000b00050072000000100014000b0800000000000000");
        assert!(matches!(TpmPublic::parse(&ak[..ak.len() - 1], "x"), Err(Tpm2Error::Short { .. })));
        let mut long = ak.clone();
        long.push(0);
        assert!(matches!(TpmPublic::parse(&long, "x"), Err(Tpm2Error::Trailing { count: 1, .. })));
        let mut keyed = ak.clone();
        keyed[1] = 0x08;
        assert!(matches!(TpmPublic::parse(&keyed, "x"), Err(Tpm2Error::Unsupported { .. })));
        assert!(matches!(Attest::parse(&[0xff, 0x54]), Err(Tpm2Error::Short { .. })));
        assert!(matches!(RsaSignature::parse(&[0x00, 0x18, 0, 0x0b, 0, 0]), Err(Tpm2Error::Unsupported { .. })));
    }
}
