//! signer-unix as shipped (the real binary on swtpm): the sign CLI, bad-input tables for the socket API and
//! the config, peer checks, and the "nothing published on failure" rule.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use testbed::agent::{send, send_raw};
use testbed::pki;
use testbed::process::run_bin;
use testbed::single::{provision, rogue_token, sign_cli, start_signer, SIGN, SIGNER_UNIX};
use testbed::swtpm::Swtpm;

struct Fixture {
    _tmp: tempfile::TempDir,
    _tpm: Swtpm,
    _signer: testbed::process::Daemon,
    socket: std::path::PathBuf,
    webroot: std::path::PathBuf,
    dir: std::path::PathBuf,
    ca: String,
}

fn fixture(key_type: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let webroot = dir.join("www");
    std::fs::create_dir_all(&webroot).unwrap();
    let tpm = Swtpm::start().unwrap();
    provision(&tpm, key_type, &dir.join("key.pem")).unwrap();
    let (signer, socket) = start_signer(&dir, "signer", &tpm, &webroot, "10m").unwrap();
    let ca = pki::spire_ca(&dir, "example.org", "ca").unwrap();
    Fixture { _tmp: tmp, _tpm: tpm, _signer: signer, socket, webroot, dir, ca }
}

fn published(f: &Fixture) -> Option<String> {
    std::fs::read_to_string(f.webroot.join("spiffetrustbundle.token")).ok()
}

/// signer-unix started on `config`, ready once `socket` accepts; its log in `log`.
fn signer_unix(config: &Path, socket: &Path, log: &Path) -> testbed::process::Daemon {
    let ready = testbed::process::Ready::UnixSocket(socket.to_owned());
    testbed::process::Daemon::spawn(SIGNER_UNIX, &[&config.display().to_string()], &[], log, ready).unwrap()
}

#[test]
fn sign_cli_publishes_a_token_our_verifier_and_jsonwebtoken_accept() {
    for key_type in ["rsa2048", "ecc-p256"] {
        let f = fixture(key_type);
        let token = sign_cli(&f.socket, &[], &f.ca).unwrap();
        assert_eq!(published(&f).unwrap(), token, "{key_type}: published file differs from printed token");
        let pem = std::fs::read(f.dir.join("key.pem")).unwrap();
        let key = crypto::keys::VerifyingKey::from_pem("key.pem", &pem).unwrap();
        let policy = crypto::policy::Policy::new(vec![key], None, crypto::Limits::default()).unwrap();
        let now = common::clock::unix_now();
        let verified = policy.verify(&token, now).unwrap();
        assert_eq!(verified.bundle.certificates().len(), 1);
        // An independent JWT implementation agrees.
        let (alg, dk) = if key_type == "rsa2048" {
            (jsonwebtoken::Algorithm::RS256, jsonwebtoken::DecodingKey::from_rsa_pem(&pem).unwrap())
        } else {
            (jsonwebtoken::Algorithm::ES256, jsonwebtoken::DecodingKey::from_ec_pem(&pem).unwrap())
        };
        let mut v = jsonwebtoken::Validation::new(alg);
        v.set_issuer(&["signer"]);
        v.set_required_spec_claims(&["exp", "iss"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).unwrap();
        assert_eq!(data.claims["spiffetb"].as_str().unwrap(), f.ca);
    }
}

#[test]
fn socket_api_bad_input_table() {
    let f = fixture("ecc-p256");
    let good = sign_cli(&f.socket, &[], &f.ca).unwrap();
    let rogue = rogue_token(&f.dir, &f.ca).unwrap();
    let jwt = [("Content-Type", "application/jwt")];
    let tampered = good.replacen('.', ".e", 1);
    let oversized_head =
        b"POST /sign HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\nConnection: close\r\n\r\n".to_vec();
    // (case, method, path, headers, body, expected status)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8], u16);
    let cases: Vec<Case> = vec![
        ("garbage body", "POST", "/sign", &[], b"hello, sign me", 400),
        ("empty body", "POST", "/sign", &[], b"", 400),
        (
            "PEM that is not a certificate",
            "POST",
            "/sign",
            &[],
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            400,
        ),
        ("non-UTF-8 body", "POST", "/sign", &[], &[0xff, 0xfe, 0x00], 400),
        ("application/jwt with garbage", "POST", "/sign", &jwt, b"a.b", 400),
        ("application/jwt with a bundle", "POST", "/sign", &jwt, f.ca.as_bytes(), 400),
        ("wrong method on /sign", "GET", "/sign", &[], b"", 405),
        ("wrong method on /publish", "PUT", "/publish", &[], b"x", 405),
        ("unknown path", "POST", "/nope", &[], b"x", 404),
        ("publish garbage", "POST", "/publish", &[], b"not a token", 422),
        ("publish a bundle", "POST", "/publish", &[], f.ca.as_bytes(), 422),
        ("publish a token signed by another key", "POST", "/publish", &[], rogue.as_bytes(), 422),
        ("publish a tampered token", "POST", "/publish", &[], tampered.as_bytes(), 422),
    ];
    for (case, method, path, headers, body, want) in cases {
        let resp = send(&f.socket, method, path, headers, body).unwrap();
        assert_eq!(resp.status, want, "{case}: body {:?}", resp.body);
        assert!(!resp.body.trim().is_empty(), "{case}: error without a reason");
        assert_eq!(published(&f).unwrap(), good, "{case}: the published token changed");
    }
    let resp = send_raw(&f.socket, &oversized_head).unwrap();
    assert_eq!(resp.status, 413, "oversized body: {:?}", resp.body);
    // Co-signing a token (application/jwt) works, and with no `chain` configured (the Go original's config)
    // /publish takes a token whose innermost layer is ours and whose outer layers are well formed and unexpired:
    // what an HA pair publishes (`e2e_signer_http::the_go_originals_ha_configs_publish_co_signed_tokens`).
    let wrapped = send(&f.socket, "POST", "/sign", &jwt, good.as_bytes()).unwrap();
    assert_eq!(wrapped.status, 200, "{:?}", wrapped.body);
    let resp = send(&f.socket, "POST", "/publish", &[], wrapped.body.as_bytes()).unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(published(&f).unwrap(), wrapped.body.trim());
    // A fresh token of our own is published.
    let fresh = send(&f.socket, "POST", "/sign", &[], f.ca.as_bytes()).unwrap();
    let resp = send(&f.socket, "POST", "/publish", &[], fresh.body.as_bytes()).unwrap();
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(published(&f).unwrap(), fresh.body.trim());
}

#[test]
fn sign_cli_failures_publish_nothing() {
    let f = fixture("rsa2048");
    let cases: Vec<(&str, Vec<String>, Vec<u8>)> = vec![
        ("no arguments", vec![], f.ca.clone().into_bytes()),
        ("socket missing", vec![f.dir.join("nope.sock").display().to_string()], f.ca.clone().into_bytes()),
        ("empty stdin", vec![f.socket.display().to_string()], vec![]),
        ("not a bundle", vec![f.socket.display().to_string()], b"hello".to_vec()),
        ("bad co-signer URL", vec![f.socket.display().to_string(), "ftp://x/sign".into()], f.ca.clone().into_bytes()),
        // A co-signer that is down: signing locally works, co-signing fails, nothing is published.
        (
            "co-signer down",
            vec![f.socket.display().to_string(), "http://127.0.0.1:9/sign".into()],
            f.ca.clone().into_bytes(),
        ),
    ];
    for (case, args, stdin) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = run_bin(SIGN, &args, &stdin).unwrap();
        assert_ne!(code, 0, "{case}: exit 0");
        assert!(stdout.is_empty(), "{case}: printed {stdout:?}");
        assert!(!stderr.trim().is_empty(), "{case}: no message");
        assert!(published(&f).is_none(), "{case}: something was published");
    }
}

#[test]
fn peers_outside_the_allow_list_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start().unwrap();
    provision(&tpm, "ecc-p256", &tmp.path().join("key.pem")).unwrap();
    let socket = tmp.path().join("s.sock");
    let config = tmp.path().join("c.conf");
    std::fs::write(
        &config,
        format!(
            "socket: {}\ntpm-device: \"{}\"\ndir: {}\nallowed-uids: [4242]\n",
            socket.display(),
            tpm.device(),
            tmp.path().display()
        ),
    )
    .unwrap();
    let _d = signer_unix(&config, &socket, &tmp.path().join("log"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o660, "default socket mode");
    let ca = pki::spire_ca(tmp.path(), "example.org", "ca").unwrap();
    let resp = send(&socket, "POST", "/sign", &[], ca.as_bytes()).unwrap();
    assert_eq!(resp.status, 403, "{:?}", resp.body);
}

#[test]
fn config_errors_name_the_key_and_exit_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown key", "dir: /tmp\nbogus: 1\n", "bogus"),
        ("bad handle", "dir: /tmp\ntpm-address: 0x1234\n", "tpm-address"),
        ("bad duration", "dir: /tmp\nduration: soon\n", "duration"),
        ("no dir", "duration: 10m\n", "dir"),
        ("swtpm path form", "dir: /tmp\ntpm-device: \"swtpm:path=/x\"\n", "tpm-device"),
        ("world-writable socket", "dir: /tmp\nsocket-mode: \"0666\"\n", "socket-mode"),
    ];
    for (case, text, key) in cases {
        let path = tmp.path().join("c.conf");
        std::fs::write(&path, text).unwrap();
        let (code, _out, err) = run_bin(SIGNER_UNIX, &[&path.display().to_string()], b"").unwrap();
        assert_ne!(code, 0, "{case}");
        assert!(err.contains(key), "{case}: {err:?} does not name {key}");
    }
    let (code, _out, err) = run_bin(SIGNER_UNIX, &[Path::new("/nonexistent.conf").to_str().unwrap()], b"").unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent.conf"), "{err}");
}

/// What an operator reads: provisioning a blank TPM and running the daemon, with stderr a file (not a terminal)
/// and neither `RUST_LOG` nor `TSS2_LOG` set. The old binaries put tss-esapi's internal records in it
/// (`ERROR Error when getting ESYS handle from TPM handle ...` on every blank-TPM provision, `Closing context.`)
/// and ANSI colour escapes on every line.
#[test]
fn logs_carry_no_colour_escapes_and_no_tss_internals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let tpm = Swtpm::start().unwrap();
    let bin = testbed::process::bin_path(SIGNER_UNIX).unwrap();
    let command = |args: &[&str], log: &Path| {
        let out = std::fs::File::create(log).unwrap();
        let mut c = std::process::Command::new(&bin);
        c.args(args).env_remove("RUST_LOG").env_remove("TSS2_LOG").stdout(out.try_clone().unwrap()).stderr(out);
        c
    };
    let device = tpm.device().to_string();
    let key = dir.join("key.pem").display().to_string();
    let status =
        command(&["provision", "--tpm-device", &device, "--out", &key], &dir.join("provision.log")).status().unwrap();
    assert!(status.success());
    let socket = dir.join("s.sock");
    let config = dir.join("s.conf");
    std::fs::write(
        &config,
        format!(
            "socket: {}\ntpm-device: \"{device}\"\ndir: {}\nsocket-mode: \"0600\"\n",
            socket.display(),
            dir.join("www").display()
        ),
    )
    .unwrap();
    let mut daemon = command(&[&config.display().to_string()], &dir.join("daemon.log")).spawn().unwrap();
    testbed::wait::wait_for("signer-unix to listen", std::time::Duration::from_secs(10), || {
        Ok(std::os::unix::net::UnixStream::connect(&socket).is_ok())
    })
    .unwrap();
    let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
    let signed = sign_cli(&socket, &[], &ca);
    let _ = daemon.kill();
    let _ = daemon.wait();
    signed.unwrap();
    let provision_log = std::fs::read_to_string(dir.join("provision.log")).unwrap();
    let daemon_log = std::fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(daemon_log.contains("signer-unix ready") && daemon_log.contains("published"), "{daemon_log}");
    testbed::logs::assert_readable("provision", &provision_log);
    testbed::logs::assert_readable("signer-unix", &daemon_log);
}

/// The publish policy (`keydir`, `chain`, `backup`): each mistake is named at start and the daemon exits non-zero;
/// a signer whose own TPM key is in neither could never publish, and says so.
#[test]
fn publish_chain_mistakes_are_named_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let ours = Swtpm::start().unwrap();
    let other = Swtpm::start().unwrap();
    provision(&ours, "ecc-p256", &dir.join("keys/ours.pem")).unwrap();
    provision(&other, "rsa2048", &dir.join("keys/other.pem")).unwrap();
    let head = format!(
        "dir: {}\ntpm-device: \"{}\"\nsocket: {}\n",
        dir.display(),
        ours.device(),
        dir.join("s.sock").display()
    );
    let cases = [
        ("chain names a missing file", "chain: [missing.pem]\n", "chain[0]"),
        ("backup without chain", "backup: other.pem\n", "chain"),
        ("the same key twice", "chain: [ours.pem]\nbackup: ours.pem\n", "chain"),
        ("our key in neither", "chain: [other.pem]\n", "neither in `chain`"),
    ];
    for (case, extra, key) in cases {
        let path = dir.join("c.conf");
        std::fs::write(&path, format!("{head}{extra}")).unwrap();
        let (code, _out, err) = run_bin(SIGNER_UNIX, &[&path.display().to_string()], b"").unwrap();
        assert_ne!(code, 0, "{case}");
        assert!(err.contains(key), "{case}: {err:?} does not name {key}");
    }
}

/// `log-format: json` (and `--log-format json` on the command line): one JSON object per line for log shippers,
/// the structured fields at the top level, nothing else on the line.
#[test]
fn log_format_json_writes_one_object_per_line_with_the_structured_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    let tpm = Swtpm::start().unwrap();
    let device = tpm.device().to_string();
    let (code, _, err) =
        run_bin(SIGNER_UNIX, &["provision", "--tpm-device", &device, "--log-format", "json"], b"").unwrap();
    assert_eq!(code, 0, "{err}");
    let socket = dir.join("s.sock");
    let config = dir.join("s.conf");
    std::fs::write(
        &config,
        format!(
            "socket: {}\ntpm-device: \"{device}\"\ndir: {}\nlog-format: json\n",
            socket.display(),
            dir.join("www").display()
        ),
    )
    .unwrap();
    let log = dir.join("daemon.log");
    let mut daemon = signer_unix(&config, &socket, &log);
    sign_cli(&socket, &[], &pki::spire_ca(dir, "example.org", "ca").unwrap()).unwrap();
    daemon.wait_log("\"message\":\"signed\"", 1).unwrap();
    assert!(daemon.stop().unwrap(), "signer-unix did not stop cleanly");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = testbed::logs::json_lines(&text);
    assert!(lines.len() >= 3, "{text}");
    let signed = lines.iter().find(|l| l["message"] == "signed").unwrap();
    assert_eq!(signed["kind"], "bundle");
    assert!(signed["peer_uid"].is_u64(), "{signed}");
    let opened = lines.iter().find(|l| l["message"] == "signing key opened").unwrap();
    assert_eq!(opened["tpm"], device.as_str());
    // The flag wins over the config, and a bad value is a usage error.
    let (code, _, err) = run_bin(SIGNER_UNIX, &[&config.display().to_string(), "--log-format", "xml"], b"").unwrap();
    assert_eq!(code, 2);
    assert!(err.contains("use text or json"), "{err}");
}

/// The signing key with a password (`provision --key-password-file`, `tpm-key-password-file`): signer-unix signs
/// with it; started with a wrong password or none, it stops at once and says which password was refused. Without
/// one, any member of the TPM's group could sign with the key through the device.
#[test]
fn a_key_password_is_needed_to_sign_and_a_wrong_one_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let webroot = dir.join("www");
    std::fs::create_dir_all(&webroot).unwrap();
    let tpm = Swtpm::start().unwrap();
    let (right, wrong) = (dir.join("right"), dir.join("wrong"));
    std::fs::write(&right, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(&wrong, "fedcba9876543210\n").unwrap();
    let device = tpm.device().to_string();
    let pem = dir.join("key.pem").display().to_string();
    let args = ["provision", "--tpm-device", &device, "--key-type", "ecc-p256", "--out", &pem, "--key-password-file"];
    let (code, _, err) = run_bin(SIGNER_UNIX, &[&args[..], &[&right.display().to_string()]].concat(), b"").unwrap();
    assert_eq!(code, 0, "{err}");
    let config = |name: &str, password: Option<&Path>| {
        let path = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.sock"));
        let mut text = format!(
            "socket: {}\ntpm-device: \"{device}\"\ndir: {}\nissuer: {name}\nsocket-mode: \"0600\"\n",
            socket.display(),
            webroot.display()
        );
        if let Some(p) = password {
            text.push_str(&format!("tpm-key-password-file: {}\n", p.display()));
        }
        std::fs::write(&path, text).unwrap();
        (path, socket)
    };
    for (name, password) in [("wrong", Some(wrong.as_path())), ("none", None)] {
        let (path, _) = config(name, password);
        let (code, _, err) = run_bin(SIGNER_UNIX, &[&path.display().to_string()], b"").unwrap();
        assert_ne!(code, 0, "{name}: started");
        assert!(err.contains("signing key's password was refused"), "{name}: {err}");
    }
    let (path, socket) = config("right", Some(&right));
    let log = dir.join("right.log");
    let _signer = signer_unix(&path, &socket, &log);
    let ca = pki::spire_ca(dir, "example.org", "ca").unwrap();
    let token = sign_cli(&socket, &[], &ca).unwrap();
    let key = crypto::keys::VerifyingKey::from_pem("key.pem", &std::fs::read(&pem).unwrap()).unwrap();
    let policy = crypto::policy::Policy::new(vec![key], None, crypto::Limits::default()).unwrap();
    assert_eq!(policy.verify(&token, common::clock::unix_now()).unwrap().bundle.to_pem(), ca);
    // provision finds the key again only with its password.
    let (code, _, err) = run_bin(SIGNER_UNIX, &[&args[..], &[&wrong.display().to_string()]].concat(), b"").unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("password was refused"), "{err}");
}
