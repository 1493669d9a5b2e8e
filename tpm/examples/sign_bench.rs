//! `sign_bench DEVICE HANDLE N`: TPM sign latency through `KeySigner` vs the rawest tss-esapi call on the same
//! key (own context, password session set once, null ticket), in alternating blocks so drift hits both alike.
//! Used by `make bench`; prints figures, asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark program: fail loudly")]

use std::convert::TryFrom;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tpm::{KeySigner, KeyType, PersistentHandle, Tpm, TpmDevice};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Digest, HashScheme, HashcheckTicket, SignatureScheme};
use tss_esapi::tcti_ldr::{NetworkTPMConfig, TctiNameConf};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = TpmDevice::from_str(&args[0]).unwrap();
    let handle = PersistentHandle::from_str(&args[1]).unwrap();
    let n: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(300);

    let key = Tpm::open(&device).unwrap().signing_key(handle).unwrap();
    let tcti = match &device {
        TpmDevice::Swtpm { host, port } => {
            TctiNameConf::Swtpm(NetworkTPMConfig::from_str(&format!("host={host},port={port}")).unwrap())
        }
        TpmDevice::Device(p) => TctiNameConf::from_str(&format!("device:{}", p.display())).unwrap(),
    };
    let mut ctx = tss_esapi::Context::new(tcti).unwrap();
    let raw_key = KeyHandle::from(
        ctx.tr_from_tpm_public(TpmHandle::Persistent(PersistentTpmHandle::new(handle.value()).unwrap())).unwrap(),
    );
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let hash = HashScheme::new(HashingAlgorithm::Sha256);
    let scheme = match key.key_type() {
        KeyType::Rsa2048 => SignatureScheme::RsaSsa { hash_scheme: hash },
        KeyType::EccP256 => SignatureScheme::EcDsa { hash_scheme: hash },
    };
    let ticket = || {
        HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .unwrap()
    };

    let (mut via_trait, mut raw) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let block = 20;
    let mut i = 0u32;
    while via_trait.len() < n {
        for _ in 0..block {
            i += 1;
            let d: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(i.to_be_bytes()).into();
            let t = Instant::now();
            key.sign_digest(&d).unwrap();
            via_trait.push(t.elapsed());
        }
        for _ in 0..block {
            i += 1;
            let d: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(i.to_be_bytes()).into();
            let digest = Digest::try_from(d.to_vec()).unwrap();
            let t = Instant::now();
            ctx.sign(raw_key, digest, scheme, ticket()).unwrap();
            raw.push(t.elapsed());
        }
    }
    let (t50, t95) = (pct(&mut via_trait, 0.5), pct(&mut via_trait, 0.95));
    let (r50, r95) = (pct(&mut raw, 0.5), pct(&mut raw, 0.95));
    println!(
        "tpm sign {} x{n}: trait p50 {t50:.3} ms p95 {t95:.3} ms; raw p50 {r50:.3} ms p95 {r95:.3} ms; overhead {:+.1} % (target <= 5 %)",
        key.key_type(),
        (t50 / r50 - 1.0) * 100.0
    );
}
