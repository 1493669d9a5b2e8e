//! The enrollment CA end to end: the real CA on swtpm, nodes enrolling with the real `devid enroll` on their own
//! swtpm (manufactured with EK certificates by a private swtpm_localca, or without one: a virtual TPM), and what
//! they get checked as SPIRE's `tpm_devid` checks it (`devid check`, our server side).

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::devid_ca::{ek_hash_line, CaOptions, CaSite, DEVID};
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

#[test]
fn nodes_with_a_token_or_in_the_inventory_enroll_rsa_and_ecc_with_and_without_passwords() {
    let (a, b) = (Swtpm::start_with_ek().unwrap(), Swtpm::start_with_ek().unwrap());
    let line = ek_hash_line(&a, "node-a").unwrap();
    assert!(line.starts_with("sha256:") && line.ends_with(" node-a"), "{line}");
    let ca = CaSite::start(&CaOptions {
        endorsement_cas: vec![a.ek_ca().unwrap().to_owned(), b.ek_ca().unwrap().to_owned()],
        inventory: Some(format!("{line}\n")),
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
}
