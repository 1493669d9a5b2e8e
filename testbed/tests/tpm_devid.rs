//! DevID provisioning on swtpm: blobs in SPIRE's format that load under the H-1/H-2 SRK exactly as SPIRE's agent
//! derives it (checked with tpm2-tools), a CSR signed inside the TPM that openssl verifies, passwords from files.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use testbed::process::run_bin;
use testbed::swtpm::Swtpm;

const DEVID: &str = "spire-server-attestor-tpm-devid";

fn provision(tpm: &Swtpm, key_type: &str, out: &Path, extra: &[&str]) -> (i32, String) {
    let dev = tpm.device().to_string();
    let out_s = out.display().to_string();
    let mut args = vec![
        "provision",
        "--tpm-device",
        &dev,
        "--key-type",
        key_type,
        "--subject-cn",
        "node-1.example.org",
        "--out-dir",
        &out_s,
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = run_bin(DEVID, &args, b"").unwrap();
    (code, err)
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn openssl(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("openssl").args(args).current_dir(cwd).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn rsa_and_ecc_devids_load_under_spires_srk_and_their_csrs_verify() {
    for (key_type, srk_alg) in [("rsa2048", "rsa2048:null:aes128cfb"), ("ecc-p256", "ecc256:null:aes128cfb")] {
        let tpm = Swtpm::start().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("devid");
        let (code, err) = provision(&tpm, key_type, &out, &[]);
        assert_eq!(code, 0, "{key_type}: {err}");
        let verified = openssl(&["req", "-in", "devid/devid.csr", "-noout", "-verify", "-subject"], tmp.path());
        assert!(
            verified.contains("verify OK") || verified.contains("Certificate request self-signature verify OK"),
            "{verified}"
        );
        assert!(verified.contains("node-1.example.org"), "{verified}");
        // SPIRE's agent: CreatePrimary(owner, H-1/H-2) then Load(priv, pub) from the blobs without size prefixes.
        std::fs::write(tmp.path().join("pub.tpm2b"), tpm2b(&std::fs::read(out.join("devid.pub.blob")).unwrap()))
            .unwrap();
        std::fs::write(tmp.path().join("priv.tpm2b"), tpm2b(&std::fs::read(out.join("devid.priv.blob")).unwrap()))
            .unwrap();
        let attrs = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";
        tpm.tpm2(
            "tpm2_createprimary",
            &["-Q", "-C", "o", "-g", "sha256", "-G", srk_alg, "-a", attrs, "-c", "srk.ctx"],
            tmp.path(),
        )
        .unwrap();
        tpm.tpm2(
            "tpm2_load",
            &["-Q", "-C", "srk.ctx", "-u", "pub.tpm2b", "-r", "priv.tpm2b", "-c", "devid.ctx"],
            tmp.path(),
        )
        .unwrap_or_else(|e| panic!("{key_type}: the DevID does not load under SPIRE's SRK: {e}"));
        tpm.tpm2("tpm2_flushcontext", &["-t"], tmp.path()).unwrap();
        // Under the tpm2-tools default SRK (no noDA) it must NOT load: the template is what makes it SPIRE's.
        let plain = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt";
        tpm.tpm2(
            "tpm2_createprimary",
            &["-Q", "-C", "o", "-g", "sha256", "-G", srk_alg, "-a", plain, "-c", "other.ctx"],
            tmp.path(),
        )
        .unwrap();
        assert!(tpm
            .tpm2(
                "tpm2_load",
                &["-Q", "-C", "other.ctx", "-u", "pub.tpm2b", "-r", "priv.tpm2b", "-c", "x.ctx"],
                tmp.path()
            )
            .is_err());
        tpm.tpm2("tpm2_flushcontext", &["-t"], tmp.path()).unwrap();
        // Refuses to overwrite an existing DevID.
        let (code, err) = provision(&tpm, key_type, &out, &[]);
        assert_ne!(code, 0);
        assert!(err.contains("already exists"), "{err}");
    }
}

#[test]
fn passwords_come_from_files_and_wrong_ones_fail() {
    let tpm = Swtpm::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    std::fs::write(p.join("owner"), "owner-secret\n").unwrap();
    std::fs::write(p.join("wrong"), "nope\n").unwrap();
    std::fs::write(p.join("devid"), "devid-secret\n").unwrap();
    tpm.tpm2("tpm2_changeauth", &["-c", "o", "owner-secret"], p).unwrap();
    let owner = p.join("owner").display().to_string();
    let wrong = p.join("wrong").display().to_string();
    let devid = p.join("devid").display().to_string();
    let (code, err) = provision(&tpm, "ecc-p256", &p.join("bad"), &["--owner-password-file", &wrong]);
    assert_ne!(code, 0, "a wrong owner password was accepted");
    assert!(!err.contains("nope") && !err.contains("owner-secret"), "a password leaked into the error: {err}");
    assert!(!p.join("bad/devid.priv.blob").exists(), "files written on failure");
    let (code, err) = provision(
        &tpm,
        "ecc-p256",
        &p.join("good"),
        &["--owner-password-file", &owner, "--devid-password-file", &devid],
    );
    assert_eq!(code, 0, "{err}");
    openssl(&["req", "-in", "good/devid.csr", "-noout", "-verify"], p);
    // The DevID needs its password: loading works, signing without it fails (tpm2-tools as an independent check).
    std::fs::write(p.join("pub.tpm2b"), tpm2b(&std::fs::read(p.join("good/devid.pub.blob")).unwrap())).unwrap();
    std::fs::write(p.join("priv.tpm2b"), tpm2b(&std::fs::read(p.join("good/devid.priv.blob")).unwrap())).unwrap();
    std::fs::write(p.join("msg"), "m").unwrap();
    let attrs = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt";
    tpm.tpm2(
        "tpm2_createprimary",
        &[
            "-Q",
            "-C",
            "o",
            "-P",
            "owner-secret",
            "-g",
            "sha256",
            "-G",
            "ecc256:null:aes128cfb",
            "-a",
            attrs,
            "-c",
            "srk.ctx",
        ],
        p,
    )
    .unwrap();
    tpm.tpm2("tpm2_load", &["-Q", "-C", "srk.ctx", "-u", "pub.tpm2b", "-r", "priv.tpm2b", "-c", "devid.ctx"], p)
        .unwrap();
    tpm.tpm2("tpm2_flushcontext", &["-t"], p).unwrap(); // raw swtpm: 3 object slots, no resource manager
    let err = tpm
        .tpm2("tpm2_sign", &["-Q", "-c", "devid.ctx", "-g", "sha256", "-o", "sig", "msg"], p)
        .unwrap_err()
        .to_string();
    assert!(err.contains("authorization"), "signing without the DevID password failed for another reason: {err}");
    tpm.tpm2("tpm2_flushcontext", &["-t"], p).unwrap();
    tpm.tpm2("tpm2_sign", &["-Q", "-c", "devid.ctx", "-p", "devid-secret", "-g", "sha256", "-o", "sig", "msg"], p)
        .unwrap();
}

#[test]
fn a_manufactured_swtpm_has_an_ek_certificate_that_chains_to_its_private_ca() {
    let tpm = Swtpm::start_with_ek().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    // Read the RSA EK certificate from NV with the index's own (empty) auth, as SPIRE's agent does.
    tpm.tpm2("tpm2_nvread", &["-C", "0x01c00002", "0x01c00002", "-o", "ek.der"], p).unwrap();
    let ek = std::fs::read(p.join("ek.der")).unwrap();
    assert!(ek.len() > 500 && ek[0] == 0x30, "not a DER certificate ({} bytes)", ek.len());
    openssl(&["x509", "-inform", "DER", "-in", "ek.der", "-out", "ek.pem"], p);
    let ca = tpm.ek_ca().unwrap().display().to_string();
    let out = openssl(&["verify", "-CAfile", &ca, "ek.pem"], p);
    assert!(out.contains("ek.pem: OK"), "{out}");
    // And it does not chain to another instance's CA.
    let other = Swtpm::start_with_ek().unwrap();
    let other_ca = other.ek_ca().unwrap().display().to_string();
    let bad = Command::new("openssl").args(["verify", "-CAfile", &other_ca, "ek.pem"]).current_dir(p).output().unwrap();
    assert!(!bad.status.success());
}

#[test]
fn sign_csr_issues_a_leaf_that_chains_to_the_devid_ca_and_refuses_bad_input() {
    let tpm = Swtpm::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let (code, err) = provision(&tpm, "ecc-p256", &p.join("devid"), &[]);
    assert_eq!(code, 0, "{err}");
    // A DevID CA: RSA root -> P-256 intermediate (any X.509 CA works).
    testbed::devid::make_devid_ca(p, "devid").unwrap();
    let s = |f: &str| p.join(f).display().to_string();
    let sign = |csr: &str, cert: &str, key: &str, out: &str| {
        run_bin(
            DEVID,
            &[
                "sign-csr",
                "--csr",
                &s(csr),
                "--ca-cert",
                &s(cert),
                "--ca-key",
                &s(key),
                "--chain",
                &s("int.pem"),
                "--out",
                &s(out),
            ],
            b"",
        )
        .unwrap()
    };
    let (code, _, err) = sign("devid/devid.csr", "int.pem", "int.key", "devid.crt.pem");
    assert_eq!(code, 0, "{err}");
    let leaf_and_chain = std::fs::read_to_string(p.join("devid.crt.pem")).unwrap();
    assert_eq!(leaf_and_chain.matches("BEGIN CERTIFICATE").count(), 2, "leaf followed by the intermediate");
    let out = openssl(&["verify", "-CAfile", "root.pem", "-untrusted", "int.pem", "devid.crt.pem"], p);
    assert!(out.contains("devid.crt.pem: OK"), "{out}");
    // The leaf certifies the DevID key (the CSR's key) and names the node.
    let leaf_key = openssl(&["x509", "-in", "devid.crt.pem", "-noout", "-pubkey"], p);
    let csr_key = openssl(&["req", "-in", "devid/devid.csr", "-noout", "-pubkey"], p);
    assert_eq!(leaf_key, csr_key);
    assert!(openssl(&["x509", "-in", "devid.crt.pem", "-noout", "-subject"], p).contains("node-1.example.org"));
    // An RSA CA key signs too (the root, directly).
    let (code, _, err) = sign("devid/devid.csr", "root.pem", "root.key", "direct.pem");
    assert_eq!(code, 0, "{err}");
    let out = openssl(&["verify", "-CAfile", "root.pem", "direct.pem"], p);
    assert!(out.contains("direct.pem: OK"), "{out}");
    // Negative table: nothing issued.
    let mut csr = std::fs::read_to_string(p.join("devid/devid.csr")).unwrap();
    let der_start = csr.find('\n').unwrap() + 20;
    let flipped = if &csr[der_start..der_start + 1] == "A" { "B" } else { "A" };
    csr.replace_range(der_start..der_start + 1, flipped);
    std::fs::write(p.join("tampered.csr"), csr).unwrap();
    std::fs::write(p.join("garbage.csr"), "not a csr").unwrap();
    for (case, csr, cert, key) in [
        ("tampered CSR", "tampered.csr", "int.pem", "int.key"),
        ("garbage CSR", "garbage.csr", "int.pem", "int.key"),
        ("key of another CA", "devid/devid.csr", "int.pem", "root.key"),
        ("not a key", "devid/devid.csr", "int.pem", "int.pem"),
    ] {
        let (code, _, err) = sign(csr, cert, key, "bad.pem");
        assert_ne!(code, 0, "{case}");
        assert!(!err.trim().is_empty(), "{case}");
        assert!(!p.join("bad.pem").exists(), "{case}: a certificate was written");
    }
}
