//! The KeyManager plugins on swtpm, loaded by the SPIRE-like go-plugin host: every key type and signing scheme
//! swtpm supports, each signature checked by an independent verifier (pyca/cryptography,
//! `testbed/xcheck/verify_signatures.py`); the refusals, each with its reason; keys that survive a restart and
//! are replaced on GenerateKey; nothing private on disk; nothing left loaded in the TPM; a cleared TPM named.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use plugin::pb::server_keymanager::key_manager_client::KeyManagerClient;
use plugin::pb::server_keymanager::sign_data_request::{PssOptions, SignerOpts};
use plugin::pb::server_keymanager::{
    GenerateKeyRequest, GetPublicKeyRequest, GetPublicKeysRequest, PublicKey, SignDataRequest,
};
use sha2::Digest as _;
use testbed::host::PluginHost;
use testbed::swtpm::Swtpm;

const SERVER: &str = "spire-server-keymanager-tpm";
const AGENT: &str = "spire-agent-keymanager-tpm";
const SHA256: i32 = 5;
const SHA384: i32 = 6;
const SHA512: i32 = 7;

fn load(bin: &str, tpm: &Swtpm, dir: &std::path::Path) -> PluginHost {
    let host = PluginHost::launch(bin, "KeyManager").unwrap();
    host.init().unwrap();
    let hcl = format!("directory = \"{}\"\ntpm_device_path = \"{}\"\n", dir.display(), tpm.device());
    host.configure(&hcl, "example.org").unwrap();
    host
}

fn client(host: &PluginHost) -> KeyManagerClient<tonic::transport::Channel> {
    KeyManagerClient::new(host.channel.clone())
}

fn generate(host: &PluginHost, id: &str, kind: i32) -> Result<PublicKey, tonic::Status> {
    let req = GenerateKeyRequest { key_id: id.into(), key_type: kind };
    host.runtime.block_on(client(host).generate_key(req)).map(|r| r.into_inner().public_key.unwrap())
}

fn sign(
    host: &PluginHost,
    id: &str,
    digest: &[u8],
    opts: Option<SignerOpts>,
) -> Result<(Vec<u8>, String), tonic::Status> {
    let req = SignDataRequest { key_id: id.into(), data: digest.to_vec(), signer_opts: opts };
    host.runtime.block_on(client(host).sign_data(req)).map(|r| {
        let r = r.into_inner();
        (r.signature, r.key_fingerprint)
    })
}

fn digest(hash: i32, data: &[u8]) -> Vec<u8> {
    match hash {
        SHA256 => sha2::Sha256::digest(data).to_vec(),
        SHA384 => sha2::Sha384::digest(data).to_vec(),
        _ => sha2::Sha512::digest(data).to_vec(),
    }
}

/// The independent verifier's verdict on each (key, scheme, hash, digest, signature).
fn verify_independently(items: &[serde_json::Value]) -> Vec<String> {
    use std::io::Write;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("xcheck/verify_signatures.py");
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(serde_json::to_string(items).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// Every key type swtpm can make, with every scheme SPIRE asks of it; RSA-4096, which swtpm 0.7 cannot make,
/// is refused at GenerateKey naming it.
#[test]
fn every_key_type_and_scheme_swtpm_supports_signs_what_an_independent_verifier_accepts() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = load(SERVER, &tpm, &dir.path().join("km"));
    let hash_name = |h: i32| match h {
        SHA256 => "sha256",
        SHA384 => "sha384",
        _ => "sha512",
    };
    let mut items = Vec::new();
    let mut cases = Vec::new();
    let pss = |hash_algorithm: i32, salt_length: i32| {
        Some(SignerOpts::PssOptions(PssOptions { salt_length, hash_algorithm }))
    };
    let rows: Vec<(&str, i32, &str, i32, Option<SignerOpts>)> = vec![
        ("x509-CA-A", 1, "ecdsa", SHA256, Some(SignerOpts::HashAlgorithm(SHA256))),
        ("x509-CA-B", 2, "ecdsa", SHA384, Some(SignerOpts::HashAlgorithm(SHA384))),
        // Any hash with either curve, as Go's signers allow and a TLS 1.2 peer may ask.
        ("x509-CA-A", 1, "ecdsa", SHA384, Some(SignerOpts::HashAlgorithm(SHA384))),
        ("x509-CA-A", 1, "ecdsa", SHA512, Some(SignerOpts::HashAlgorithm(SHA512))),
        ("x509-CA-B", 2, "ecdsa", SHA256, Some(SignerOpts::HashAlgorithm(SHA256))),
        ("x509-CA-B", 2, "ecdsa", SHA512, Some(SignerOpts::HashAlgorithm(SHA512))),
        ("JWT-Signer-A", 3, "pkcs1", SHA256, Some(SignerOpts::HashAlgorithm(SHA256))),
        ("JWT-Signer-A", 3, "pkcs1", SHA384, Some(SignerOpts::HashAlgorithm(SHA384))),
        ("JWT-Signer-A", 3, "pkcs1", SHA512, Some(SignerOpts::HashAlgorithm(SHA512))),
        ("JWT-Signer-A", 3, "pss", SHA256, pss(SHA256, -1)),
        ("JWT-Signer-A", 3, "pss", SHA384, pss(SHA384, -1)),
        ("JWT-Signer-A", 3, "pss", SHA512, pss(SHA512, -1)),
        ("JWT-Signer-A", 3, "pss", SHA256, pss(SHA256, 0)),
        ("JWT-Signer-A", 3, "pss", SHA256, pss(SHA256, 32)),
    ];
    let mut keys = std::collections::BTreeMap::new();
    for (id, kind, scheme, hash, opts) in rows {
        let key = keys.entry(id).or_insert_with(|| generate(&host, id, kind).unwrap()).clone();
        assert_eq!(key.id, id);
        let d = digest(hash, format!("{id} {scheme} {hash}").as_bytes());
        let (signature, fingerprint) = sign(&host, id, &d, opts).unwrap_or_else(|e| panic!("{id} {scheme}: {e}"));
        assert_eq!(fingerprint, key.fingerprint, "{id}");
        items.push(serde_json::json!({
            "spki": STANDARD.encode(&key.pkix_data),
            "scheme": scheme,
            "hash": hash_name(hash),
            "digest": STANDARD.encode(&d),
            "signature": STANDARD.encode(&signature),
        }));
        cases.push(format!("{id} {scheme} {}", hash_name(hash)));
        // A signature over another digest is refused by the same verifier: it checks something.
        let mut other = items.last().unwrap().clone();
        other["digest"] = serde_json::json!(STANDARD.encode(digest(hash, b"another message")));
        items.push(other);
        cases.push(format!("{id} {scheme} {} over another digest", hash_name(hash)));
    }
    let verdicts = verify_independently(&items);
    for (case, verdict) in cases.iter().zip(&verdicts) {
        let want_ok = !case.ends_with("another digest");
        assert_eq!(verdict == "ok", want_ok, "{case}: {verdict}");
    }
    assert_eq!(verdicts.len(), cases.len());
    let refused = generate(&host, "x509-CA-A", 4).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("RSA-4096"), "{}", refused.message());
    // The refused GenerateKey left the old key in place.
    let kept = host.runtime.block_on(client(&host).get_public_key(GetPublicKeyRequest { key_id: "x509-CA-A".into() }));
    assert_eq!(kept.unwrap().into_inner().public_key.unwrap().fingerprint, keys["x509-CA-A"].fingerprint);
    let leftovers = tpm.tpm2("tpm2_getcap", &["handles-transient"], dir.path()).unwrap()
        + &tpm.tpm2("tpm2_getcap", &["handles-loaded-session"], dir.path()).unwrap();
    assert_eq!(leftovers.trim(), "", "objects or sessions left in the TPM");
}

/// 64 SignData in flight at once, over two keys and three schemes, with malformed requests among them: the
/// plugin signs what waits under one load per key and scheme, and still every good signature verifies
/// independently, every bad request is refused alone with its reason, and nothing stays loaded in the TPM.
#[test]
fn signatures_in_flight_together_each_verify_and_one_bad_request_spoils_no_other() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = load(SERVER, &tpm, &dir.path().join("km"));
    let ec = generate(&host, "x509-CA-A", 1).unwrap();
    let rsa = generate(&host, "JWT-Signer-A", 3).unwrap();
    let pss = Some(SignerOpts::PssOptions(PssOptions { salt_length: -1, hash_algorithm: SHA256 }));
    // (key, scheme name, options, digest length; 0 means a digest of the wrong length: refused).
    let kinds: [(&PublicKey, &str, Option<SignerOpts>, usize); 5] = [
        (&ec, "ecdsa", Some(SignerOpts::HashAlgorithm(SHA256)), 32),
        (&rsa, "pkcs1", Some(SignerOpts::HashAlgorithm(SHA256)), 32),
        (&rsa, "pss", pss, 32),
        (&ec, "ecdsa", Some(SignerOpts::HashAlgorithm(SHA256)), 0),
        (&rsa, "pkcs1", Some(SignerOpts::HashAlgorithm(SHA256)), 0),
    ];
    let requests: Vec<(usize, Vec<u8>)> = (0..64)
        .map(|i| {
            let kind = i % kinds.len();
            let d = sha2::Sha256::digest(format!("request {i}").as_bytes()).to_vec();
            (kind, if kinds[kind].3 == 0 { d[..20].to_vec() } else { d })
        })
        .collect();
    let answers = host.runtime.block_on(async {
        let calls = requests.iter().map(|(kind, d)| {
            let (key, _, opts, _) = kinds[*kind];
            let req = SignDataRequest { key_id: key.id.clone(), data: d.clone(), signer_opts: opts };
            let mut c = client(&host);
            async move { c.sign_data(req).await.map(|r| r.into_inner()) }
        });
        let spawned: Vec<_> = calls.map(|call| tokio::spawn(call)).collect();
        let mut answers = Vec::new();
        for call in spawned {
            answers.push(call.await.unwrap());
        }
        answers
    });
    let (mut items, mut refused) = (Vec::new(), 0);
    for ((kind, d), answer) in requests.iter().zip(answers) {
        let (key, scheme, _, len) = kinds[*kind];
        if len == 0 {
            let e = answer.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains("32"), "the refusal names the digest length: {}", e.message());
            refused += 1;
            continue;
        }
        let answer = answer.unwrap_or_else(|e| panic!("{} {scheme}: {e}", key.id));
        assert_eq!(answer.key_fingerprint, key.fingerprint);
        items.push(serde_json::json!({
            "spki": STANDARD.encode(&key.pkix_data),
            "scheme": scheme,
            "hash": "sha256",
            "digest": STANDARD.encode(d),
            "signature": STANDARD.encode(&answer.signature),
        }));
    }
    let malformed = requests.iter().filter(|(kind, _)| kinds[*kind].3 == 0).count();
    assert_eq!((refused, malformed), (25, 25), "every malformed request, and only those, refused");
    let verdicts = verify_independently(&items);
    assert_eq!(verdicts.len(), items.len());
    assert!(verdicts.iter().all(|v| v == "ok"), "{verdicts:?}");
    let leftovers = tpm.tpm2("tpm2_getcap", &["handles-transient"], dir.path()).unwrap()
        + &tpm.tpm2("tpm2_getcap", &["handles-loaded-session"], dir.path()).unwrap();
    assert_eq!(leftovers.trim(), "", "objects or sessions left in the TPM");
}

/// Each request the TPM cannot or must not honour, refused with its code and reason.
#[test]
fn requests_outside_what_a_key_can_sign_are_refused_with_their_reason() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host = load(SERVER, &tpm, &dir.path().join("km"));
    generate(&host, "ec", 1).unwrap();
    generate(&host, "rsa", 3).unwrap();
    let d32 = digest(SHA256, b"x");
    let pss = |hash_algorithm: i32, salt_length: i32| {
        Some(SignerOpts::PssOptions(PssOptions { salt_length, hash_algorithm }))
    };
    type Row<'a> = (&'a str, &'a str, Vec<u8>, Option<SignerOpts>, tonic::Code, &'a str);
    let rows: Vec<Row> = vec![
        (
            "unknown key",
            "nope",
            d32.clone(),
            Some(SignerOpts::HashAlgorithm(SHA256)),
            tonic::Code::NotFound,
            "no such key",
        ),
        (
            "no key id",
            "",
            d32.clone(),
            Some(SignerOpts::HashAlgorithm(SHA256)),
            tonic::Code::InvalidArgument,
            "key id is required",
        ),
        ("no signer opts", "ec", d32.clone(), None, tonic::Code::InvalidArgument, "signer opts is required"),
        (
            "no hash",
            "ec",
            d32.clone(),
            Some(SignerOpts::HashAlgorithm(0)),
            tonic::Code::InvalidArgument,
            "hash algorithm is required",
        ),
        (
            "SHA-224",
            "rsa",
            d32.clone(),
            Some(SignerOpts::HashAlgorithm(4)),
            tonic::Code::InvalidArgument,
            "SHA-256, SHA-384 and SHA-512",
        ),
        (
            "a SHA-256 digest under SHA-384",
            "ec",
            d32.clone(),
            Some(SignerOpts::HashAlgorithm(SHA384)),
            tonic::Code::InvalidArgument,
            "32-byte digest for a 48-byte hash",
        ),
        (
            "PSS on an EC key",
            "ec",
            d32.clone(),
            pss(SHA256, -1),
            tonic::Code::InvalidArgument,
            "only valid for RSA keys",
        ),
        (
            "PSS with a salt the TPM does not make",
            "rsa",
            d32.clone(),
            pss(SHA256, 20),
            tonic::Code::InvalidArgument,
            "salt length 20",
        ),
        (
            "a digest of the wrong length",
            "rsa",
            vec![1; 20],
            Some(SignerOpts::HashAlgorithm(SHA256)),
            tonic::Code::InvalidArgument,
            "20-byte digest",
        ),
    ];
    for (what, id, data, opts, code, says) in rows {
        let err = sign(&host, id, &data, opts).unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(says), "{what}: {says:?} not in {}", err.message());
    }
    for (what, id, kind, says) in
        [("no key id", "", 1, "key id is required"), ("no key type", "k", 0, "key type is required")]
    {
        let err = generate(&host, id, kind).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
    }
    let missing = host.runtime.block_on(client(&host).get_public_key(GetPublicKeyRequest { key_id: "nope".into() }));
    assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound, "SPIRE's server needs NOT_FOUND to start");
    // Configurations that cannot work, each naming its key.
    let bad = PluginHost::launch(SERVER, "KeyManager").unwrap();
    bad.init().unwrap();
    for (hcl, says) in [
        (String::new(), "directory is required"),
        (format!("directory = \"{}\"\ntpm_device_path = \"tcp:nowhere\"\n", dir.path().display()), "tpm_device_path"),
        (
            format!("directory = \"{}\"\nkey_password_file = \"/nonexistent\"\n", dir.path().display()),
            "key_password_file",
        ),
        (format!("directory = \"{}\"\nkeys_path = \"x\"\n", dir.path().display()), "keys_path"),
    ] {
        let err = bad.configure(&hcl, "example.org").unwrap_err();
        assert!(err.message().contains(says), "{hcl}: {says:?} not in {}", err.message());
    }
}

/// Keys survive the plugin's restart with their fingerprints; GenerateKey on an ID replaces its key; the directory
/// holds nothing a private key could be read from; a cleared TPM is named at the next signature.
#[test]
fn keys_survive_a_restart_are_replaced_by_id_leave_nothing_private_on_disk_and_a_cleared_tpm_is_named() {
    let tpm = Swtpm::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let km = dir.path().join("km");
    let host = load(AGENT, &tpm, &km);
    use plugin::pb::agent_keymanager::key_manager_client::KeyManagerClient as AgentClient;
    use plugin::pb::agent_keymanager::{GenerateKeyRequest as AgentGenerate, GetPublicKeysRequest as AgentList};
    let agent_generate = |host: &PluginHost, id: &str| {
        host.runtime
            .block_on(
                AgentClient::new(host.channel.clone()).generate_key(AgentGenerate { key_id: id.into(), key_type: 1 }),
            )
            .unwrap()
            .into_inner()
            .public_key
            .unwrap()
    };
    let a = agent_generate(&host, "agent-svid-A");
    let b = agent_generate(&host, "agent-svid-B");
    let a2 = agent_generate(&host, "agent-svid-A");
    assert_ne!(a.fingerprint, a2.fingerprint, "a new key for the ID");
    assert_ne!(a.pkix_data, a2.pkix_data);
    host.unload().unwrap();

    let host = load(AGENT, &tpm, &km);
    let listed = host.runtime.block_on(AgentClient::new(host.channel.clone()).get_public_keys(AgentList {})).unwrap();
    let listed: Vec<(String, String)> =
        listed.into_inner().public_keys.into_iter().map(|k| (k.id, k.fingerprint)).collect();
    assert_eq!(
        listed,
        [("agent-svid-A".into(), a2.fingerprint.clone()), ("agent-svid-B".into(), b.fingerprint.clone())]
    );

    // Nothing private on disk: no PEM, no PKCS#8 or SEC1 structure, no JWK "d".
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&km).unwrap().permissions().mode() & 0o777, 0o700);
    for entry in std::fs::read_dir(&km).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PRIVATE KEY") && !text.contains("\"d\":"), "{}", path.display());
        // PKCS#8: INTEGER 0 followed by an AlgorithmIdentifier; SEC1 EC: INTEGER 1 followed by an OCTET STRING.
        for needle in
            [&[0x02u8, 0x01, 0x00, 0x30][..], &[0x02, 0x01, 0x01, 0x04, 0x20], &[0x02, 0x01, 0x01, 0x04, 0x30]]
        {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{}: a private key structure", path.display());
        }
        if path.file_name().unwrap() == "keys.sqlite" {
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    // The TPM is cleared under the running plugin, which signed before (so it holds the key's saved context):
    // the storage key is gone, and the error says so.
    use plugin::pb::agent_keymanager::sign_data_request::SignerOpts as AgentOpts;
    use plugin::pb::agent_keymanager::SignDataRequest as AgentSign;
    let agent_sign = |host: &PluginHost| {
        host.runtime.block_on(AgentClient::new(host.channel.clone()).sign_data(AgentSign {
            key_id: "agent-svid-A".into(),
            data: digest(SHA256, b"x"),
            signer_opts: Some(AgentOpts::HashAlgorithm(SHA256)),
        }))
    };
    for _ in 0..2 {
        agent_sign(&host).unwrap();
    }
    tpm.tpm2("tpm2_clear", &["-c", "p"], dir.path()).unwrap();
    let err = agent_sign(&host).unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("cleared or replaced"), "{}", err.message());
    host.unload().unwrap();
    // Loaded again, it drops the dead keys (SPIRE then makes a new one and attests again) and logs why.
    let host = load(AGENT, &tpm, &km);
    let listed = host.runtime.block_on(AgentClient::new(host.channel.clone()).get_public_keys(AgentList {})).unwrap();
    assert!(listed.into_inner().public_keys.is_empty(), "dead keys are still listed");
    assert!(host.stderr_lines().iter().any(|l| l.contains("cleared or replaced")), "{:?}", host.stderr_lines());
    let fresh = agent_generate(&host, "agent-svid-A");
    assert_eq!(fresh.id, "agent-svid-A");
}

/// The places a key could outlive its use or be lost by mistake: a replaced key's blob is gone from every file in
/// `directory`; `Validate` touches nothing; a key the configured TPM cannot load (here: `tpm_device_path` names
/// another TPM) is not offered, and is back once the path is right.
#[test]
fn a_replaced_blob_is_gone_validate_changes_nothing_and_a_key_another_tpm_cannot_load_is_kept() {
    let (tpm, other) = (Swtpm::start().unwrap(), Swtpm::start().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let km = dir.path().join("km");
    let host = load(SERVER, &tpm, &km);
    let blob_of = |id: &str| {
        let store = plugin::keymanager::store::Store::open(&km).unwrap();
        let (_, stored) = store.load().unwrap().into_iter().find(|(k, _)| k == id).unwrap();
        stored.key.private
    };
    let found_in_directory = |needle: &[u8]| {
        std::fs::read_dir(&km).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    };
    generate(&host, "x509-CA-A", 1).unwrap();
    let old = blob_of("x509-CA-A");
    let new = generate(&host, "x509-CA-A", 1).unwrap();
    let current = blob_of("x509-CA-A");
    assert_ne!(old, current);
    assert!(found_in_directory(&current), "the search finds the current blob");
    assert!(!found_in_directory(&old), "the replaced key's blob is still on disk");

    // Validate with another directory and another TPM: it answers and creates nothing.
    let elsewhere = dir.path().join("never-made");
    let hcl = format!("directory = \"{}\"\ntpm_device_path = \"{}\"\n", elsewhere.display(), other.device());
    let answer = host.validate(&hcl, "example.org").unwrap();
    assert!(answer.valid, "{:?}", answer.notes);
    assert!(!elsewhere.exists(), "Validate made the directory");
    let answer = host.validate("keys_path = \"x\"\n", "example.org").unwrap();
    assert!(!answer.valid && answer.notes.iter().any(|n| n.contains("keys_path")), "{:?}", answer.notes);
    host.unload().unwrap();

    // Configured with another TPM by mistake: the key is not offered, and the log says why.
    let host = load(SERVER, &other, &km);
    let listed = host.runtime.block_on(client(&host).get_public_keys(GetPublicKeysRequest {})).unwrap();
    assert!(listed.into_inner().public_keys.is_empty(), "a key another TPM made is offered");
    assert!(host.stderr_lines().iter().any(|l| l.contains("names another TPM")), "{:?}", host.stderr_lines());
    host.unload().unwrap();
    // The path put right: the same key, which signs.
    let host = load(SERVER, &tpm, &km);
    let listed = host.runtime.block_on(client(&host).get_public_keys(GetPublicKeysRequest {})).unwrap();
    let listed: Vec<(String, String)> =
        listed.into_inner().public_keys.into_iter().map(|k| (k.id, k.fingerprint)).collect();
    assert_eq!(listed, [("x509-CA-A".to_owned(), new.fingerprint.clone())]);
    let (_, fingerprint) =
        sign(&host, "x509-CA-A", &digest(SHA256, b"x"), Some(SignerOpts::HashAlgorithm(SHA256))).unwrap();
    assert_eq!(fingerprint, new.fingerprint);
}
