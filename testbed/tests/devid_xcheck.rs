//! `tpm_devid` against an independent implementation: `testbed/xcheck/spire_devid.py` implements both sides of
//! SPIRE's protocol from the specification with Python's `cryptography` (server checks, TPMS_ATTEST parsing,
//! MakeCredential) and tpm2-tools (the agent's TPM commands). Our agent's messages must pass its server, its agent's
//! messages must pass our server, and a payload it recorded must still pass our server's checks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

use common::clock::unix_now as now;
use crypto::devid::{DevIdVerifier, ExtraChecks};
use testbed::devid::{DevIdLab, LabOptions};

/// Debian's interpreter, with Debian's `python3-cryptography` (installed by `make test`), whatever else is on PATH.
const PYTHON: &str = "/usr/bin/python3";

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("xcheck/spire_devid.py")
}

fn py(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(PYTHON).arg(script()).args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "spire_devid.py {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn verifier(lab: &DevIdLab) -> DevIdVerifier {
    let read = |f: &str| std::fs::read(lab.path(f)).unwrap();
    DevIdVerifier::new(&read("root.pem"), &read("endorsement-ca.pem"), ExtraChecks::default()).unwrap()
}

fn our_agent_passes_their_server(options: LabOptions) {
    let lab = DevIdLab::new(options).unwrap();
    let d = lab.dir();
    let s = |f: &str| lab.path(f).display().to_string();
    let cfg = plugin::devid::agent::parse_config(&lab.agent_hcl()).unwrap();
    let (payload, pending) = plugin::devid::agent::begin(&cfg).unwrap();
    std::fs::write(lab.path("payload.json"), &payload).unwrap();
    let challenge = py(
        &[
            "server-challenge",
            "--payload",
            &s("payload.json"),
            "--devid-ca",
            &s("root.pem"),
            "--ek-ca",
            &s("endorsement-ca.pem"),
            "--state",
            &s("state.json"),
        ],
        d,
    );
    let response = plugin::devid::agent::answer(&pending, challenge.trim().as_bytes()).unwrap();
    std::fs::write(lab.path("response.json"), &response).unwrap();
    let theirs: serde_json::Value = serde_json::from_str(&py(
        &[
            "server-verify",
            "--response",
            &s("response.json"),
            "--state",
            &s("state.json"),
            "--trust-domain",
            "example.org",
        ],
        d,
    ))
    .unwrap();
    // Our server, on a fresh exchange with the same DevID, names the agent and SPIRE's selectors identically, in
    // SPIRE's order; what it adds (`ek:*`, from what the TPM proved) comes after them.
    let (payload, pending) = plugin::devid::agent::begin(&cfg).unwrap();
    let (challenge, challenged) = verifier(&lab).challenge(&payload, now()).unwrap();
    let ours = challenged.verify(&plugin::devid::agent::answer(&pending, &challenge).unwrap()).unwrap();
    assert_eq!(theirs["spiffe_id"], format!("spiffe://example.org{}", ours.agent_path()));
    let spires = ours.selectors.iter().take_while(|s| !s.starts_with("ek:")).cloned().collect::<Vec<_>>();
    assert_eq!(theirs["selectors"], serde_json::json!(spires));
    assert!(ours.selectors[spires.len()..].iter().all(|s| s.starts_with("ek:")), "{:?}", ours.selectors);
    assert!(ours.selectors[spires.len()].starts_with("ek:hash:"), "{:?}", ours.selectors);
    // Their server refuses our response when the activated secret is wrong (it checks, too).
    let mut bad: serde_json::Value = serde_json::from_slice(&response).unwrap();
    bad["CredActivation"] = serde_json::json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    std::fs::write(lab.path("bad.json"), bad.to_string()).unwrap();
    let out = Command::new(PYTHON)
        .arg(script())
        .args(["server-verify", "--response", &s("bad.json"), "--state", &s("state.json"), "--trust-domain", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "their server accepted a wrong secret");
}

fn their_agent_passes_our_server(options: LabOptions) {
    let lab = DevIdLab::new(options).unwrap();
    let d = lab.dir();
    let s = |f: &str| lab.path(f).display().to_string();
    let tcti = lab.tpm.tcti();
    let mut args = vec!["--tcti".to_string(), tcti, "--workdir".into(), s("work")];
    for (flag, pw) in [
        ("--devid-password", lab.options.devid_password),
        ("--owner-password", lab.options.owner_password),
        ("--endorsement-password", lab.options.endorsement_password),
    ] {
        if let Some(pw) = pw {
            args.extend([flag.to_string(), pw.to_string()]);
        }
    }
    std::fs::create_dir_all(lab.path("work")).unwrap();
    let mut payload_args = vec![
        "agent-payload".to_string(),
        "--devid-cert".into(),
        s("devid/devid.crt.pem"),
        "--devid-priv".into(),
        s("devid/devid.priv.blob"),
        "--devid-pub".into(),
        s("devid/devid.pub.blob"),
    ];
    payload_args.extend(args.iter().cloned());
    let payload = py(&payload_args.iter().map(String::as_str).collect::<Vec<_>>(), d);
    let (challenge, challenged) = verifier(&lab).challenge(payload.trim().as_bytes(), now()).unwrap();
    std::fs::write(lab.path("challenge.json"), &challenge).unwrap();
    let mut respond_args = vec!["agent-respond".to_string(), "--challenge".into(), s("challenge.json")];
    respond_args.extend(args.iter().cloned());
    let response = py(&respond_args.iter().map(String::as_str).collect::<Vec<_>>(), d);
    let attested = challenged.verify(response.trim().as_bytes()).unwrap();
    assert!(attested.selectors.contains(&"subject:cn:node-1.example.org".to_string()), "{attested:?}");
    assert_eq!(lab.tpm_leftovers().unwrap(), "", "their agent left objects in the TPM");
}

#[test]
fn our_rsa_agent_passes_their_server() {
    our_agent_passes_their_server(LabOptions::default());
}

#[test]
fn our_ecc_agent_with_passwords_passes_their_server() {
    our_agent_passes_their_server(LabOptions {
        key_type: "ecc-p256",
        devid_password: Some("d"),
        owner_password: Some("o"),
        endorsement_password: Some("e"),
        intermediate: false,
    });
}

#[test]
fn their_rsa_agent_passes_our_server() {
    their_agent_passes_our_server(LabOptions::default());
}

#[test]
fn their_ecc_agent_with_passwords_passes_our_server() {
    their_agent_passes_our_server(LabOptions {
        key_type: "ecc-p256",
        devid_password: Some("d"),
        owner_password: Some("o"),
        endorsement_password: Some("e"),
        intermediate: true,
    });
}
