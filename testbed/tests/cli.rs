//! Every binary's command line, as an operator meets it: `--help` and `--version` answer on stdout with exit 0,
//! each subcommand has its own help, a usage error goes to stderr with exit 2, a runtime error exits 1 and
//! prints each cause once. The upstream forms keep working (their behaviour is tested end to end elsewhere).

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use testbed::process::run_bin;

const BINS: [&str; 10] = [
    "spire-server-attestor-tpm-signer-unix",
    "spire-server-attestor-tpm-signer-http",
    "spire-server-attestor-tpm-verifier",
    "spire-server-attestor-tpm-sign",
    "spire-server-attestor-tpm-devid",
    "spire-agent-nodeattestor-tpm-devid",
    "spire-server-nodeattestor-tpm-devid",
    "spire-agent-keymanager-tpm",
    "spire-server-keymanager-tpm",
    "spire-server-attestor-tpm-devid-ca",
];

#[test]
fn help_and_version_answer_on_stdout_with_exit_0() {
    for bin in BINS {
        let (code, out, err) = run_bin(bin, &["--help"], b"").unwrap();
        assert_eq!(code, 0, "{bin} --help: {err}");
        assert!(out.contains("Usage:") && out.contains(bin), "{bin} --help:\n{out}");
        let (code, out, err) = run_bin(bin, &["--version"], b"").unwrap();
        assert_eq!((code, out.trim()), (0, format!("{bin} {}", env!("CARGO_PKG_VERSION")).as_str()), "{bin}: {err}");
    }
    for (bin, sub) in [
        ("spire-server-attestor-tpm-signer-unix", "provision"),
        ("spire-server-attestor-tpm-devid", "provision"),
        ("spire-server-attestor-tpm-devid", "sign-csr"),
        ("spire-server-attestor-tpm-devid", "check"),
        ("spire-server-attestor-tpm-sign", "keys"),
    ] {
        let (code, out, _) = run_bin(bin, &[sub, "--help"], b"").unwrap();
        assert_eq!(code, 0, "{bin} {sub} --help");
        assert!(out.contains(&format!("{bin} {sub}")) && out.contains("--"), "{bin} {sub} --help:\n{out}");
    }
}

#[test]
fn usage_errors_go_to_stderr_with_exit_2() {
    let table: [(&str, &[&str], &str); 16] = [
        ("spire-server-attestor-tpm-signer-unix", &[], "<CONFIG>"),
        ("spire-server-attestor-tpm-signer-unix", &["a.conf", "b.conf"], "cannot be used with"),
        ("spire-server-attestor-tpm-signer-unix", &["provision", "--handle", "0x123"], "not a persistent handle"),
        ("spire-server-attestor-tpm-signer-unix", &["provision", "--key-type", "rsa4096"], "rsa2048 or ecc-p256"),
        ("spire-server-attestor-tpm-signer-unix", &["provision", "--tpm-device", "tcp:1"], "--tpm-device"),
        ("spire-server-attestor-tpm-signer-http", &[], "<CONFIG>"),
        ("spire-server-attestor-tpm-verifier", &["v.conf"], "<KEYSET>"),
        ("spire-server-attestor-tpm-verifier", &["v.conf", "-l", "main"], "cannot be used with"),
        ("spire-server-attestor-tpm-sign", &[], "not meant to be executed directly"),
        ("spire-server-attestor-tpm-devid", &["provision"], "--out-dir"),
        ("spire-server-attestor-tpm-devid", &["sign-csr", "--csr", "x", "--days", "0"], "--days"),
        ("spire-agent-nodeattestor-tpm-devid", &[], "not meant to be executed directly"),
        ("spire-server-nodeattestor-tpm-devid", &[], "not meant to be executed directly"),
        ("spire-agent-keymanager-tpm", &[], "not meant to be executed directly"),
        ("spire-server-keymanager-tpm", &[], "not meant to be executed directly"),
        ("spire-server-attestor-tpm-sign", &["keys", "--keyset", "main"], "--version"),
    ];
    for (bin, args, says) in table {
        let (code, out, err) = run_bin(bin, args, b"").unwrap();
        assert_eq!(code, 2, "{bin} {args:?}: stdout {out:?} stderr {err:?}");
        assert!(err.contains(says), "{bin} {args:?} says {says:?}: {err}");
        assert!(out.is_empty(), "{bin} {args:?} wrote to stdout: {out}");
    }
    // `sign` without arguments also says how to use it as a command.
    let (_, _, err) = run_bin("spire-server-attestor-tpm-sign", &[], b"").unwrap();
    assert!(err.contains("It is also a command") && err.contains("[SOCKET]"), "{err}");
}

#[test]
fn runtime_errors_exit_1_and_say_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf").display().to_string();
    for bin in ["spire-server-attestor-tpm-signer-unix", "spire-server-attestor-tpm-signer-http"] {
        let (code, _, err) = run_bin(bin, &[&missing], b"").unwrap();
        assert_eq!(code, 1, "{bin}: {err}");
        assert!(err.starts_with("error: config ") && err.contains(&missing), "{bin}: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{bin} repeats its cause: {err}");
        assert_eq!(err.lines().count(), 1, "{bin}: one line: {err}");
    }
    let (code, _, err) = run_bin("spire-server-attestor-tpm-verifier", &[&missing, "main"], b"").unwrap();
    assert_eq!(code, 1);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // The upstream `sign SOCKET` form: a socket nobody listens on is a runtime error, nothing published.
    let sock = dir.path().join("none.sock").display().to_string();
    let (code, out, err) =
        run_bin("spire-server-attestor-tpm-sign", &[&sock], b"-----BEGIN CERTIFICATE-----\n").unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty() && err.starts_with("error: signing failed, nothing published"), "{err}");
}
