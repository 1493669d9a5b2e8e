//! Compatibility with the Go original's verifier: a token signer-unix binds to a trust domain (claim `spiffetd`,
//! which the original does not know) still verifies the way the original verifies it (golang-jwt's
//! ParseWithClaims into its claims struct, `testbed/gojwt-verify`), and yields the same bundle.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::agent;
use testbed::process::run_bin;
use testbed::single::{provision, start_signer};
use testbed::swtpm::Swtpm;

#[test]
fn the_go_originals_verification_ignores_the_trust_domain_claim_and_still_checks_the_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (tpm, other) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let key = provision(&tpm, "rsa2048", &dir.join("a.pem")).unwrap();
    let other_key = provision(&other, "rsa2048", &dir.join("other.pem")).unwrap();
    let (_signer, socket) = start_signer(dir, "signer", &tpm, &www, "10m").unwrap();
    let ca = testbed::pki::spire_ca(dir, "example.org", "ca").unwrap();
    let sign = |path: &str| {
        let r =
            agent::send(&socket, "POST", path, &[("Content-Type", "application/x-pem-file")], ca.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        r.body.trim().to_owned()
    };
    let bound = sign("/sign?trust-domain=example.org");
    let claims = bound.split('.').nth(1).unwrap();
    let claims = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap();
    assert!(String::from_utf8(claims).unwrap().contains("\"spiffetd\":\"example.org\""), "the token carries the claim");
    let unbound = sign("/sign");
    type Case<'a> = (&'a str, &'a str, &'a std::path::Path, bool);
    let cases: [Case; 3] = [
        ("bound to a trust domain", &bound, &key, true),
        ("without the claim, as the original signs", &unbound, &key, true),
        ("checked against another key", &bound, &other_key, false),
    ];
    for (what, token, pem, ok) in cases {
        let (code, stdout, stderr) = run_bin("gojwt-verify", &[pem.to_str().unwrap()], token.as_bytes()).unwrap();
        if ok {
            assert_eq!(code, 0, "{what}: {stderr}");
            assert_eq!(stdout.trim(), ca.trim(), "{what}: the bundle the original extracts");
        } else {
            assert_ne!(code, 0, "{what}: the Go verification accepted it");
            assert!(stderr.contains("token refused"), "{what}: {stderr}");
        }
    }
}
