//! `quote_bench HOST PORT N`: the rawest TPM2_Quote of PCRs sha256:0-7 on a swtpm, by an AK-shaped primary key
//! (RSA-2048, restricted, sign, RSASSA-SHA256) loaded once, with a password session set once. `make bench`
//! compares what a quote adds to a `tpm_devid` attestation with it. Prints figures, asserts nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark program: fail loudly")]

use std::str::FromStr;
use std::time::{Duration, Instant};

use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Data, HashScheme, PcrSelectionListBuilder, PcrSlot, PublicBuilder, PublicKeyRsa, PublicRsaParametersBuilder,
    RsaExponent, RsaScheme, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::{NetworkTPMConfig, TctiNameConf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (host, port) = (&args[0], &args[1]);
    let n: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(50);
    let tcti = TctiNameConf::Swtpm(NetworkTPMConfig::from_str(&format!("host={host},port={port}")).unwrap());
    let mut ctx = tss_esapi::Context::new(tcti).unwrap();
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()
        .unwrap();
    let template = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::Null)
                .with_scheme(RsaScheme::RsaSsa(HashScheme::new(HashingAlgorithm::Sha256)))
                .with_key_bits(RsaKeyBits::Rsa2048)
                .with_exponent(RsaExponent::default())
                .with_is_signing_key(true)
                .with_restricted(true)
                .build()
                .unwrap(),
        )
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
        .unwrap();
    ctx.set_sessions((Some(AuthSession::Password), None, None));
    let ak = ctx.create_primary(Hierarchy::Owner, template, None, None, None, None).unwrap().key_handle;
    let slots: Vec<PcrSlot> = (0..8).map(|i| PcrSlot::try_from(1u32 << i).unwrap()).collect();
    let selection = PcrSelectionListBuilder::new().with_selection(HashingAlgorithm::Sha256, &slots).build().unwrap();
    let (mut quotes, mut reads): (Vec<Duration>, Vec<Duration>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let nonce = Data::try_from(vec![i as u8; 32]).unwrap();
        let t = Instant::now();
        ctx.quote(ak, nonce, SignatureScheme::Null, selection.clone()).unwrap();
        quotes.push(t.elapsed());
        let t = Instant::now();
        ctx.execute_without_session(|c| c.pcr_read(selection.clone())).unwrap();
        reads.push(t.elapsed());
    }
    quotes.sort();
    reads.sort();
    let (q, r) = (quotes[n / 2].as_secs_f64() * 1e3, reads[n / 2].as_secs_f64() * 1e3);
    println!(
        "raw TPM2_Quote sha256:0-7 x{n}: p50 {q:.3} ms; raw TPM2_PCR_Read of them: p50 {r:.3} ms; both: p50 {:.3} ms",
        q + r
    );
}
