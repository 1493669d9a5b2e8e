//! What the VM test binaries (`vm_device.rs`, `vm_units.rs`) share: a bundle to sign and the host's verifier.

use std::path::Path;

use testbed::process::run_bin;

const VERIFIER: &str = "spire-server-attestor-tpm-verifier";

/// A bundle for the guest to sign.
pub fn bundle(dir: &Path) -> String {
    testbed::pki::spire_ca(dir, "example.org", "vm-ca").unwrap()
}

/// Runs the host's verifier one-shot on `token` against `key_pem`: (exit code, stdout, stderr).
pub fn verifier_on_host(dir: &Path, key_pem: &[u8], token: &[u8]) -> (i32, String, String) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("vm.pem"), key_pem).unwrap();
    let token_path = dir.join("token");
    std::fs::write(&token_path, token).unwrap();
    let config = dir.join("verifier.conf");
    std::fs::write(
        &config,
        format!(
            "keydir: keys\nstate-dir: {}\nkeyset:\n  main:\n    url: file://{}\n    chain: [vm.pem]\n",
            dir.join("state").display(),
            token_path.display()
        ),
    )
    .unwrap();
    run_bin(VERIFIER, &[&config.display().to_string(), "main"], b"").unwrap()
}

/// Verifies `token` on the host against `key_pem`; returns the bundle the verifier prints.
pub fn verify_on_host(dir: &Path, key_pem: &[u8], token: &[u8]) -> String {
    let (code, out, err) = verifier_on_host(dir, key_pem, token);
    assert_eq!(code, 0, "the host's verifier refused the guest's token: {err}");
    out
}
