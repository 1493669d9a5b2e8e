//! `tpm_devid` negative table. A genuine exchange is made once by our agent on swtpm (real EK certificate chain,
//! DevID CA with an intermediate); every row then breaks one thing and must be refused by its own check, with its
//! own error. Forged TPM structures are signed by a software "AK" so they get past the signature and reach the
//! check under test; the rows for the checks SPIRE omits also show that SPIRE's checks alone accept the forgery.
//! The agent-side rows run the TPM half with one wrong input each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use common::clock::unix_now as now;
use crypto::devid::tpm2::{alg, attr, KeyParams, RsaSignature, Scheme, TpmPublic};
use crypto::devid::wire::{AttestationRequest, ChallengeRequest, ChallengeResponse};
use crypto::devid::{ChainError, DevIdError, DevIdVerifier, ExtraChecks};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use testbed::devid::{make_devid_ca, DevIdLab, LabOptions};
use tpm::attest::Hierarchies;
use tpm::devid::DevIdBlobs;
use tpm::Password;
use tpm::{KeyType, Tpm, TpmError};

const SOFT_AK: &str = include_str!("../../crypto/tests/data/rsa-a.key");

struct Fixture {
    lab: DevIdLab,
    verifier: DevIdVerifier,
    spire_only: DevIdVerifier,
    payload: AttestationRequest,
}

fn fixture() -> Fixture {
    let lab = DevIdLab::new(LabOptions::default()).unwrap();
    let read = |f: &str| std::fs::read(lab.path(f)).unwrap();
    let verifier = DevIdVerifier::new(&read("root.pem"), &read("endorsement-ca.pem"), ExtraChecks::default()).unwrap();
    let spire_only =
        DevIdVerifier::new(&read("root.pem"), &read("endorsement-ca.pem"), ExtraChecks::SPIRE_ONLY).unwrap();
    let cfg = plugin::devid::agent::parse_config(&lab.agent_hcl()).unwrap();
    let (json, _pending) = plugin::devid::agent::begin(&cfg).unwrap();
    let payload = serde_json::from_slice(&json).unwrap();
    Fixture { lab, verifier, spire_only, payload }
}

fn soft_ak() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_pem(SOFT_AK).unwrap()
}

/// A TPMT_PUBLIC for the software AK with the given attributes and scheme.
fn soft_ak_pub(attributes: u32, scheme: Scheme) -> Vec<u8> {
    TpmPublic {
        name_alg: alg::SHA256,
        attributes,
        auth_policy: Vec::new(),
        symmetric: (alg::NULL, 0, 0),
        scheme,
        params: KeyParams::Rsa { bits: 2048, exponent: 0, modulus: soft_ak().n().to_bytes_be() },
    }
    .marshal()
}

const AK_ATTRS: u32 = attr::RESTRICTED
    | attr::SIGN
    | attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH;
const RSASSA: Scheme = Scheme { scheme: alg::RSASSA, hash: alg::SHA256 };

fn tpm2b(b: &[u8]) -> Vec<u8> {
    [&(b.len() as u16).to_be_bytes()[..], b].concat()
}

fn name(public: &[u8]) -> Vec<u8> {
    crypto::devid::tpm2::name(public, alg::SHA256).unwrap()
}

/// A TPMS_ATTEST from scratch.
fn attest(magic: u32, kind: u16, qualified_signer: &[u8], certified: &[u8]) -> Vec<u8> {
    let mut a = magic.to_be_bytes().to_vec();
    a.extend_from_slice(&kind.to_be_bytes());
    a.extend(tpm2b(qualified_signer));
    a.extend(tpm2b(&[]));
    a.extend_from_slice(&[0u8; 17]);
    a.extend_from_slice(&[0u8; 8]);
    a.extend(tpm2b(certified));
    a.extend(tpm2b(certified));
    a
}

/// `der` with the outer signatureAlgorithm's parameters set to NULL: still DER, still signed (the signature covers
/// the TBS only), but not the same bytes, so not the same SHA-1.
fn outer_algorithm_changed(der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    let mut cert = x509_cert::Certificate::from_der(der).unwrap();
    assert!(cert.signature_algorithm.parameters.is_none(), "the lab's leaf is ECDSA-signed");
    cert.signature_algorithm.parameters = Some(der::Any::null());
    cert.to_der().unwrap()
}

/// Replaces the AK with the software one (`attributes`, `scheme`) and the attestation with `attest`, signed by it.
fn forge(p: &AttestationRequest, attributes: u32, scheme: Scheme, attest: Vec<u8>) -> AttestationRequest {
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(soft_ak());
    let signature = signer.sign(&attest).to_vec();
    AttestationRequest {
        ak_pub: soft_ak_pub(attributes, scheme),
        certification_signature: RsaSignature { scheme: alg::RSASSA, hash: alg::SHA256, signature }.marshal(),
        certified_devid: attest,
        ..p.clone()
    }
}

/// A well-formed qualifiedSigner for the software AK.
fn qs() -> Vec<u8> {
    name(&soft_ak_pub(AK_ATTRS, RSASSA))
}

fn json(p: &AttestationRequest) -> Vec<u8> {
    serde_json::to_vec(p).unwrap()
}

#[test]
fn every_broken_payload_is_refused_by_its_own_check() {
    let f = fixture();
    let p = &f.payload;
    // The genuine payload passes both verifiers.
    f.verifier.challenge(&json(p), now()).unwrap();
    f.spire_only.challenge(&json(p), now()).unwrap();

    // Other trust: a DevID CA and an EK CA that did not issue anything here.
    let other = tempfile::tempdir().unwrap();
    make_devid_ca(other.path(), "other").unwrap();
    let other_root = std::fs::read(other.path().join("root.pem")).unwrap();
    let ek_ca = std::fs::read(f.lab.path("endorsement-ca.pem")).unwrap();
    let devid_root = std::fs::read(f.lab.path("root.pem")).unwrap();
    let unknown_devid_ca = DevIdVerifier::new(&other_root, &ek_ca, ExtraChecks::default()).unwrap();
    let unknown_ek_ca = DevIdVerifier::new(&devid_root, &other_root, ExtraChecks::default()).unwrap();

    let devid_name = name(&p.devid_pub);
    let genuine_attest = |kind: u16, magic: u32| attest(magic, kind, &qs(), &devid_name);
    // A DevID key of another TPM (its public area), for "DevIDPub is not the certificate's key".
    let other_tpm = testbed::swtpm::Swtpm::start().unwrap();
    let other_devid = Tpm::open(&other_tpm.device())
        .unwrap()
        .create_devid(KeyType::Rsa2048, &Password::default(), &Password::default())
        .unwrap();
    let mut ek_pub_other = TpmPublic::parse(&p.ek_pub, "EKPub").unwrap();
    if let KeyParams::Rsa { modulus, .. } = &mut ek_pub_other.params {
        modulus[10] ^= 1;
    }
    let mut tampered_attest = p.certified_devid.clone();
    let last = tampered_attest.len() - 1;
    tampered_attest[last] ^= 1;
    let mut ecc_ak = TpmPublic::parse(&other_devid.public, "x").unwrap();
    ecc_ak.params = KeyParams::Ecc { curve: 3, kdf: alg::NULL, x: vec![1; 32], y: vec![2; 32] };
    let too_big = vec![b' '; crypto::devid::MAX_PAYLOAD + 1];

    type Check = fn(&DevIdError) -> bool;
    let rows: Vec<(&str, &DevIdVerifier, Vec<u8>, u64, Check)> = vec![
        ("not JSON", &f.verifier, b"{".to_vec(), now(), |e| matches!(e, DevIdError::Json { .. })),
        ("too large", &f.verifier, too_big, now(), |e| matches!(e, DevIdError::TooLarge { .. })),
        (
            "no DevID certificate",
            &f.verifier,
            json(&AttestationRequest { devid_cert: vec![], ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::NoDevIdCert),
        ),
        (
            "unparsable DevID certificate",
            &f.verifier,
            json(&AttestationRequest { devid_cert: vec![b"junk".to_vec()], ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::BadCertificate { what: "DevID certificate", .. }),
        ),
        ("DevID chain to an unknown CA", &unknown_devid_ca, json(p), now(), |e| {
            matches!(e, DevIdError::DevIdChain(ChainError::UnknownAuthority { .. }))
        }),
        (
            "expired DevID leaf",
            &f.verifier,
            json(p),
            now() + 400 * 86_400,
            |e| matches!(e, DevIdError::DevIdChain(ChainError::Validity { subject, .. }) if subject.contains("node-1")),
        ),
        (
            "DevID leaf whose outer signature algorithm differs from the signed one (another agent ID)",
            &f.verifier,
            json(&AttestationRequest {
                devid_cert: [vec![outer_algorithm_changed(&p.devid_cert[0])], p.devid_cert[1..].to_vec()].concat(),
                ..p.clone()
            }),
            now(),
            |e| matches!(e, DevIdError::BadCertificate { what: "DevID certificate", .. }),
        ),
        (
            "DevID chain without its intermediate",
            &f.verifier,
            json(&AttestationRequest { devid_cert: vec![p.devid_cert[0].clone()], ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::DevIdChain(ChainError::UnknownAuthority { .. })),
        ),
        ("missing AKPub", &f.verifier, json(&AttestationRequest { ak_pub: vec![], ..p.clone() }), now(), |e| {
            matches!(e, DevIdError::Missing("attestation key public blob"))
        }),
        ("missing DevIDPub", &f.verifier, json(&AttestationRequest { devid_pub: vec![], ..p.clone() }), now(), |e| {
            matches!(e, DevIdError::Missing("DevID key public blob"))
        }),
        ("missing EKCert", &f.verifier, json(&AttestationRequest { ek_cert: vec![], ..p.clone() }), now(), |e| {
            matches!(e, DevIdError::Missing("endorsement certificate"))
        }),
        ("missing EKPub", &f.verifier, json(&AttestationRequest { ek_pub: vec![], ..p.clone() }), now(), |e| {
            matches!(e, DevIdError::Missing("endorsement key public blob"))
        }),
        (
            "unparsable EKCert",
            &f.verifier,
            json(&AttestationRequest { ek_cert: vec![0x30, 3, 1, 2, 3], ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::BadCertificate { what: "endorsement certificate", .. }),
        ),
        (
            "truncated DevIDPub",
            &f.verifier,
            json(&AttestationRequest { devid_pub: p.devid_pub[..20].to_vec(), ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::Tpm2 { field: "DevIDPub", .. }),
        ),
        (
            "truncated AKPub",
            &f.verifier,
            json(&AttestationRequest { ak_pub: p.ak_pub[..20].to_vec(), ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::Tpm2 { field: "AKPub", .. }),
        ),
        (
            "EKPub with trailing bytes",
            &f.verifier,
            json(&AttestationRequest { ek_pub: [&p.ek_pub[..], &[0]].concat(), ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::Tpm2 { field: "EKPub", .. }),
        ),
        (
            "EK certificate and EKPub differ",
            &f.verifier,
            json(&AttestationRequest { ek_pub: ek_pub_other.marshal(), ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::EkMismatch),
        ),
        (
            "EKPub not RSA",
            &f.verifier,
            json(&AttestationRequest { ek_pub: ecc_ak.marshal(), ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::EkPubNotRsa),
        ),
        ("EK certificate from an unknown CA", &unknown_ek_ca, json(p), now(), |e| {
            matches!(e, DevIdError::EkChain(ChainError::UnknownAuthority { .. }))
        }),
        ("ECC AK", &f.verifier, json(&AttestationRequest { ak_pub: ecc_ak.marshal(), ..p.clone() }), now(), |e| {
            matches!(e, DevIdError::AkNotRsa)
        }),
        (
            "non-signing AK",
            &f.verifier,
            json(&forge(p, AK_ATTRS & !attr::SIGN | attr::DECRYPT, RSASSA, genuine_attest(0x8017, 0xFF54_4347))),
            now(),
            |e| matches!(e, DevIdError::AkNotSigning),
        ),
        (
            "NULL-scheme AK",
            &f.verifier,
            json(&forge(
                p,
                AK_ATTRS,
                Scheme { scheme: alg::NULL, hash: alg::NULL },
                genuine_attest(0x8017, 0xFF54_4347),
            )),
            now(),
            |e| matches!(e, DevIdError::AkNullScheme),
        ),
        (
            "tampered TPMS_ATTEST",
            &f.verifier,
            json(&AttestationRequest { certified_devid: tampered_attest, ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::CertifySignature),
        ),
        (
            "certification signature of another scheme",
            &f.verifier,
            json(&AttestationRequest {
                certification_signature: [&[0x00, 0x16][..], &p.certification_signature[2..]].concat(),
                ..p.clone()
            }),
            now(),
            |e| matches!(e, DevIdError::CertifyScheme { scheme: 0x0016, .. }),
        ),
        (
            "truncated CertificationSignature",
            &f.verifier,
            json(&AttestationRequest { certification_signature: p.certification_signature[..3].to_vec(), ..p.clone() }),
            now(),
            |e| matches!(e, DevIdError::Tpm2 { field: "CertificationSignature", .. }),
        ),
        (
            "unparsable TPMS_ATTEST (validly signed)",
            &f.verifier,
            json(&forge(p, AK_ATTRS, RSASSA, genuine_attest(0x8017, 0xFF54_4347)[..30].to_vec())),
            now(),
            |e| matches!(e, DevIdError::Tpm2 { field: "CertifiedDevID", .. }),
        ),
        (
            "wrong magic",
            &f.verifier,
            json(&forge(p, AK_ATTRS, RSASSA, genuine_attest(0x8017, 0xFF54_4348))),
            now(),
            |e| matches!(e, DevIdError::AttestMagic(0xFF54_4348)),
        ),
        (
            "quote instead of certify",
            &f.verifier,
            json(&forge(p, AK_ATTRS, RSASSA, attest(0xFF54_4347, 0x8018, &qs(), &[]))),
            now(),
            |e| matches!(e, DevIdError::AttestType(0x8018)),
        ),
        (
            "certify name of another key",
            &f.verifier,
            json(&forge(p, AK_ATTRS, RSASSA, attest(0xFF54_4347, 0x8017, &qs(), &name(&other_devid.public)))),
            now(),
            |e| matches!(e, DevIdError::CertifyName),
        ),
    ];
    assert!(rows.len() >= 25);
    for (case, verifier, payload, at, check) in rows {
        match verifier.challenge(&payload, at) {
            Ok(_) => panic!("{case}: accepted"),
            Err(e) => assert!(check(&e), "{case}: wrong error: {e}"),
        }
    }

    // The checks SPIRE omits: SPIRE's checks alone accept each forgery, ours refuse it with its own error.
    let extra: Vec<(&str, AttestationRequest, Check)> = vec![
        (
            "non-restricted AK",
            forge(p, AK_ATTRS & !attr::RESTRICTED, RSASSA, genuine_attest(0x8017, 0xFF54_4347)),
            |e| matches!(e, DevIdError::AkAttributes { .. }),
        ),
        ("AK not fixedTPM", forge(p, AK_ATTRS & !attr::FIXED_TPM, RSASSA, genuine_attest(0x8017, 0xFF54_4347)), |e| {
            matches!(e, DevIdError::AkAttributes { .. })
        }),
        (
            "DevIDPub not the certificate's key",
            {
                let mut q = forge(p, AK_ATTRS, RSASSA, attest(0xFF54_4347, 0x8017, &qs(), &name(&other_devid.public)));
                q.devid_pub = other_devid.public.clone();
                q
            },
            |e| matches!(e, DevIdError::DevIdPubMismatch),
        ),
        (
            "DevIDPub made outside the TPM (not fixedTPM, fixedParent, sensitiveDataOrigin), certified there",
            {
                let mut outside = TpmPublic::parse(&p.devid_pub, "DevIDPub").unwrap();
                outside.attributes &= !(attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN);
                let outside = outside.marshal();
                let mut q = forge(p, AK_ATTRS, RSASSA, attest(0xFF54_4347, 0x8017, &qs(), &name(&outside)));
                q.devid_pub = outside;
                q
            },
            |e| matches!(e, DevIdError::DevIdNotResident { .. }),
        ),
        (
            "qualifiedSigner not a name",
            forge(p, AK_ATTRS, RSASSA, attest(0xFF54_4347, 0x8017, b"me", &devid_name)),
            |e| matches!(e, DevIdError::QualifiedSigner),
        ),
    ];
    for (case, payload, check) in extra {
        f.spire_only.challenge(&json(&payload), now()).unwrap_or_else(|e| panic!("{case}: SPIRE's checks refuse: {e}"));
        match f.verifier.challenge(&json(&payload), now()) {
            Ok(_) => panic!("{case}: accepted"),
            Err(e) => assert!(check(&e), "{case}: wrong error: {e}"),
        }
    }
}

#[test]
fn every_broken_response_is_refused_and_a_wrong_challenge_is_refused_by_the_tpm() {
    let f = fixture();
    let cfg = plugin::devid::agent::parse_config(&f.lab.agent_hcl()).unwrap();
    let run = |edit: &dyn Fn(&mut ChallengeResponse) -> Vec<u8>| {
        let (payload, pending) = plugin::devid::agent::begin(&cfg).unwrap();
        let (challenge, challenged) = f.verifier.challenge(&payload, now()).unwrap();
        let answer = plugin::devid::agent::answer(&pending, &challenge).unwrap();
        let mut response: ChallengeResponse = serde_json::from_slice(&answer).unwrap();
        challenged.verify(&edit(&mut response))
    };
    type Check = fn(&DevIdError) -> bool;
    type Edit<'a> = &'a dyn Fn(&mut ChallengeResponse) -> Vec<u8>;
    let rows: Vec<(&str, Edit, Check)> = vec![
        ("genuine", &|r| serde_json::to_vec(r).unwrap(), |_| false),
        ("not JSON", &|_| b"[".to_vec(), |e| matches!(e, DevIdError::Json { what: "challenges response", .. })),
        (
            "wrong nonce signature",
            &|r| {
                r.devid[5] ^= 1;
                serde_json::to_vec(r).unwrap()
            },
            |e| matches!(e, DevIdError::ProofOfPossession),
        ),
        (
            "wrong activated secret",
            &|r| {
                r.cred_activation[0] ^= 1;
                serde_json::to_vec(r).unwrap()
            },
            |e| matches!(e, DevIdError::ProofOfResidency),
        ),
        (
            "no activated secret",
            &|r| {
                r.cred_activation.clear();
                serde_json::to_vec(r).unwrap()
            },
            |e| matches!(e, DevIdError::ResponseMissing(_)),
        ),
    ];
    for (case, edit, check) in rows {
        match run(edit) {
            Ok(a) => assert_eq!(case, "genuine", "{case}: accepted as {a:?}"),
            Err(e) => assert!(check(&e), "{case}: wrong error: {e}"),
        }
    }

    // Agent side: a credential made for another AK is refused by the TPM itself; a null credential by the agent.
    let (payload, pending) = plugin::devid::agent::begin(&cfg).unwrap();
    let (_, pending_other) = plugin::devid::agent::begin(&cfg).unwrap();
    let (challenge, _) = f.verifier.challenge(&payload, now()).unwrap();
    match plugin::devid::agent::answer(&pending_other, &challenge) {
        Err(plugin::devid::agent::AgentError::Tpm { cause: TpmError::CredentialRefused { .. }, .. }) => {}
        other => panic!("credential for another AK: {other:?}"),
    }
    let mut c: ChallengeRequest = serde_json::from_slice(&challenge).unwrap();
    c.cred_activation = None;
    let err = plugin::devid::agent::answer(&pending, &serde_json::to_vec(&c).unwrap()).unwrap_err();
    assert!(err.to_string().contains("empty credential activation"), "{err}");
    assert_eq!(f.lab.tpm_leftovers().unwrap(), "", "objects or sessions left in the TPM");
}

#[test]
fn agent_side_refusals_name_the_cause_and_leave_nothing_in_the_tpm() {
    let lab = DevIdLab::new(LabOptions {
        devid_password: Some("devid-pw"),
        owner_password: Some("owner-pw"),
        endorsement_password: Some("endorse-pw"),
        ..LabOptions::default()
    })
    .unwrap();
    let cfg = plugin::devid::agent::parse_config(&lab.agent_hcl()).unwrap();
    let tpm = Tpm::open(&cfg.device).unwrap();
    let pw = |s: &str| Password::new(s.as_bytes().to_vec());
    let good = cfg.hierarchies.clone();
    tpm.devid_evidence(&cfg.devid, &cfg.devid_password, &good).unwrap();
    let wrong_owner = Hierarchies { owner: pw("nope"), ..good.clone() };
    let wrong_endorsement = Hierarchies { endorsement: pw("nope"), ..good.clone() };
    // A DevID made on another TPM.
    let other_tpm = testbed::swtpm::Swtpm::start().unwrap();
    let other = Tpm::open(&other_tpm.device()).unwrap();
    let foreign = other.create_devid(KeyType::Rsa2048, &Password::default(), &Password::default()).unwrap();
    let foreign = DevIdBlobs::parse(foreign.private, foreign.public).unwrap();
    type Check = fn(&TpmError) -> bool;
    let rows: Vec<(&str, &DevIdBlobs, Password, &Hierarchies, Check)> = vec![
        ("wrong DevID password", &cfg.devid, pw("nope"), &good, |e| {
            matches!(e, TpmError::AuthFailed { what: "DevID password", .. })
        }),
        ("wrong owner password", &cfg.devid, cfg.devid_password.clone(), &wrong_owner, |e| {
            matches!(e, TpmError::AuthFailed { what: "owner hierarchy password", .. })
        }),
        ("wrong endorsement password", &cfg.devid, cfg.devid_password.clone(), &wrong_endorsement, |e| {
            matches!(e, TpmError::AuthFailed { what: "endorsement hierarchy password", .. })
        }),
        ("DevID blob from another TPM", &foreign, Password::default(), &good, |e| {
            matches!(e, TpmError::ForeignBlob { .. })
        }),
    ];
    for (case, devid, devid_pw, hierarchies, check) in rows {
        match tpm.devid_evidence(devid, &devid_pw, hierarchies) {
            Ok(_) => panic!("{case}: accepted"),
            Err(e) => {
                assert!(check(&e), "{case}: wrong error: {e}");
                assert!(!e.to_string().contains("nope") && !e.to_string().contains("-pw"), "{case}: secret in {e}");
            }
        }
        assert_eq!(lab.tpm_leftovers().unwrap(), "", "{case}: objects or sessions left in the TPM");
    }
    // A TPM without an EK certificate in NV (blank swtpm, DevID made there): the evidence carries the EK's
    // public key and no certificate (a server must know the EK by its hash), and nothing is left loaded.
    let blank = Tpm::open(&other_tpm.device()).unwrap();
    let devid = blank.create_devid(KeyType::EccP256, &Password::default(), &Password::default()).unwrap();
    let devid = DevIdBlobs::parse(devid.private, devid.public).unwrap();
    let (evidence, _) = blank.devid_evidence(&devid, &Password::default(), &Hierarchies::default()).unwrap();
    assert!(evidence.ek_cert.is_none() && !evidence.ek_pub.is_empty(), "no EK certificate: {evidence:?}");
    // Blobs in the wrong format (tpm2-tools' TPM2B files) are refused before the TPM is touched.
    let with_size = [&(cfg.devid.public.len() as u16).to_be_bytes()[..], &cfg.devid.public].concat();
    assert!(matches!(DevIdBlobs::parse(cfg.devid.private.clone(), with_size), Err(TpmError::BadBlob { .. })));
}

/// Chain building refuses what Go's verifier refuses (and a little more), on certificates made by openssl.
#[test]
fn chain_building_refuses_non_ca_issuers_path_length_and_unknown_critical_extensions() {
    use crypto::devid::chain::{parse_pem_bundle, verify};
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let root_extensions = ["basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign"];
    testbed::pki::p256_self_signed(p, "root", "/CN=root", 3, &root_extensions).unwrap();
    let issue = |name: &str, ca: &str, extfile: &str| {
        testbed::pki::p256_csr(p, name, &format!("/CN={name}")).unwrap();
        testbed::pki::issue(p, name, ca, 2, extfile).unwrap();
    };
    issue("int", "root", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n");
    issue("notca", "root", "basicConstraints=critical,CA:FALSE\n");
    issue("leaf", "root", "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n");
    issue("under-int", "int", "basicConstraints=critical,CA:FALSE\n");
    issue("under-notca", "notca", "basicConstraints=critical,CA:FALSE\n");
    issue("odd", "root", "1.2.3.4.5=critical,ASN1:NULL\n");
    issue("san", "root", "subjectAltName=critical,dirName:dir_sect\n[dir_sect]\nCN=tpm\n");
    let one = |f: &str| parse_pem_bundle(&std::fs::read(p.join(f)).unwrap()).unwrap().remove(0);
    let root = vec![one("root.pem")];
    let now = common::clock::unix_now();
    // Accepted: a direct leaf, and a critical SAN with only a directoryName (as EK certificates carry).
    assert_eq!(verify(&one("leaf.pem"), &[], &root, now).unwrap().len(), 1);
    verify(&one("san.pem"), &[], &root, now).unwrap();
    type Check = fn(&ChainError) -> bool;
    let rows: Vec<(&str, &str, Vec<&str>, u64, Check)> = vec![
        ("issuer is not a CA", "under-notca.pem", vec!["notca.pem"], now, |e| matches!(e, ChainError::NotCa { .. })),
        ("root's pathlen:0 exceeded", "under-int.pem", vec!["int.pem"], now, |e| {
            matches!(e, ChainError::TooLong { .. })
        }),
        ("unknown critical extension", "odd.pem", vec![], now, |e| matches!(e, ChainError::UnhandledCritical { .. })),
        ("not yet valid", "leaf.pem", vec![], now - 86_400 * 2, |e| matches!(e, ChainError::Validity { .. })),
        ("unknown issuer", "under-int.pem", vec![], now, |e| matches!(e, ChainError::UnknownAuthority { .. })),
    ];
    for (case, leaf, intermediates, at, check) in rows {
        let intermediates: Vec<_> = intermediates.into_iter().map(one).collect();
        match verify(&one(leaf), &intermediates, &root, at) {
            Ok(_) => panic!("{case}: accepted"),
            Err(e) => assert!(check(&e), "{case}: wrong error: {e}"),
        }
    }
}

/// The attack on the old chain builder: a leaf plus 7 self-issued `CA:TRUE` intermediates that share one name
/// and one key (the agent sends them before it has proved anything) made it try every ordering, 5,040 paths,
/// one signature check per step. Copies of one CA now count once per path; copies that differ only in their
/// subjectAltName (which Go does not treat as the same CA) exhaust a fixed budget instead, as in Go.
#[test]
fn attacker_supplied_intermediates_cannot_make_chain_building_explode() {
    use crypto::devid::chain::{verify_counted, MAX_SIGNATURE_CHECKS};
    let tmp = tempfile::tempdir().unwrap();
    let attack = testbed::devid::ExplosiveChain::new(tmp.path()).unwrap();
    let now = now() + 60; // every certificate here is valid from the second it was made

    let (result, checks) = verify_counted(&attack.leaf, &attack.copies, &attack.anchors, now);
    assert!(result.is_err(), "a chain to an untrusted name verified");
    assert!(checks <= 7 + 1, "copies of one CA cost {checks} signature checks");

    let (result, checks) = verify_counted(&attack.leaf, &attack.distinct, &attack.anchors, now);
    assert!(checks <= MAX_SIGNATURE_CHECKS, "{checks} signature checks, more than the budget");
    assert!(matches!(result, Err(ChainError::TooMuchWork { .. })), "expected the budget to stop it: {result:?}");
}
