//! Test PKI made with the openssl CLI: a SPIRE-like CA certificate with a SPIFFE URI SAN, as SPIRE puts in
//! its bundles.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Runs openssl in `cwd`: its stdout, or an error with its arguments and stderr. The one way the testbed runs
/// openssl.
pub fn openssl(args: &[&str], cwd: &Path) -> anyhow::Result<String> {
    let out = Command::new("openssl").args(args).current_dir(cwd).output().context("running openssl")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates a self-signed P-256 CA for trust domain `td` in `dir`; returns the certificate's PEM text.
pub fn spire_ca(dir: &Path, td: &str, name: &str) -> anyhow::Result<String> {
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    let (subject, san) = (format!("/C=US/O=SPIFFE/serialNumber={name}"), format!("subjectAltName=URI:spiffe://{td}"));
    openssl(
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
            .into_iter()
            .chain(["-subj", &subject, "-addext", &san, "-addext", "basicConstraints=critical,CA:TRUE"])
            .chain(["-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", &key, "-out", &cert])
            .collect::<Vec<_>>(),
        dir,
    )?;
    std::fs::read_to_string(dir.join(cert)).context("reading the CA certificate")
}

/// Creates a CA and a server certificate for 127.0.0.1 signed by it, in `dir`; returns (ca.pem, server chain,
/// server key) paths, for https tests.
pub fn tls_server(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| openssl(args, dir).map(drop);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test web CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        "webca.key",
        "-out",
        "webca.pem",
    ])?;
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "web.key",
        "-out",
        "web.csr",
    ])?;
    std::fs::write(
        dir.join("web.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "web.csr",
        "-CA",
        "webca.pem",
        "-CAkey",
        "webca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "web.ext",
        "-out",
        "web.pem",
    ])?;
    Ok((dir.join("webca.pem"), dir.join("web.pem"), dir.join("web.key")))
}
