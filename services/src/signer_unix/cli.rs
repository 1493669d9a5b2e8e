//! signer-unix's command line: `CONFIG` runs the daemon; `provision [--tpm-device DEV] [--handle H]
//! [--key-type T] [--out FILE]` creates (or finds) the signing key and prints its public key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::server::http::shutdown_signal;
use crate::signer_unix::{self, SignerUnixConfig};
use crate::ConfigFile;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use common::logging::{self, LogFormat};
use tpm::{KeyType, PersistentHandle, TpmDevice};

/// Signs SPIRE trust bundles with a key that never leaves this host's TPM, on a unix socket, and publishes the
/// signed token atomically for a web server.
#[derive(Parser, Debug)]
#[command(name = "spire-server-attestor-tpm-signer-unix", version, args_conflicts_with_subcommands = true)]
#[command(subcommand_negates_reqs = true)]
pub struct Cli {
    /// The YAML config (the upstream keys keep their meaning): runs the daemon.
    #[arg(required = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
    /// Log lines as text (default) or json; overrides the config's `log-format`.
    #[arg(long, value_name = "text|json", global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates the signing key at the handle (and the storage key it needs) unless one is there, and prints
    /// its public key (PEM).
    Provision(ProvisionArgs),
}

#[derive(Args, Debug)]
struct ProvisionArgs {
    /// The TPM (default: /dev/tpmrm0, then /dev/tpm0).
    #[arg(long, value_name = "DEV")]
    tpm_device: Option<TpmDevice>,
    /// The persistent handle.
    #[arg(long, default_value = "0x81008006")]
    handle: PersistentHandle,
    /// rsa2048 or ecc-p256.
    #[arg(long, default_value = "rsa2048")]
    key_type: KeyType,
    /// Write the public key here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The key's password (16 to 32 random bytes, e.g. `openssl rand -hex 16`): the file the config's
    /// `tpm-key-password-file` names. Without it the key has none, and any member of the TPM's group can sign
    /// with it. An existing key must take it.
    #[arg(long, value_name = "FILE")]
    key_password_file: Option<PathBuf>,
}

/// Runs what the command line asks: the daemon, or `provision`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    logging::quiet_tss_logging();
    match (cli.command, cli.config) {
        (Some(Command::Provision(a)), _) => {
            logging::init_with(cli.log_format.unwrap_or_default());
            provision(a)
        }
        (None, Some(config)) => serve(config, cli.log_format),
        (None, None) => Ok(()),
    }
}

fn device(given: Option<TpmDevice>) -> anyhow::Result<TpmDevice> {
    Ok(match given {
        Some(d) => d,
        None => TpmDevice::autodetect()?,
    })
}

fn serve(path: PathBuf, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let cfg = SignerUnixConfig::load(&path)?;
    logging::init_with(log_format.unwrap_or(cfg.log_format));
    let device = device(cfg.tpm_device.clone())?;
    if device.is_software() {
        tracing::warn!(tpm = %device, "tpm-device is a software TPM (swtpm): for tests only");
    }
    // One async thread: the work is I/O and hand-offs to the TPM owner thread, which signs one at a time.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let Some(key) = signer_unix::wait_for_key(&device, cfg.handle, &cfg.key_password, &mut shutdown)
            .await
            .with_context(|| format!("opening signing key {} on TPM {device}", cfg.handle))?
        else {
            return Ok(());
        };
        signer_unix::run(cfg, Arc::new(key), shutdown).await?;
        anyhow::Ok(())
    })
}

fn provision(a: ProvisionArgs) -> anyhow::Result<()> {
    let (device, handle, key_type) = (device(a.tpm_device)?, a.handle, a.key_type);
    let auth = crate::server::key_password::read(
        Path::new("the command line"),
        "--key-password-file",
        a.key_password_file.as_deref(),
    )?;
    let done = tpm::provision::provision(&device, handle, key_type, &auth)
        .with_context(|| format!("provisioning {key_type} key at {handle} on {device}"))?;
    let pem = crypto::pem::encode("PUBLIC KEY", done.public.spki_der());
    let what = format!("{:?}: {key_type} signing key at {handle} on {device}", done.outcome);
    match a.out {
        Some(path) => {
            common::fsutil::write_atomic(&path, ".provision.tmp", pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{what}; public key written to {}", path.display());
        }
        None => {
            eprintln!("{what}");
            print!("{pem}");
        }
    }
    Ok(())
}
