//! `spire-server-attestor-tpm-devid provision --tpm-device DEV [--key-type rsa2048|ecc-p256] [--subject-cn NAME]
//! [--devid-password-file F] [--owner-password-file F] --out-dir DIR` creates the DevID and its CSR;
//! `spire-server-attestor-tpm-devid sign-csr --csr F --ca-cert F --ca-key F [--chain F] [--days N] --out F` is a
//! file-based DevID CA for labs and tests; `spire-server-attestor-tpm-devid check ...` runs the whole `tpm_devid`
//! exchange locally and says which step fails.

use std::path::PathBuf;

use plugin::devid::provision::{provision, read_password, ProvisionRequest};
use tpm::Password;

const USAGE: &str = "usage: spire-server-attestor-tpm-devid provision [--tpm-device DEV] \
    [--key-type rsa2048|ecc-p256] [--subject-cn NAME] [--devid-password-file F] [--owner-password-file F] \
    --out-dir DIR\n       spire-server-attestor-tpm-devid sign-csr --csr F --ca-cert F --ca-key F [--chain F] \
    [--days N] --out F\n       spire-server-attestor-tpm-devid check [--tpm-device DEV] --devid-cert F --devid-priv F \
    --devid-pub F [--devid-password-file F] [--owner-password-file F] [--endorsement-password-file F] \
    --devid-ca F --endorsement-ca F [--trust-domain TD]";

fn run(args: &[String]) -> Result<(), String> {
    let [cmd, rest @ ..] = args else { return Err(USAGE.into()) };
    match cmd.as_str() {
        "provision" => provision_cmd(rest),
        "sign-csr" => sign_csr_cmd(rest),
        "check" => check_cmd(rest),
        _ => Err(USAGE.into()),
    }
}

fn sign_csr_cmd(rest: &[String]) -> Result<(), String> {
    let (mut csr, mut cert, mut key, mut chain, mut days, mut out) = (None, None, None, None, 365u32, None);
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let read = |what: &str| std::fs::read_to_string(value).map_err(|e| format!("{what} {value}: {e}"));
        match flag.as_str() {
            "--csr" => csr = Some(read("--csr")?),
            "--ca-cert" => cert = Some(read("--ca-cert")?),
            "--ca-key" => key = Some(read("--ca-key")?),
            "--chain" => chain = Some(read("--chain")?),
            "--days" => days = value.parse().ok().filter(|d| (1..=3650).contains(d)).ok_or("--days: 1 to 3650")?,
            "--out" => out = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(csr), Some(cert), Some(key), Some(out)) = (csr, cert, key, out) else {
        return Err(format!("--csr, --ca-cert, --ca-key and --out are required\n{USAGE}"));
    };
    let pem = plugin::devid::ca::sign_csr(&csr, &cert, &key, chain.as_deref().unwrap_or(""), days)
        .map_err(|e| e.to_string())?;
    common::fsutil::write_atomic(&out, ".sign-csr.tmp", pem.as_bytes(), 0o644)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("issued {} (valid {days} days)", out.display());
    Ok(())
}

fn check_cmd(rest: &[String]) -> Result<(), String> {
    use plugin::devid::check::{run as check, CheckRequest};
    let (mut device, mut cert, mut private, mut public, mut devid_ca, mut ek_ca) = (None, None, None, None, None, None);
    let mut devid_password = Password::default();
    let mut hierarchies = tpm::attest::Hierarchies::default();
    let mut trust_domain = "example.org".to_string();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let password = || read_password(&PathBuf::from(value)).map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--tpm-device" => device = Some(value.parse::<tpm::TpmDevice>().map_err(|e| format!("--tpm-device: {e}"))?),
            "--devid-cert" => cert = Some(PathBuf::from(value)),
            "--devid-priv" => private = Some(PathBuf::from(value)),
            "--devid-pub" => public = Some(PathBuf::from(value)),
            "--devid-ca" => devid_ca = Some(PathBuf::from(value)),
            "--endorsement-ca" => ek_ca = Some(PathBuf::from(value)),
            "--devid-password-file" => devid_password = password()?,
            "--owner-password-file" => hierarchies.owner = password()?,
            "--endorsement-password-file" => hierarchies.endorsement = password()?,
            "--trust-domain" => trust_domain = value.clone(),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let (Some(devid_cert), Some(devid_priv), Some(devid_pub), Some(devid_ca), Some(endorsement_ca)) =
        (cert, private, public, devid_ca, ek_ca)
    else {
        return Err(format!(
            "--devid-cert, --devid-priv, --devid-pub, --devid-ca and --endorsement-ca are required\n{USAGE}"
        ));
    };
    let device = match device {
        Some(d) => d,
        None => plugin::devid::agent::autodetect(std::path::Path::new("/dev"))?,
    };
    let req = CheckRequest {
        device,
        devid_cert,
        devid_priv,
        devid_pub,
        devid_password,
        hierarchies,
        devid_ca,
        endorsement_ca,
        trust_domain,
    };
    let (id, attested) = check(&req, &mut std::io::stdout())?;
    println!("agent ID   {id}");
    for s in &attested.selectors {
        println!("selector   tpm_devid:{s}");
    }
    Ok(())
}

fn provision_cmd(rest: &[String]) -> Result<(), String> {
    let mut device = None;
    let mut key_type = tpm::KeyType::Rsa2048;
    let mut cn = None;
    let (mut devid_password, mut owner_password) = (Password::default(), Password::default());
    let mut out_dir = None;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--tpm-device" => device = Some(value.parse::<tpm::TpmDevice>().map_err(|e| format!("--tpm-device: {e}"))?),
            "--key-type" => key_type = value.parse().map_err(|e| format!("--key-type: {e}"))?,
            "--subject-cn" => cn = Some(value.clone()),
            "--devid-password-file" => {
                devid_password =
                    read_password(&PathBuf::from(value)).map_err(|e| format!("--devid-password-file {value}: {e}"))?
            }
            "--owner-password-file" => {
                owner_password =
                    read_password(&PathBuf::from(value)).map_err(|e| format!("--owner-password-file {value}: {e}"))?
            }
            "--out-dir" => out_dir = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let device = match device {
        Some(d) => d,
        None => tpm::TpmDevice::autodetect().map_err(|e| e.to_string())?,
    };
    let subject_cn = match cn {
        Some(c) => c,
        None => common::config::hostname().map_err(|e| format!("--subject-cn not given and no host name: {e}"))?,
    };
    let out_dir = out_dir.ok_or_else(|| format!("--out-dir is required\n{USAGE}"))?;
    let req = ProvisionRequest { device, key_type, subject_cn, devid_password, owner_password, out_dir };
    provision(&req).map_err(|e| e.to_string())?;
    eprintln!(
        "{key_type} DevID created under the {} SRK; wrote devid.priv.blob, devid.pub.blob, devid.csr in {}",
        if key_type == tpm::KeyType::Rsa2048 { "H-1" } else { "H-2" },
        req.out_dir.display()
    );
    Ok(())
}

fn main() {
    common::logging::quiet_tss_logging();
    common::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
