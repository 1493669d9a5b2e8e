//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `make fuzz` with cargo-fuzz) and of the
//! corpus replay `make test` runs (`testbed/tests/fuzz_corpus.rs`): every parser that takes bytes from outside.
//!
//! Each function must never panic, whatever its input; results are checked for internal consistency where the
//! parser promises some (a bundle that parses renders in both formats and parses back to the same certificates).

use services::ConfigFile;
use std::path::Path;

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target: its name (the corpus directory under `fuzz/corpus/`) and its body.
pub const TARGETS: [(&str, Target); 12] = [
    ("token", token),
    ("keyset", keyset),
    ("bundle", bundle),
    ("pem_key", pem_key),
    ("hcl", hcl),
    ("go_duration", go_duration),
    ("yaml_config", yaml_config),
    ("devid_payload", devid_payload),
    ("tpm2", tpm2),
    ("query", query),
    ("env_expand", env_expand),
    ("http_request", http_request),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A fixed P-256 verifying key, so signature checks run (and fail) on fuzzed tokens.
const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEv1qzjTSzw8+TUZQq1z7HQXOqkIuA
YTB0iWwvVno82cQ8T00B/rTqySC3bNYnAaGcRUg/t87yH0zxumMadhUqdA==
-----END PUBLIC KEY-----
";

/// Token parsing and the policy: inspect, the innermost walk, one layer, the whole policy.
pub fn token(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let limits = crypto::Limits::default();
    let _ = crypto::token::inspect(t);
    let _ = crypto::token::innermost_unverified(t, &limits);
    let _ = crypto::token::outer_payload_unverified(t, &limits);
    if let Ok(key) = crypto::keys::VerifyingKey::from_pem("k", KEY.as_bytes()) {
        let _ = crypto::token::verify_layer(t, &[&key], 1_800_000_000, &limits);
        if let Ok(policy) = crypto::policy::Policy::new(vec![key], None, limits) {
            let _ = policy.verify(t, 1_800_000_000);
        }
    }
}

/// Keyset updates as a node reads them from `keys-url` (one per line), keyset documents, and the policy JSON
/// signer-unix's `/policy` answers: a document that parses renders to a document that parses to the same keys.
pub fn keyset(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let limits = crypto::Limits::default();
    if let Ok(d) = crypto::keyset::Document::parse(t, limits) {
        let again = crypto::keyset::Document::new(d.keyset(), d.version(), d.expires(), d.policy());
        assert!(again.is_ok(), "a parsed document does not render: {:?}", again.as_ref().err());
        let fps = |p: &crypto::policy::Policy| p.keys().map(|k| k.fingerprint().to_owned()).collect::<Vec<_>>();
        if let Ok(again) = again {
            assert_eq!(fps(again.policy()), fps(d.policy()), "a rendered document holds other keys");
        }
    }
    let _ = crypto::keyset::policy_from_json(t, limits);
    if let Ok(key) = crypto::keys::VerifyingKey::from_pem("k", KEY.as_bytes()) {
        if let Ok(policy) = crypto::policy::Policy::new(vec![key], None, limits) {
            for line in t.lines() {
                let _ = crypto::keyset::verify_update(&policy, "main", 0, line, 1_800_000_000);
            }
        }
    }
}

/// Bundles, PEM and SPIFFE JSON: what parses renders in both forms, and each form parses back to the same
/// certificates.
pub fn bundle(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(b) = crypto::bundle::Bundle::parse(t) {
        let pem = crypto::bundle::Bundle::parse(&b.to_pem()).map(|p| p.certificates().to_vec());
        let json = crypto::bundle::Bundle::parse(&b.to_spiffe_json()).map(|p| p.certificates().to_vec());
        assert_eq!(pem.ok().as_deref(), Some(b.certificates()), "PEM rendering does not parse back");
        assert_eq!(json.ok().as_deref(), Some(b.certificates()), "SPIFFE rendering does not parse back");
    }
}

/// Public keys as PEM (SPKI).
pub fn pem_key(data: &[u8]) {
    let _ = crypto::keys::VerifyingKey::from_pem("k", data);
    let _ = crypto::keys::VerifyingKey::from_spki_der("k", data);
}

/// The HCL reader SPIRE's `plugin_data` goes through, and the plugins' configs on top of it.
pub fn hcl(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = plugin::hcl::parse(t);
    let _ = plugin::publisher::parse_config(t);
}

/// Go durations (every config's `duration`, `refresh`, the plugin's `frequency`).
pub fn go_duration(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(d) = t.parse::<common::duration::GoDuration>() {
        assert!(d.0.as_nanos() <= i64::MAX as u128, "{t:?} parsed past Go's limit");
        // Display keeps whole seconds (it is for logs); those must survive a round trip.
        let shown = d.to_string();
        let back = shown.parse::<common::duration::GoDuration>().map(|b| b.0.as_secs());
        assert_eq!(back.ok(), Some(d.0.as_secs()), "{shown:?} round trip");
    }
}

/// The three daemons' YAML configs (key files resolve against a directory that does not exist).
pub fn yaml_config(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let path = Path::new("/nonexistent-fuzz/c.conf");
    let _ = services::verifier::VerifierConfig::parse(path, t);
    let _ = services::signer_unix::SignerUnixConfig::parse(path, t);
    let _ = services::signer_http::SignerHttpConfig::parse(path, t);
}

/// The tpm_devid server's first message (SPIRE's JSON), through every check, against the trust anchors of the
/// recorded genuine payload (a seed), at the time it was recorded, so mutations of it reach the deep checks.
pub fn devid_payload(data: &[u8]) {
    const DEVID_CA: &[u8] = include_bytes!("../tests/data/devid-recorded/devid-ca.pem");
    const EK_CA: &[u8] = include_bytes!("../tests/data/devid-recorded/endorsement-ca.pem");
    const RECORDED_AT: &str = include_str!("../tests/data/devid-recorded/recorded-at");
    let _ = serde_json::from_slice::<crypto::devid::wire::AttestationRequest>(data);
    let _ = serde_json::from_slice::<crypto::devid::wire::ChallengeResponse>(data);
    let now = RECORDED_AT.trim().parse().unwrap_or(1_800_000_000);
    if let Ok(v) = crypto::devid::DevIdVerifier::new(DEVID_CA, EK_CA, crypto::devid::ExtraChecks::default()) {
        let _ = v.challenge(data, now);
    }
}

/// TPM 2.0 structures from the agent: TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE.
pub fn tpm2(data: &[u8]) {
    if let Ok(p) = crypto::devid::tpm2::TpmPublic::parse(data, "fuzz") {
        let again = crypto::devid::tpm2::TpmPublic::parse(&p.marshal(), "fuzz");
        assert!(again.is_ok(), "a parsed TPMT_PUBLIC does not parse after marshalling");
    }
    let _ = crypto::devid::tpm2::Attest::parse(data);
    let _ = crypto::devid::tpm2::RsaSignature::parse(data);
}

/// The verifier's query string (what SPIRE's agent sends).
pub fn query(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = services::server::http::query_pairs(t);
}

/// `${VAR}` expansion of config files.
pub fn env_expand(data: &[u8]) {
    let Some(t) = text(data) else { return };
    let _ = common::config::expand_env(t);
}

/// A verifier (one keyset whose source is a missing file) and the runtime that serves it, made once.
struct HttpLab {
    runtime: tokio::runtime::Runtime,
    verifier: std::sync::Arc<services::verifier::Verifier>,
    _dir: tempfile::TempDir,
}

fn http_lab() -> Option<&'static HttpLab> {
    static LAB: std::sync::OnceLock<Option<HttpLab>> = std::sync::OnceLock::new();
    LAB.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        std::fs::create_dir(dir.path().join("keys")).ok()?;
        std::fs::write(dir.path().join("keys/k.pem"), KEY).ok()?;
        let text = format!(
            "keydir: keys\nsocket: {0}/v.sock\nstate-dir: {0}/state\nkeyset:\n  main:\n    url: file://{0}/none\n    chain: [k.pem]\n",
            dir.path().display()
        );
        let cfg = services::verifier::VerifierConfig::parse(&dir.path().join("v.conf"), &text).ok()?;
        let verifier = std::sync::Arc::new(services::verifier::Verifier::new(&cfg).ok()?);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
        Some(HttpLab { runtime, verifier, _dir: dir })
    })
    .as_ref()
}

/// A raw HTTP/1.1 request, head and body, through hyper's parser into the verifier's handler over an in-memory
/// stream: whatever arrives, the peer gets an HTTP response or a closed connection.
pub fn http_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(lab) = http_lab() else { return };
    let out = lab.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let verifier = lab.verifier.clone();
        let service = hyper::service::service_fn(move |req| {
            let verifier = verifier.clone();
            async move { Ok::<_, std::convert::Infallible>(verifier.handle(req).await) }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(server), service);
        let served = tokio::spawn(conn);
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), client.read_to_end(&mut out)).await;
        drop(client);
        let _ = served.await;
        read.is_ok().then_some(out)
    });
    assert!(out.is_some(), "no answer and no close within 10 s");
    let out = out.unwrap_or_default();
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 ") || out.starts_with(b"HTTP/1.0 "),
        "not an HTTP response: {:?}",
        String::from_utf8_lossy(&out)
    );
}
