//! The sign plugin under hashicorp's own go-plugin client library (Debian's go-plugin, built by `make test`
//! into target/debug/goplugin-host): handshake, broker, health, Init, Configure, PublishBundle, Kill.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::pki;
use testbed::process::{bin_path, run_bin};
use testbed::single::{provision, start_signer, SIGN};
use testbed::swtpm::Swtpm;

#[test]
fn hashicorps_go_plugin_client_loads_the_plugin_and_publishes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let tpm = Swtpm::start().unwrap();
    provision(&tpm, "ecc-p256", &dir.join("key.pem")).unwrap();
    let (_signer, socket) = start_signer(dir, "signer", &tpm, &dir.join("www"), "10m").unwrap();
    let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
    let der = crypto::bundle::Bundle::parse(&ca).unwrap().certificates()[0].clone();
    std::fs::write(dir.join("ca.der"), der).unwrap();
    let plugin = bin_path(SIGN).unwrap();
    let (code, out, err) = run_bin(
        "goplugin-host",
        &[&plugin.display().to_string(), &socket.display().to_string(), &dir.join("ca.der").display().to_string()],
        b"",
    )
    .unwrap();
    assert_eq!(code, 0, "go host failed:\n{out}\n{err}");
    assert!(out.contains("published") && out.contains("plugin exited 0"), "{out}");
    let token = std::fs::read_to_string(dir.join("www/spiffetrustbundle.token")).unwrap();
    let key = crypto::keys::VerifyingKey::from_pem("k", &std::fs::read(dir.join("key.pem")).unwrap()).unwrap();
    let policy = crypto::policy::Policy::new(vec![key], None, crypto::Limits::default()).unwrap();
    let now = common::clock::unix_now();
    assert_eq!(policy.verify(&token, now).unwrap().bundle.to_pem(), ca);
    // go-plugin parsed our stderr as hclog JSON: its logger re-emits the plugin's lines with their level.
    assert!(!err.contains("[ERROR]"), "{err}");
}

#[test]
fn hashicorps_go_plugin_client_relays_a_tpm_devid_attestation_between_our_plugins() {
    let lab = testbed::devid::DevIdLab::new(testbed::devid::LabOptions::default()).unwrap();
    std::fs::write(lab.path("agent.hcl"), lab.agent_hcl()).unwrap();
    std::fs::write(lab.path("server.hcl"), lab.server_hcl()).unwrap();
    let agent = bin_path("spire-agent-nodeattestor-tpm-devid").unwrap().display().to_string();
    let server = bin_path("spire-server-nodeattestor-tpm-devid").unwrap().display().to_string();
    let s = |f: &str| lab.path(f).display().to_string();
    let (code, out, err) =
        run_bin("goplugin-host", &["devid", &agent, &s("agent.hcl"), &server, &s("server.hcl")], b"").unwrap();
    assert_eq!(code, 0, "go host failed:\n{out}\n{err}");
    assert!(out.contains("spiffe_id: spiffe://example.org/spire/agent/tpm_devid/"), "{out}");
    assert!(out.contains("selector: subject:cn:node-1.example.org"), "{out}");
    assert!(out.contains("selector: issuer:cn:devid-intermediate"), "{out}");
    assert!(out.contains("can_reattest: true") && out.contains("unloaded"), "{out}");
    assert!(!err.contains("[ERROR]"), "{err}");
    assert_eq!(lab.tpm_leftovers().unwrap(), "");
}

/// hashicorp's go-plugin client loads both KeyManager plugins (magic cookie KeyManager) and drives each through
/// Configure, GenerateKey, GetPublicKeys and SignData, as SPIRE's catalog does.
#[test]
fn hashicorps_go_plugin_client_loads_both_keymanager_plugins() {
    let tpm = testbed::swtpm::Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for side in ["agent", "server"] {
        let hcl = dir.path().join(format!("{side}.hcl"));
        let keys = dir.path().join(side);
        std::fs::write(&hcl, format!("directory = \"{}\"\ntpm_device_path = \"{}\"\n", keys.display(), tpm.device()))
            .unwrap();
        let plugin = bin_path(&format!("spire-{side}-keymanager-tpm")).unwrap().display().to_string();
        let (code, out, err) =
            run_bin("goplugin-host", &["keymanager", side, &plugin, &hcl.display().to_string()], b"").unwrap();
        assert_eq!(code, 0, "{side}: go host failed:\n{out}\n{err}");
        assert!(out.contains("generated: k, 91 bytes of pkix_data"), "{side}: {out}");
        assert!(out.contains("listed: 1 key(s)") && out.contains("unloaded"), "{side}: {out}");
        let fp = out.lines().find_map(|l| l.strip_prefix("generated: k, 91 bytes of pkix_data, fingerprint ")).unwrap();
        let signed = out.lines().find_map(|l| l.strip_prefix("signed: ")).unwrap_or_else(|| panic!("{out}"));
        let (len, signed_fp) = signed.split_once(" bytes, fingerprint ").unwrap();
        assert_eq!(signed_fp, fp, "SignData names the key it signed with");
        assert!((68..=72).contains(&len.parse::<usize>().unwrap()), "a DER ECDSA P-256 signature: {signed}");
        assert!(!err.contains("[ERROR]"), "{side}: {err}");
    }
}
