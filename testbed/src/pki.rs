//! Test PKI made with the openssl CLI: the one openssl runner, three recipes (a P-256 self-signed CA, a P-256
//! CSR, an issue by a CA), a SPIRE-like CA certificate with a SPIFFE URI SAN as SPIRE puts in its bundles, and a
//! web CA with a server certificate for 127.0.0.1.

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

/// A new P-256 key `{name}.key` and a self-signed certificate `{name}.pem` for `subject`, valid `days`, with each
/// of `extensions` (openssl `-addext` values), in `dir`.
pub fn p256_self_signed(dir: &Path, name: &str, subject: &str, days: u32, extensions: &[&str]) -> anyhow::Result<()> {
    let (key, cert, days) = (format!("{name}.key"), format!("{name}.pem"), days.to_string());
    let mut args = vec!["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    args.extend(["-days", &days, "-subj", subject, "-keyout", &key, "-out", &cert]);
    for e in extensions {
        args.extend(["-addext", e]);
    }
    openssl(&args, dir).map(drop)
}

/// A new P-256 key `{name}.key` and its certificate request `{name}.csr` for `subject`, in `dir`.
pub fn p256_csr(dir: &Path, name: &str, subject: &str) -> anyhow::Result<()> {
    let (key, csr) = (format!("{name}.key"), format!("{name}.csr"));
    openssl(
        &["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
            .into_iter()
            .chain(["-subj", subject, "-keyout", &key, "-out", &csr])
            .collect::<Vec<_>>(),
        dir,
    )
    .map(drop)
}

/// Issues `{name}.pem` for `{name}.csr` by the CA `{ca}.pem`/`{ca}.key`, valid `days`, with the extensions of
/// `extfile` (an openssl extension file's text, written to `{name}.ext`), in `dir`.
pub fn issue(dir: &Path, name: &str, ca: &str, days: u32, extfile: &str) -> anyhow::Result<()> {
    let (csr, ext, cert) = (format!("{name}.csr"), format!("{name}.ext"), format!("{name}.pem"));
    let (ca_cert, ca_key, days) = (format!("{ca}.pem"), format!("{ca}.key"), days.to_string());
    std::fs::write(dir.join(&ext), extfile).with_context(|| format!("writing {ext}"))?;
    openssl(
        &["x509", "-req", "-in", &csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial"]
            .into_iter()
            .chain(["-days", &days, "-extfile", &ext, "-out", &cert])
            .collect::<Vec<_>>(),
        dir,
    )
    .map(drop)
}

/// Creates a self-signed P-256 CA for trust domain `td` in `dir`; returns the certificate's PEM text.
pub fn spire_ca(dir: &Path, td: &str, name: &str) -> anyhow::Result<String> {
    let (subject, san) = (format!("/C=US/O=SPIFFE/serialNumber={name}"), format!("subjectAltName=URI:spiffe://{td}"));
    let extensions = [san.as_str(), "basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"];
    p256_self_signed(dir, name, &subject, 2, &extensions)?;
    std::fs::read_to_string(dir.join(format!("{name}.pem"))).context("reading the CA certificate")
}

/// Creates a CA and a server certificate for 127.0.0.1 signed by it, in `dir`; returns (ca.pem, server chain,
/// server key) paths, for https tests.
pub fn tls_server(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let ca_extensions = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign"];
    p256_self_signed(dir, "webca", "/CN=test web CA", 2, &ca_extensions)?;
    p256_csr(dir, "web", "/CN=127.0.0.1")?;
    issue(
        dir,
        "web",
        "webca",
        2,
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    Ok((dir.join("webca.pem"), dir.join("web.pem"), dir.join("web.key")))
}
