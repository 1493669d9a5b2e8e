//! The TPM2_Quote beyond SPIRE's exchange: the AK just activated quotes the PCRs the server asked for, and the
//! agent reads their values and checks them against the quote's digest.

use std::convert::TryFrom;

use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Data, SignatureScheme};
use tss_esapi::traits::Marshall;

use super::Quote;
use crate::error::TpmError;
use crate::esapi::{step_error, Conn, OpError};

/// A TPM2_Quote to make: the PCRs (one bank) and the qualifying data.
pub(super) struct QuoteArgs {
    hash: HashingAlgorithm,
    slots: Vec<tss_esapi::structures::PcrSlot>,
    selection: tss_esapi::structures::PcrSelectionList,
    qualifying: Data,
}

impl QuoteArgs {
    /// The PCRs `pcrs` of bank `bank` (TPM_ALG_ID: SHA-1, -256, -384 or -512), qualified by `nonce`.
    pub(super) fn new(nonce: &[u8], bank: u16, pcrs: &[u8]) -> Result<QuoteArgs, TpmError> {
        use tss_esapi::structures::{PcrSelectionListBuilder, PcrSlot};
        let bad = |what: &'static str, reason: String| TpmError::BadBlob { what, reason };
        let hash = match bank {
            0x0004 => HashingAlgorithm::Sha1,
            0x000B => HashingAlgorithm::Sha256,
            0x000C => HashingAlgorithm::Sha384,
            0x000D => HashingAlgorithm::Sha512,
            other => return Err(bad("PCR bank", format!("0x{other:04x} is not a hash this agent reads"))),
        };
        let slots = pcrs
            .iter()
            .map(|&i| {
                let bit = 1u32.checked_shl(u32::from(i)).unwrap_or(0);
                PcrSlot::try_from(bit).map_err(|_| bad("PCR index", format!("{i} is not a PCR")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let selection = PcrSelectionListBuilder::new()
            .with_selection(hash, &slots)
            .build()
            .map_err(|e| bad("PCR selection", e.to_string()))?;
        let qualifying =
            Data::try_from(nonce.to_vec()).map_err(|_| bad("quote nonce", format!("{} bytes", nonce.len())))?;
        Ok(QuoteArgs { hash, slots, selection, qualifying })
    }

    /// The selected PCRs' values, in the order of `slots`.
    fn read(&self, conn: &mut Conn, dev: &str) -> Result<Vec<Vec<u8>>, OpError> {
        let data = conn
            .ctx
            .execute_without_session(|ctx| tss_esapi::abstraction::pcr::read_all(ctx, self.selection.clone()))
            .map_err(|e| step_error(dev, "read the PCRs", None, e))?;
        let missing = |reason: String| OpError::Final(TpmError::BadBlob { what: "PCR read", reason });
        let bank = data.pcr_bank(self.hash).ok_or_else(|| missing("no value for the bank".into()))?;
        self.slots
            .iter()
            .map(|s| {
                bank.get_digest(*s).map(|d| d.value().to_vec()).ok_or_else(|| missing(format!("no value for {s:?}")))
            })
            .collect()
    }

    /// Quotes with the loaded AK `ak` (RSASSA-SHA256, so the quote's digest is SHA-256), then reads the values.
    /// A PCR extended between the two (PCRs only ever change by extension) shows as a digest that is not the
    /// values' hash, and the quote is made again, up to three times: one TPM2_Quote and one TPM2_PCR_Read when
    /// nothing moves.
    pub(super) fn run(&self, conn: &mut Conn, dev: &str, ak: KeyHandle) -> Result<Quote, OpError> {
        use sha2::Digest as _;
        use tss_esapi::structures::AttestInfo;
        let started = std::time::Instant::now();
        for attempt in 1..=3u32 {
            let (attest, signature) = conn
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.quote(ak, self.qualifying.clone(), SignatureScheme::Null, self.selection.clone())
                })
                .map_err(|e| step_error(dev, "quote the PCRs with the AK", None, e))?;
            let values = self.read(conn, dev)?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(OpError::Final(TpmError::BadBlob { what: "PCR quote", reason: "not a quote".into() }));
            };
            let digest = sha2::Sha256::digest(values.concat());
            if info.pcr_digest().value() == &digest[..] {
                let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                tracing::debug!(attempt, elapsed_us, pcrs = self.slots.len(), "PCRs quoted and read");
                return Ok(Quote { quoted: attest.marshall()?, signature: signature.marshall()?, values });
            }
        }
        Err(OpError::Final(TpmError::BadBlob {
            what: "PCR quote",
            reason: "the PCRs kept changing while they were quoted".into(),
        }))
    }
}
