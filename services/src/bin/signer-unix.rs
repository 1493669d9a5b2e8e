//! `spire-server-attestor-tpm-signer-unix CONFIG` runs the daemon;
//! `spire-server-attestor-tpm-signer-unix provision [--tpm-device DEV] [--handle H] [--key-type T] [--out FILE]`
//! creates (or finds) the signing key and prints its public key.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use common::logging;
use services::server::http::shutdown_signal;
use services::signer_unix::{self, SignerUnixConfig};

const USAGE: &str = "usage: spire-server-attestor-tpm-signer-unix CONFIG\n       \
    spire-server-attestor-tpm-signer-unix provision [--tpm-device DEV] [--handle 0x81008006] \
    [--key-type rsa2048|ecc-p256] [--out FILE]";

fn main() {
    if let Err(e) = run() {
        // One line with the whole cause chain; no backtrace for an operator's config mistake.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    logging::quiet_tss_logging();
    logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("provision") => provision(&args[1..]),
        Some("-h" | "--help") | None => {
            eprintln!("{USAGE}");
            std::process::exit(if args.is_empty() { 2 } else { 0 })
        }
        Some(config) if args.len() == 1 => serve(PathBuf::from(config)),
        Some(_) => bail!("{USAGE}"),
    }
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let cfg = SignerUnixConfig::load(&path)?;
    let device = match &cfg.tpm_device {
        Some(d) => d.clone(),
        None => tpm::TpmDevice::autodetect()?,
    };
    if device.is_software() {
        tracing::warn!(tpm = %device, "tpm-device is a software TPM (swtpm): for tests only");
    }
    // One async thread: the work is I/O and hand-offs to the TPM owner thread, which signs one at a time.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let Some(key) = signer_unix::wait_for_key(&device, cfg.handle, &mut shutdown)
            .await
            .with_context(|| format!("opening signing key {} on TPM {device}", cfg.handle))?
        else {
            return Ok(());
        };
        signer_unix::run(cfg, Arc::new(key), shutdown).await?;
        anyhow::Ok(())
    })
}

fn provision(args: &[String]) -> anyhow::Result<()> {
    let mut device = None;
    let mut handle = tpm::PersistentHandle::DEFAULT_SIGNING;
    let mut key_type = tpm::KeyType::Rsa2048;
    let mut out = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--tpm-device" => device = Some(value()?.parse::<tpm::TpmDevice>().context("--tpm-device")?),
            "--handle" => handle = value()?.parse().context("--handle")?,
            "--key-type" => key_type = value()?.parse().context("--key-type")?,
            "--out" => out = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let device = match device {
        Some(d) => d,
        None => tpm::TpmDevice::autodetect()?,
    };
    let done = tpm::provision::provision(&device, handle, key_type)
        .with_context(|| format!("provisioning {key_type} key at {handle} on {device}"))?;
    let pem = crypto::pem::encode("PUBLIC KEY", done.public.spki_der());
    match out {
        Some(path) => {
            common::fsutil::write_atomic(&path, ".provision.tmp", pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{:?}: {key_type} signing key at {handle} on {device}; public key written to {}",
                done.outcome,
                path.display()
            );
        }
        None => {
            eprintln!("{:?}: {key_type} signing key at {handle} on {device}", done.outcome);
            print!("{pem}");
        }
    }
    Ok(())
}
