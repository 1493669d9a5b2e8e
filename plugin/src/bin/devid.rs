//! `spire-server-attestor-tpm-devid provision --tpm-device DEV [--key-type rsa2048|ecc-p256] [--subject-cn NAME]
//! [--devid-password-file F] [--owner-password-file F] --out-dir DIR`

use std::path::PathBuf;

use plugin::devid::provision::{provision, read_password, ProvisionRequest};
use tpm::devid::Password;

const USAGE: &str =
    "usage: spire-server-attestor-tpm-devid provision [--tpm-device DEV] [--key-type rsa2048|ecc-p256] \
    [--subject-cn NAME] [--devid-password-file F] [--owner-password-file F] --out-dir DIR";

fn run(args: &[String]) -> Result<(), String> {
    let [cmd, rest @ ..] = args else { return Err(USAGE.into()) };
    if cmd != "provision" {
        return Err(USAGE.into());
    }
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
        None => {
            services::common::config::hostname().map_err(|e| format!("--subject-cn not given and no host name: {e}"))?
        }
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
    services::common::logging::quiet_tss_logging();
    services::common::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
