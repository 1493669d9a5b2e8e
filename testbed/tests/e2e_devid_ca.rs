//! The enrollment CA end to end: the real CA on swtpm, nodes enrolling with the real `devid enroll` on their own
//! swtpm (manufactured with EK certificates by a private swtpm_localca, or without one: a virtual TPM), and what
//! they get checked as SPIRE's `tpm_devid` checks it (`devid check`, our server side).

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::devid_ca::{ek_hash_line, CaOptions, CaSite, CA, DEVID};
use testbed::process::run_bin;
use testbed::swtpm::Swtpm;

/// `devid check` of the enrolled node against the CA's chain: (exit code, stdout + stderr).
fn check(ca: &CaSite, node: &Swtpm, out: &std::path::Path, ek_ca: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let device = node.device().to_string();
    let p = |f: &str| out.join(f).display().to_string();
    let (devid_ca, ek) = (ca.ca_cert.display().to_string(), ek_ca.display().to_string());
    let (cert, private, public) = (p("devid.crt.pem"), p("devid.priv.blob"), p("devid.pub.blob"));
    let mut args = vec![
        "check",
        "--tpm-device",
        &device,
        "--devid-cert",
        &cert,
        "--devid-priv",
        &private,
        "--devid-pub",
        &public,
        "--devid-ca",
        &devid_ca,
        "--endorsement-ca",
        &ek,
    ];
    args.extend_from_slice(extra);
    let (code, out, err) = run_bin(DEVID, &args, b"").unwrap();
    (code, format!("{out}{err}"))
}

/// Nodes enroll with and without passwords of their own, from a CA whose key has one (`tpm-key-password-file`): it
/// signs every certificate and CRL with it; the key cannot sign without it, and the CA started with a wrong password
/// or none stops at once, saying which password was refused. `provision` again keeps the key and its certificate,
/// refuses another key's certificate at ca-cert, and writes a CSR for this key.
#[test]
fn nodes_with_a_token_or_in_the_inventory_enroll_rsa_and_ecc_with_and_without_passwords() {
    let (a, b) = (Swtpm::start_with_ek().unwrap(), Swtpm::start_with_ek().unwrap());
    let line = ek_hash_line(&a, "node-a").unwrap();
    assert!(line.starts_with("sha256:") && line.ends_with(" node-a"), "{line}");
    let mut ca = CaSite::start(&CaOptions {
        endorsement_cas: vec![a.ek_ca().unwrap().to_owned(), b.ek_ca().unwrap().to_owned()],
        inventory: Some(format!("{line}\n")),
        key_password: Some("0123456789abcdef0123456789abcdef\n"),
        ..CaOptions::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let pw = dir.path().join("pw").display().to_string();
    // a: in the inventory, RSA DevID, no password.
    let out_a = dir.path().join("a");
    let (code, err) = ca.enroll(&a, &out_a, &["--key-type", "rsa2048"]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("DevID certificate for node-a"), "{err}");
    // b: a one-time token, ECC DevID, DevID, owner and endorsement passwords.
    b.tpm2("tpm2_changeauth", &["-c", "o", "s3cret"], dir.path()).unwrap();
    b.tpm2("tpm2_changeauth", &["-c", "e", "s3cret"], dir.path()).unwrap();
    let token = ca.token("node-b", "1h").unwrap();
    std::fs::write(dir.path().join("token"), &token).unwrap();
    let out_b = dir.path().join("b");
    let token_file = dir.path().join("token").display().to_string();
    let (code, err) = ca
        .enroll(
            &b,
            &out_b,
            &[
                "--key-type",
                "ecc-p256",
                "--token-file",
                &token_file,
                "--devid-password-file",
                &pw,
                "--owner-password-file",
                &pw,
                "--endorsement-password-file",
                &pw,
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(code, 0, "{err}");
    for (node, out, ek_ca, name, extra) in [
        (&a, &out_a, a.ek_ca().unwrap(), "node-a", vec![]),
        (
            &b,
            &out_b,
            b.ek_ca().unwrap(),
            "node-b",
            vec!["--devid-password-file", &pw, "--owner-password-file", &pw, "--endorsement-password-file", &pw],
        ),
    ] {
        let (code, said) = check(&ca, node, out, ek_ca, &extra);
        assert_eq!(code, 0, "{name}: {said}");
        assert!(said.contains(&format!("subject:cn:{name}")), "{name}: {said}");
        assert!(said.contains("issuer:cn:Test Fleet DevID CA"), "{name}: {said}");
    }
    // The same node again without --renew-before: its DevID is kept, nothing asked of the CA.
    let (code, err) = ca.enroll(&a, &out_a, &[]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is kept"), "{err}");
    let listed = ca.list().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|row| row[1] == "issued"), "{listed:?}");

    // The CA key without its password: the TPM refuses to sign, and the CA does not start.
    ca.daemon().unwrap().stop().unwrap();
    let key = tpm::Tpm::open(&ca.tpm.device()).unwrap().signing_key("0x81008007".parse().unwrap()).unwrap();
    let refused = tpm::KeySigner::sign_digest(&key, &[0u8; 32]).unwrap_err().to_string();
    assert!(refused.contains("password was refused"), "{refused}");
    // provision again, with the password: the key and its certificate are kept; a certificate of another key at
    // ca-cert is refused and left as it was; --csr asks an offline root for this key's certificate.
    let cert = std::fs::read_to_string(&ca.ca_cert).unwrap();
    let (code, _, err) = ca.admin(&["provision", "--self-signed", "--subject-cn", "Again"]).unwrap();
    assert!(code == 0 && err.contains("already this CA key's certificate: kept"), "{err}");
    let other = testbed::pki::spire_ca(dir.path(), "example.org", "other").unwrap();
    std::fs::write(&ca.ca_cert, &other).unwrap();
    let (code, _, err) = ca.admin(&["provision", "--self-signed", "--subject-cn", "Again"]).unwrap();
    assert!(code != 0 && err.contains("is not this TPM key's certificate"), "{err}");
    assert_eq!(std::fs::read_to_string(&ca.ca_cert).unwrap(), other);
    std::fs::write(&ca.ca_cert, &cert).unwrap();
    let csr = dir.path().join("ca.csr").display().to_string();
    let (code, _, err) = ca.admin(&["provision", "--csr", &csr, "--subject-cn", "Fleet DevID CA"]).unwrap();
    assert_eq!(code, 0, "{err}");
    let ossl = |args: &[&str]| testbed::pki::openssl(args, dir.path()).unwrap();
    let asked = ossl(&["req", "-in", &csr, "-verify", "-noout", "-pubkey", "-subject"]);
    let held = ossl(&["x509", "-in", &ca.ca_cert.display().to_string(), "-noout", "-pubkey"]);
    assert!(asked.contains(held.trim()) && asked.contains("subject=CN = Fleet DevID CA"), "{asked}");
    let config = std::fs::read_to_string(&ca.config).unwrap();
    let without: String =
        config.lines().filter(|l| !l.starts_with("tpm-key-password-file:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("wrong"), "fedcba9876543210\n").unwrap();
    let wrong = format!("{without}tpm-key-password-file: {}\n", dir.path().join("wrong").display());
    for (case, text) in [("wrong", wrong), ("none", without)] {
        std::fs::write(&ca.config, text).unwrap();
        let (code, _, err) = run_bin(CA, &[&ca.config.display().to_string()], b"").unwrap();
        assert_ne!(code, 0, "{case}: started");
        assert!(err.contains("password was refused"), "{case}: {err}");
    }
    std::fs::write(&ca.config, config).unwrap();
    ca.restart().unwrap();
}

/// Every refusal, each with its reason, against the CA running in-process on a manual clock (its key in swtpm;
/// the nodes' TPMs are swtpm too). A refused enrollment writes nothing and leaves the CA's state as it was.
#[test]
fn the_negative_table() {
    use crypto::devid::enroll::{EnrollAnswer, EnrollChallenge};
    use testbed::devid_ca::RawNode;
    let (a, b, stranger, listed) = (
        Swtpm::start_with_ek().unwrap(),
        Swtpm::start_with_ek().unwrap(),
        Swtpm::start_with_ek().unwrap(),
        Swtpm::start_with_ek().unwrap(),
    );
    let clock = common::clock::Clock::manual(common::clock::unix_now());
    let ca = CaSite::start_in_process(
        &CaOptions {
            // stranger's manufacturer is not trusted; listed is in the inventory as "listed".
            endorsement_cas: vec![
                a.ek_ca().unwrap().to_owned(),
                b.ek_ca().unwrap().to_owned(),
                listed.ek_ca().unwrap().to_owned(),
            ],
            inventory: Some(format!("{}\n", ek_hash_line(&listed, "listed").unwrap())),
            validity: Some("1h"),
            ..CaOptions::default()
        },
        clock.clone(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = |name: &str, token: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, token).unwrap();
        f.display().to_string()
    };
    let refused = |what: &str, (code, err): (i32, String), says: &str| {
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains(says), "{what}: {says:?} not in {err:?}");
    };

    // An EK that chains to no configured root, even with a token; and a genuine EK with no approval at all.
    let t = ca.token("stranger", "1h").unwrap();
    let out = dir.path().join("stranger");
    refused(
        "an EK no configured CA certified",
        ca.enroll(&stranger, &out, &["--token-file", &token_file("t0", &t)]).unwrap(),
        "neither certified by a configured endorsement CA",
    );
    assert!(!out.join("devid.crt.pem").exists(), "a refused enrollment wrote a certificate");
    refused(
        "a genuine EK neither listed nor holding a token",
        ca.enroll(&b, &dir.path().join("b0"), &[]).unwrap(),
        "neither in the inventory nor holding an enrollment token",
    );

    // A token works once, for one name, until it expires.
    let once = token_file("t1", &ca.token("node-a", "1h").unwrap());
    assert_eq!(ca.enroll(&a, &dir.path().join("a"), &["--token-file", &once]).unwrap().0, 0);
    refused(
        "a token used twice",
        ca.enroll(&b, &dir.path().join("b1"), &["--token-file", &once]).unwrap(),
        "used already",
    );
    let short = token_file("t2", &ca.token("node-b", "1m").unwrap());
    clock.advance(120);
    refused("an expired token", ca.enroll(&b, &dir.path().join("b2"), &["--token-file", &short]).unwrap(), "expired");
    let other = token_file("t3", &ca.token("not-listed", "1h").unwrap());
    refused(
        "a token for another name than the inventory's",
        ca.enroll(&listed, &dir.path().join("l"), &["--token-file", &other]).unwrap(),
        "in the inventory as listed; the token is for not-listed",
    );

    // Protocol deviations, with a node that speaks the protocol step by step.
    let honest = RawNode::new(&b, tpm::KeyType::EccP256).unwrap();
    let other_tpm = RawNode::new(&a, tpm::KeyType::EccP256).unwrap();
    let begin = |request: &crypto::devid::enroll::EnrollRequest| -> EnrollChallenge {
        let (status, body) = ca.post("/v1/enroll", request).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let answer_refused = |what: &str, answer: &EnrollAnswer, says: &str| {
        let (status, body) = ca.post("/v1/enroll/answer", answer).unwrap();
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains(says), "{what}: {says:?} not in {body:?}");
    };
    let t = ca.token("node-b", "1h").unwrap();
    // An AK that is not in the EK's TPM: b's EK, a's AK. Only a TPM holding both could recover the secret.
    let (mut request, _) = honest.request(Some(&t)).unwrap();
    let (theirs, their_pending) = other_tpm.request(None).unwrap();
    request.ak_pub = theirs.ak_pub;
    let challenge = begin(&request);
    let mut answer = other_tpm.answer(&their_pending, &challenge).unwrap_or_else(|_| EnrollAnswer {
        session: challenge.session.clone(),
        activated_secret: vec![0; 32],
        ..EnrollAnswer::default()
    });
    answer.session = challenge.session.clone();
    answer_refused("an AK not in the EK's TPM", &answer, "credential activation failed");
    // A DevID that is another object than the one certified: a software P-256 key posing as the DevID.
    let (mut request, pending) = honest.request(Some(&t)).unwrap();
    let soft = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
    let mut posing = crypto::devid::tpm2::TpmPublic::parse(&request.devid_pub, "DevID").unwrap();
    let spki = tpm::KeySigner::public_key(&soft).spki_der().to_vec();
    if let crypto::devid::tpm2::KeyParams::Ecc { x, y, .. } = &mut posing.params {
        *x = spki[spki.len() - 64..spki.len() - 32].to_vec();
        *y = spki[spki.len() - 32..].to_vec();
    }
    request.devid_pub = posing.marshal();
    let challenge = begin(&request);
    answer_refused(
        "a software key posing as the DevID",
        &honest.answer(&pending, &challenge).unwrap(),
        "the certified name is not DevIDPub",
    );
    // A DevID the TPM could export (fixedTPM cleared in what is sent): refused before any challenge.
    let (mut request, _) = honest.request(Some(&t)).unwrap();
    let mut loose = crypto::devid::tpm2::TpmPublic::parse(&request.devid_pub, "DevID").unwrap();
    loose.attributes &= !crypto::devid::tpm2::attr::FIXED_TPM;
    request.devid_pub = loose.marshal();
    let (status, body) = ca.post("/v1/enroll", &request).unwrap();
    assert!(status == 403 && body.contains("fixedTPM"), "{status}: {body}");
    // A certification made for another exchange (another nonce), with this exchange's activated secret.
    // One request (one AK) begun twice: two sessions, two nonces.
    let (request, pending) = honest.request(Some(&t)).unwrap();
    let (first, second) = (begin(&request), begin(&request));
    let stale = honest.answer(&pending, &first).unwrap();
    let fresh = honest.answer(&pending, &second).unwrap();
    let replanted = EnrollAnswer {
        certify_info: stale.certify_info.clone(),
        certify_signature: stale.certify_signature.clone(),
        ..fresh
    };
    answer_refused("a certification for another exchange", &replanted, "not made for this exchange");
    // The honest answer issues; the same answer again is a replay.
    let (status, body) = ca.post("/v1/enroll/answer", &stale).unwrap();
    assert_eq!(status, 200, "{body}");
    answer_refused("a replayed answer", &stale, "unknown, used or expired enrollment session");

    // Renewal of a revoked certificate, and of an expired one.
    let out_a = dir.path().join("a");
    let serial = ca.list().unwrap().iter().find(|r| r[2] == "node-a").unwrap()[0].clone();
    let (code, _, err) = ca.admin(&["revoke", "--serial", &serial]).unwrap();
    assert_eq!(code, 0, "{err}");
    refused(
        "renewing a revoked certificate",
        ca.enroll(&a, &out_a, &["--renew-before", "100h"]).unwrap(),
        "was revoked",
    );
    let out_b = dir.path().join("b-renew");
    let t = token_file("t4", &ca.token("node-b", "1h").unwrap());
    let (code, err) = ca.enroll(&b, &out_b, &["--token-file", &t]).unwrap();
    assert_eq!(code, 0, "{err}");
    clock.advance(2 * 3600);
    let (code, err) = ca.enroll(&b, &out_b, &["--renew-before", "2h"]).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not valid now"), "renewing an expired certificate: {err}");

    // On the node: a certificate that does not chain to --ca-cert is refused, and nothing is written.
    let foreign = CaSite::start(&CaOptions { inventory: Some(String::new()), ..CaOptions::default() }).unwrap();
    let t = token_file("t5", &ca.token("node-b2", "3h").unwrap());
    let out = dir.path().join("b-foreign");
    let device = b.device().to_string();
    let args = [
        "enroll",
        "--url",
        &ca.url,
        "--ca-cert",
        &foreign.ca_cert.display().to_string(),
        "--tls-ca",
        &ca.tls_ca.display().to_string(),
        "--out-dir",
        &out.display().to_string(),
        "--tpm-device",
        &device,
        "--token-file",
        &t,
    ];
    let (code, _, err) = run_bin(DEVID, &args, b"").unwrap();
    refused("a certificate that does not chain to --ca-cert", (code, err), "does not chain to --ca-cert");
    assert!(!out.join("devid.crt.pem").exists(), "an unchained certificate was written");
    // A certificate that chains but is for another key than this node's DevID.
    let a_chain = std::fs::read_to_string(out_a.join("devid.crt.pem")).unwrap();
    let enrolled = crypto::devid::enroll::Enrolled { chain_pem: a_chain, name: "node-a".into(), ..Default::default() };
    let ca_pem = std::fs::read(&ca.ca_cert).unwrap();
    let now = common::clock::unix_now();
    let a_key = std::fs::read(out_a.join("devid.pub.blob")).unwrap();
    let a_spki = crypto::devid::ek::spki_der(&crypto::devid::tpm2::TpmPublic::parse(&a_key, "DevID").unwrap()).unwrap();
    plugin::devid::enroll::check_issued(&enrolled, &ca_pem, &a_spki, now).unwrap();
    let err = plugin::devid::enroll::check_issued(&enrolled, &ca_pem, honest.blobs.key.spki_der(), now).unwrap_err();
    assert!(err.to_string().contains("does not certify this node's DevID key"), "{err}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A node's whole life with the real CA: a virtual TPM without an EK certificate enrolls through the inventory,
/// a node with a token renews without one inside its window and keeps its DevID outside it, our server plugin
/// admits both certificate holders until they are revoked (by serial, by EK), then refuses them at their next
/// attestation; a revoked certificate cannot be renewed and a revoked EK cannot enroll again, token or not.
#[test]
fn nodes_renew_in_their_window_and_revoked_ones_are_refused_by_our_server_plugin_and_cannot_enroll_again() {
    use testbed::devid_ca::{agent_hcl, held_leaf};
    use testbed::host::{relay, PluginHost};
    let (a, b, v) = (Swtpm::start_with_ek().unwrap(), Swtpm::start_with_ek().unwrap(), Swtpm::start().unwrap());
    assert!(v.ek_ca().is_none(), "v is a virtual TPM without an EK certificate");
    let lines = format!("{}\n{}\n", ek_hash_line(&b, "node-b").unwrap(), ek_hash_line(&v, "node-v").unwrap());
    let ca = CaSite::start(&CaOptions {
        endorsement_cas: vec![a.ek_ca().unwrap().to_owned(), b.ek_ca().unwrap().to_owned()],
        inventory: Some(lines),
        validity: Some("2h"),
        crl_lifetime: Some("10m"),
        ..CaOptions::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = |n: &str| dir.path().join(n);
    let crl_before = std::fs::read(&ca.crl).unwrap();

    // v: no EK certificate, listed by its EK's hash.
    let (code, err) = ca.enroll(&v, &out("v"), &[]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(held_leaf(&out("v")).unwrap().common_name(false).as_deref(), Some("node-v"));
    let (code, err) = ca.enroll(&b, &out("b"), &["--key-type", "ecc-p256"]).unwrap();
    assert_eq!(code, 0, "{err}");
    // a: a token, once.
    std::fs::write(out("token"), ca.token("node-a", "1h").unwrap()).unwrap();
    let token = out("token").display().to_string();
    let (code, err) = ca.enroll(&a, &out("a"), &["--token-file", &token]).unwrap();
    assert_eq!(code, 0, "{err}");
    let first = held_leaf(&out("a")).unwrap();

    // Outside the window (2h left, renew 1h before): kept. Inside (renew 3h before): renewed without a token,
    // the name carried over, a new serial.
    let (code, err) = ca.enroll(&a, &out("a"), &["--renew-before", "1h"]).unwrap();
    assert!(code == 0 && err.contains("is kept"), "{err}");
    assert_eq!(held_leaf(&out("a")).unwrap().der(), first.der(), "kept means the same certificate");
    let (code, err) = ca.enroll(&a, &out("a"), &["--renew-before", "3h"]).unwrap();
    assert!(code == 0 && err.contains("renewed"), "{err}");
    let renewed = held_leaf(&out("a")).unwrap();
    assert_ne!(renewed.serial(), first.serial());
    assert_eq!(renewed.common_name(false).as_deref(), Some("node-a"));
    let listed = ca.list().unwrap();
    assert_eq!(listed.len(), 4, "v, b, a and a's renewal: {listed:?}");

    // Our server plugin with the CA's CRL admits a and b.
    let manufacturers = out("manufacturers.pem");
    let both = [a.ek_ca().unwrap(), b.ek_ca().unwrap()].map(|p| std::fs::read_to_string(p).unwrap()).concat();
    std::fs::write(&manufacturers, both).unwrap();
    let server = PluginHost::launch("spire-server-nodeattestor-tpm-devid", "NodeAttestor").unwrap();
    server.init().unwrap();
    server.configure(&ca.server_hcl(&manufacturers, true), "example.org").unwrap();
    let agent_of = |tpm: &Swtpm, dir: &std::path::Path| {
        let agent = PluginHost::launch("spire-agent-nodeattestor-tpm-devid", "NodeAttestor").unwrap();
        agent.init().unwrap();
        agent.configure(&agent_hcl(tpm, dir), "example.org").unwrap();
        agent
    };
    let (agent_a, agent_b) = (agent_of(&a, &out("a")), agent_of(&b, &out("b")));
    for (agent, name) in [(&agent_a, "node-a"), (&agent_b, "node-b")] {
        let admitted = relay(agent, &server).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(admitted.attributes.selector_values.contains(&format!("subject:cn:{name}")), "{admitted:?}");
    }

    // Revoke a's certificate by serial: the CRL names it, the plugin refuses a at its next attestation, and the
    // certificate cannot be renewed.
    let (code, _, err) = ca.admin(&["revoke", "--serial", &hex(renewed.serial())]).unwrap();
    assert_eq!(code, 0, "{err}");
    ca.wait_for_crl_listing(renewed.serial()).unwrap();
    let refused = relay(&agent_a, &server).unwrap_err().to_string();
    assert!(refused.contains("InvalidArgument") && refused.contains("is revoked"), "{refused}");
    relay(&agent_b, &server).unwrap();
    let (code, err) = ca.enroll(&a, &out("a"), &["--renew-before", "3h"]).unwrap();
    assert!(code != 0 && err.contains("was revoked"), "{err}");

    // Revoke b's EK: its certificate is listed, the plugin refuses it, and b may not enroll again, with a token
    // or through the inventory, even from scratch.
    let b_hash = ek_hash_line(&b, "x").unwrap().split(' ').next().unwrap().to_owned();
    let (code, _, err) = ca.admin(&["revoke", "--ek-hash", &b_hash]).unwrap();
    assert_eq!(code, 0, "{err}");
    ca.wait_for_crl_listing(held_leaf(&out("b")).unwrap().serial()).unwrap();
    let refused = relay(&agent_b, &server).unwrap_err().to_string();
    assert!(refused.contains("is revoked"), "{refused}");
    std::fs::write(out("token-b"), ca.token("node-b2", "1h").unwrap()).unwrap();
    let token_b = out("token-b").display().to_string();
    for extra in [vec!["--token-file", token_b.as_str()], vec![]] {
        let (code, err) = ca.enroll(&b, &out("b-again"), &extra).unwrap();
        assert!(code != 0 && err.contains("may not enroll again"), "{extra:?}: {err}");
        assert!(!out("b-again").join("devid.crt.pem").exists(), "{extra:?}: nothing written");
    }

    // What the plugin reads from devid_crl_path: an older CRL put back, or a broken file, is not taken; the last
    // good CRL stays in force.
    let anchors = crypto::devid::chain::parse_pem_bundle(&std::fs::read(&ca.ca_cert).unwrap()).unwrap();
    let copy = out("copy.crl");
    std::fs::write(&copy, std::fs::read(&ca.crl).unwrap()).unwrap();
    let file = plugin::devid::watched::CrlFile::crl(&copy, &anchors).unwrap();
    for (what, bytes) in [("the first CRL, older", crl_before), ("garbage", b"not a CRL".to_vec())] {
        std::fs::write(&copy, bytes).unwrap();
        assert!(file.current().revokes(renewed.serial()), "{what} replaced the last good CRL");
    }
    std::fs::write(&copy, b"broken").unwrap();
    let err = plugin::devid::watched::CrlFile::crl(&copy, &anchors).unwrap_err().to_string();
    assert!(err.contains("devid_crl_path"), "a first CRL that is bad does not configure: {err}");

    let states: Vec<(String, String)> = ca.list().unwrap().into_iter().map(|r| (r[2].clone(), r[1].clone())).collect();
    for (name, state) in [("node-a", "revoked"), ("node-b", "revoked"), ("node-v", "issued")] {
        assert!(states.iter().any(|(n, s)| n == name && s == state), "{name} {state}: {states:?}");
    }
}

/// kill -9 of the CA while 50 enrollments are being answered at once (10 nodes, 5 sessions each; two nodes
/// enroll with tokens, eight virtual TPMs through the inventory). Afterwards the database is consistent: serials
/// are unique, every certificate a node received is recorded as issued, and once the CA has started again nothing is
/// left pending and a token is spent exactly when a certificate issued under it exists. The CA serves: a token
/// given back by an abandoned reservation enrolls a node.
#[test]
fn kill_9_during_50_concurrent_enrollments_leaves_the_database_consistent_and_the_ca_serves_again() {
    use crypto::devid::enroll::{EnrollAnswer, EnrollChallenge, Enrolled};
    use testbed::devid_ca::RawNode;
    const NODES: usize = 10;
    const EACH: usize = 5;
    let tpms: Vec<Swtpm> = std::thread::scope(|s| {
        let started: Vec<_> =
            (0..NODES).map(|i| s.spawn(move || if i < 2 { Swtpm::start_with_ek() } else { Swtpm::start() })).collect();
        started.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let inventory: String =
        (2..NODES).map(|i| format!("{}\n", ek_hash_line(&tpms[i], &format!("node-{i}")).unwrap())).collect();
    let mut ca = CaSite::start(&CaOptions {
        endorsement_cas: vec![tpms[0].ek_ca().unwrap().to_owned(), tpms[1].ek_ca().unwrap().to_owned()],
        inventory: Some(inventory),
        ..CaOptions::default()
    })
    .unwrap();
    let tokens: Vec<Vec<(String, String)>> = (0..2)
        .map(|i| {
            (0..EACH)
                .map(|j| {
                    let name = format!("tok-{i}-{j}");
                    (name.clone(), ca.token(&name, "1h").unwrap())
                })
                .collect()
        })
        .collect();

    // Every session begun and answered by its TPM, the answers held back.
    let answers: Vec<EnrollAnswer> = std::thread::scope(|s| {
        let (ca, tokens) = (&ca, &tokens);
        let prepared: Vec<_> = tpms
            .iter()
            .enumerate()
            .map(|(i, tpm)| {
                s.spawn(move || {
                    let node = RawNode::new(tpm, tpm::KeyType::EccP256).unwrap();
                    (0..EACH)
                        .map(|j| {
                            let token = tokens.get(i).map(|t| t[j].1.as_str());
                            let (request, pending) = node.request(token).unwrap();
                            let (status, body) = ca.post("/v1/enroll", &request).unwrap();
                            assert_eq!(status, 200, "node {i}, session {j}: {body}");
                            let challenge: EnrollChallenge = serde_json::from_str(&body).unwrap();
                            node.answer(&pending, &challenge).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        prepared.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), NODES * EACH);
    // The token nodes' answers go last, so the kill is likely to find some of them reserved and unsigned.
    let answers: Vec<EnrollAnswer> = answers[2 * EACH..].iter().chain(&answers[..2 * EACH]).cloned().collect();

    // All 50 answers at once; the CA is killed as soon as the first certificate comes back.
    let (first, delivered) = std::sync::mpsc::channel::<()>();
    let results: Vec<Option<Enrolled>> = std::thread::scope(|s| {
        let ca_ref = &ca;
        let sent: Vec<_> = answers
            .iter()
            .map(|answer| {
                let first = first.clone();
                s.spawn(move || match ca_ref.post("/v1/enroll/answer", answer) {
                    Ok((200, body)) => {
                        let _ = first.send(());
                        Some(serde_json::from_str::<Enrolled>(&body).unwrap())
                    }
                    _ => None,
                })
            })
            .collect();
        delivered.recv_timeout(std::time::Duration::from_secs(60)).expect("no certificate came back");
        let pid = ca_ref.pid().unwrap();
        let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        assert!(killed.success());
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    ca.kill9().unwrap();
    let received: Vec<&Enrolled> = results.iter().flatten().collect();
    assert!(!received.is_empty() && received.len() < NODES * EACH, "killed mid-way: {} delivered", received.len());

    // Started again, the CA abandons what the kill left pending before it serves.
    ca.restart().unwrap();
    let listed = ca.list().unwrap();
    let mut serials: Vec<&str> = listed.iter().map(|r| r[0].as_str()).collect();
    serials.sort_unstable();
    serials.dedup();
    assert_eq!(serials.len(), listed.len(), "a serial twice: {listed:?}");
    assert!(listed.iter().all(|r| r[1] == "issued" || r[1] == "abandoned"), "nothing pending: {listed:?}");
    let issued: std::collections::BTreeMap<&str, &str> =
        listed.iter().filter(|r| r[1] == "issued").map(|r| (r[0].as_str(), r[2].as_str())).collect();
    for e in &received {
        assert_eq!(issued.get(e.serial.as_str()), Some(&e.name.as_str()), "delivered but not recorded: {e:?}");
    }
    eprintln!(
        "{} of {} certificates delivered before the kill, {} issued, {} abandoned",
        received.len(),
        NODES * EACH,
        issued.len(),
        listed.len() - issued.len()
    );
    let (code, out, err) = ca.admin(&["token", "list"]).unwrap();
    assert_eq!(code, 0, "{err}");
    let mut unspent = Vec::new();
    for line in out.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [name, _, "spent", serial] => assert_eq!(issued.get(serial), Some(name), "{line}: spent, nothing issued"),
            [name, _, "unspent"] => {
                assert!(!issued.values().any(|n| n == name), "{line}: unspent, yet a certificate was issued");
                unspent.push(name.to_string());
            }
            _ => panic!("token list: {line}"),
        }
    }
    assert_eq!(out.lines().count(), 2 * EACH);

    // A token not spent (never reached the CA, or given back by an abandoned reservation) enrolls now; if the
    // kill came after every token was spent, a new one does.
    let (given_back, token) = match unspent.first() {
        Some(name) => (name.clone(), tokens.iter().flatten().find(|(n, _)| n == name).unwrap().1.clone()),
        None => ("tok-0-new".to_owned(), ca.token("tok-0-new", "1h").unwrap()),
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), &token).unwrap();
    let owner = if given_back.starts_with("tok-0") { &tpms[0] } else { &tpms[1] };
    let token_file = dir.path().join("token").display().to_string();
    let (code, err) = ca.enroll(owner, &dir.path().join("out"), &["--token-file", &token_file]).unwrap();
    assert!(code == 0 && err.contains(&format!("for {given_back}")), "{err}");
}
