//! The sign plugin loaded exactly as SPIRE loads it (testbed's go-plugin host): handshake, broker, Init,
//! Validate, Configure, PublishBundle against real signer-unix/signer-http on swtpm, Deinit, Shutdown, exit.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use testbed::host::{spire_bundle, PluginHost};
use testbed::pki;
use testbed::process::run_bin;
use testbed::single::{provision, start_signer, SIGN};
use testbed::swtpm::Swtpm;
use tonic::Code;

struct Server {
    tmp: tempfile::TempDir,
    _tpm: Swtpm,
    _signer: testbed::process::Daemon,
    socket: PathBuf,
    ca: String,
}

fn server() -> Server {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let tpm = Swtpm::start().unwrap();
    provision(&tpm, "ecc-p256", &dir.join("key.pem")).unwrap();
    let (signer, socket) = start_signer(dir, "signer", &tpm, &dir.join("www"), "10m").unwrap();
    let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
    Server { tmp, _tpm: tpm, _signer: signer, socket, ca }
}

fn published(s: &Server) -> Option<String> {
    std::fs::read_to_string(s.tmp.path().join("www/spiffetrustbundle.token")).ok()
}

#[test]
fn loads_like_spire_publishes_and_unloads() {
    let s = server();
    let host = PluginHost::launch(SIGN, "BundlePublisher").unwrap();
    assert!(host.handshake.starts_with("1|1|unix|/") && host.handshake.ends_with("|grpc|"), "{}", host.handshake);
    assert_eq!(host.init().unwrap(), plugin::publisher::SERVICE_NAMES.map(String::from).to_vec());
    let hcl = format!("socket = \"{}\"\nurls = []\ndir = \"/usr/share/nginx/html\"", s.socket.display());
    let v = host.validate(&hcl, "example.org").unwrap();
    assert!(v.valid, "{v:?}");
    assert_eq!(v.notes.len(), 1, "dir is noted as signer-unix's");
    host.configure(&hcl, "example.org").unwrap();

    let bundle = spire_bundle("example.org", &s.ca, 1).unwrap();
    host.publish_bundle(Some(bundle.clone())).unwrap();
    let first = published(&s).expect("nothing published");
    let key = crypto::keys::VerifyingKey::from_pem("k", &std::fs::read(s.tmp.path().join("key.pem")).unwrap()).unwrap();
    let policy = crypto::policy::Policy::new(vec![key], None, crypto::Limits::default()).unwrap();
    let now = common::clock::unix_now();
    assert_eq!(policy.verify(&first, now).unwrap().bundle.to_pem(), s.ca);
    // SPIRE calls every 30 s with the same bundle: nothing is re-signed.
    host.publish_bundle(Some(bundle.clone())).unwrap();
    assert_eq!(published(&s).unwrap(), first);
    // A changed bundle (CA rotation) is signed and published at once.
    let ca2 = pki::spire_ca(s.tmp.path(), "example.org", "ca2").unwrap();
    let rotated = spire_bundle("example.org", &format!("{}{ca2}", s.ca), 2).unwrap();
    host.publish_bundle(Some(rotated)).unwrap();
    let second = published(&s).unwrap();
    assert_ne!(second, first);
    assert_eq!(policy.verify(&second, now).unwrap().bundle.certificates().len(), 2);

    let stdout_rest = host.stdout_rest.lock().unwrap().clone();
    let stderr = host.stderr_lines();
    let code = host.unload().unwrap();
    assert_eq!(code, 0, "plugin did not exit cleanly after Shutdown");
    assert!(stdout_rest.is_empty(), "stdout after the handshake: {stdout_rest:?}");
    assert!(!stderr.is_empty());
    for line in &stderr {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not hclog JSON: {line}"));
        assert!(["trace", "debug", "info", "warn", "error"].contains(&v["@level"].as_str().unwrap()), "{line}");
        let ts = v["@timestamp"].as_str().unwrap();
        assert_eq!((ts.len(), &ts[19..20], &ts[26..]), (27, ".", "Z"), "Go layout with 6 fractional digits: {ts}");
        assert!(v["@message"].is_string(), "{line}");
    }
}

#[test]
fn config_and_request_errors_are_grpc_errors_with_reasons() {
    let s = server();
    let host = PluginHost::launch(SIGN, "BundlePublisher").unwrap();
    host.init().unwrap();
    let bundle = spire_bundle("example.org", &s.ca, 1).unwrap();
    let e = host.publish_bundle(Some(bundle.clone())).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    // Empty config is valid (defaults).
    assert!(host.validate("", "example.org").unwrap().valid);
    let cases = [
        ("unknown key", "bogus = \"x\"", "bogus"),
        ("bad frequency", "frequency = \"soon\"", "frequency"),
        ("bad URL", "urls = [\"ftp://x/sign\"]", "urls[0]"),
        ("bad format", "format = \"jwks\"", "format"),
        ("not HCL", "urls = [", "line 1"),
    ];
    for (case, hcl, key) in cases {
        let v = host.validate(hcl, "example.org").unwrap();
        assert!(!v.valid && v.notes.iter().any(|n| n.contains(key)), "{case}: {v:?}");
        let e = host.configure(hcl, "example.org").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{case}");
        assert!(e.message().contains(key), "{case}: {}", e.message());
    }
    host.configure(&format!("socket = \"{}\"", s.socket.display()), "example.org").unwrap();
    let e = host.publish_bundle(None).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut empty = bundle.clone();
    empty.x509_authorities.clear();
    assert_eq!(host.publish_bundle(Some(empty)).unwrap_err().code(), Code::InvalidArgument);
    assert!(published(&s).is_none(), "something was published on an error path");
    // A co-signer that is down: an error with the reason, nothing published.
    host.configure(
        &format!("socket = \"{}\"\nurls = [\"http://127.0.0.1:9/sign\"]\ntimeout = \"2s\"", s.socket.display()),
        "example.org",
    )
    .unwrap();
    let e = host.publish_bundle(Some(bundle)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("127.0.0.1:9"), "{}", e.message());
    assert!(published(&s).is_none());
    assert_eq!(host.unload().unwrap(), 0);
}

#[test]
fn run_by_hand_without_the_cookie_it_explains_and_exits() {
    let (code, out, err) = run_bin(SIGN, &[], b"").unwrap();
    assert_eq!(code, 2, "a usage error");
    assert!(out.is_empty());
    assert!(err.contains("This binary is a plugin"), "{err}");
}
