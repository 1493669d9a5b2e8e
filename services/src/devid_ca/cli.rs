//! The enrollment CA's command line: `CONFIG` runs the daemon; `provision` makes its key in the TPM and its
//! certificate (or a request for an offline root); `token create` makes a one-time enrollment token; `revoke`
//! revokes a certificate or an EK; `list` shows what was issued.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use der::{Encode, EncodePem};

use super::config::DevIdCaConfig;
use super::db::Db;
use super::x509::{self, CaKey};
use crate::server::http::shutdown_signal;
use crate::ConfigFile;
use common::logging::{self, LogFormat};
use tpm::{KeyType, TpmDevice};

/// Issues, renews and revokes DevID certificates for nodes that prove a TPM the operator approved, with a CA key
/// that never leaves this host's TPM.
#[derive(Parser, Debug)]
#[command(name = "spire-server-attestor-tpm-devid-ca", version, args_conflicts_with_subcommands = true)]
#[command(subcommand_negates_reqs = true)]
pub struct Cli {
    /// The YAML config: runs the CA.
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
    /// Creates the CA key in the TPM (unless one is at tpm-address) and writes a self-signed CA certificate to
    /// ca-cert, or a certificate request for an offline root.
    Provision(ProvisionArgs),
    /// One-time enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Revokes a certificate, or every certificate of an EK and its future enrollments; the CA re-signs its CRL.
    Revoke(RevokeArgs),
    /// Lists the certificates the CA issued.
    List(ListArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["self_signed", "csr"])))]
struct ProvisionArgs {
    /// The CA's config.
    config: PathBuf,
    /// Write a self-signed CA certificate to ca-cert.
    #[arg(long, requires = "subject_cn")]
    self_signed: bool,
    /// Write a certificate request for the CA key here instead, for an offline root to sign.
    #[arg(long, value_name = "OUT")]
    csr: Option<PathBuf>,
    /// The CA's subject common name.
    #[arg(long, value_name = "CN")]
    subject_cn: Option<String>,
    /// rsa2048 or ecc-p256.
    #[arg(long, default_value = "ecc-p256")]
    key_type: KeyType,
    /// How long the self-signed certificate is valid, in days.
    #[arg(long, default_value_t = 3650)]
    days: u64,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Prints a new one-time token that lets one node with a genuine TPM enroll under NAME.
    Create(TokenArgs),
    /// Lists the tokens: name, expiry, and the serial that spent each (never the tokens themselves).
    List(ListArgs),
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// The name the node gets (its certificate's subject CN).
    #[arg(long)]
    name: String,
    /// How long the token may be used (Go duration).
    #[arg(long, default_value = "1h")]
    ttl: common::duration::GoDuration,
    /// The CA's config.
    config: PathBuf,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["serial", "ek_hash"])))]
struct RevokeArgs {
    /// The certificate's serial (hex, as `list` and `enroll` print it).
    #[arg(long)]
    serial: Option<String>,
    /// The EK's hash (`sha256:<hex>`): every certificate of that TPM, and any later enrollment of it.
    #[arg(long)]
    ek_hash: Option<crypto::devid::ek::EkHash>,
    /// The CA's config.
    config: PathBuf,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// The CA's config.
    config: PathBuf,
}

/// Runs what the command line asks.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    logging::quiet_tss_logging();
    let format = cli.log_format;
    match (cli.command, cli.config) {
        (None, Some(config)) => serve(config, format),
        (Some(command), _) => {
            logging::init_with(format.unwrap_or_default());
            match command {
                Command::Provision(a) => provision(a),
                Command::Token(TokenCommand::Create(a)) => token(a),
                Command::Token(TokenCommand::List(a)) => token_list(a),
                Command::Revoke(a) => revoke(a),
                Command::List(a) => list(a),
            }
        }
        (None, None) => Ok(()),
    }
}

fn device(given: Option<TpmDevice>) -> anyhow::Result<TpmDevice> {
    Ok(match given {
        Some(d) => d,
        None => TpmDevice::autodetect()?,
    })
}

fn serve(path: PathBuf, format: Option<LogFormat>) -> anyhow::Result<()> {
    let cfg = DevIdCaConfig::load(&path)?;
    logging::init_with(format.unwrap_or(cfg.log_format));
    let device = device(cfg.tpm_device.clone())?;
    if device.is_software() {
        tracing::warn!(tpm = %device, "tpm-device is a software TPM (swtpm): for tests only");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let Some(key) = crate::server::tpm_key::wait_for_key(&device, cfg.handle, &cfg.key_password, &mut shutdown)
            .await
            .with_context(|| format!("opening the CA key {} on TPM {device}", cfg.handle))?
        else {
            return Ok(());
        };
        super::server::run(cfg, Arc::new(key), common::clock::Clock::system(), shutdown).await?;
        anyhow::Ok(())
    })
}

fn provision(a: ProvisionArgs) -> anyhow::Result<()> {
    let cfg = DevIdCaConfig::load(&a.config)?;
    let device = device(cfg.tpm_device.clone())?;
    let done = tpm::provision::provision(&device, cfg.handle, a.key_type, &cfg.key_password)
        .with_context(|| format!("provisioning the CA key at {} on {device}", cfg.handle))?;
    eprintln!("{:?}: {} CA key at {} on {device}", done.outcome, a.key_type, cfg.handle);
    let key = tpm::Tpm::open(&device)?.signing_key(cfg.handle)?.with_auth(cfg.key_password.clone());
    let key = CaKey::new(Arc::new(key));
    let subject = a.subject_cn.as_deref().unwrap_or("spire-server-attestor-tpm DevID CA");
    if let Some(out) = &a.csr {
        let request = x509::request(&key, subject)?;
        let pem = request.to_pem(der::pem::LineEnding::LF)?;
        common::fsutil::write_atomic(out, ".csr.tmp", pem.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("certificate request for CN={subject} written to {}: have the root sign it, and put the chain (this CA's certificate first) at {}", out.display(), cfg.ca_cert.display());
        return Ok(());
    }
    if cfg.ca_cert.exists() {
        let chain = super::server::load_chain(&cfg.ca_cert)?;
        let own = chain[0].tbs_certificate.subject_public_key_info.to_der()?;
        let theirs = crypto::keys::VerifyingKey::from_spki_der("ca-cert", &own)?;
        let ours = crypto::keys::VerifyingKey::from_spki_der("tpm", key.spki_der())?;
        if !theirs.same_key(&ours) {
            bail!(
                "{} exists and is not this TPM key's certificate: move it away to write a new one",
                cfg.ca_cert.display()
            );
        }
        eprintln!("{} is already this CA key's certificate: kept", cfg.ca_cert.display());
        return Ok(());
    }
    let cert = x509::self_signed(&key, subject, common::clock::unix_now(), a.days)?;
    let pem = cert.to_pem(der::pem::LineEnding::LF)?;
    common::fsutil::write_atomic(&cfg.ca_cert, ".ca-cert.tmp", pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", cfg.ca_cert.display()))?;
    eprintln!("self-signed CA certificate CN={subject} written to {}", cfg.ca_cert.display());
    Ok(())
}

fn open_db(cfg: &DevIdCaConfig) -> anyhow::Result<Db> {
    Db::open(&cfg.database()).with_context(|| format!("opening {}", cfg.database().display()))
}

fn token(a: TokenArgs) -> anyhow::Result<()> {
    if !crypto::devid::ek::is_node_name(&a.name) {
        bail!("--name {:?}: 1 to {} letters, digits, '.', '-', '_'", a.name, crypto::devid::ek::MAX_NAME);
    }
    let ttl: Duration = a.ttl.0;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(30 * 86_400) {
        bail!("--ttl: between 1m and 720h");
    }
    let cfg = DevIdCaConfig::load(&a.config)?;
    let token = open_db(&cfg)?.create_token(&a.name, ttl, common::clock::unix_now())?;
    tracing::info!(name = %a.name, ttl_secs = ttl.as_secs(), "enrollment token created (stored hashed)");
    println!("{token}");
    Ok(())
}

fn revoke(a: RevokeArgs) -> anyhow::Result<()> {
    let cfg = DevIdCaConfig::load(&a.config)?;
    let db = open_db(&cfg)?;
    let now = common::clock::unix_now();
    match (a.serial, a.ek_hash) {
        (Some(serial), _) => {
            let serial = serial.to_ascii_lowercase();
            let n = db.revoke_serial(&serial, now)?;
            eprintln!(
                "revoked certificate {serial} and its renewal line ({n} certificate(s)); the CA's CRL lists them within seconds"
            );
        }
        (None, Some(hash)) => {
            let n = db.revoke_ek(&hash.to_string(), now)?;
            eprintln!("revoked EK {hash} and its {n} certificate(s); it may not enroll again");
        }
        (None, None) => bail!("give --serial or --ek-hash"),
    }
    Ok(())
}

fn token_list(a: ListArgs) -> anyhow::Result<()> {
    let cfg = DevIdCaConfig::load(&a.config)?;
    let now = common::clock::unix_now();
    for t in open_db(&cfg)?.tokens()? {
        let state = match (&t.spent_serial, t.expires <= now) {
            (Some(serial), _) => format!("spent {serial}"),
            (None, true) => "expired".to_owned(),
            (None, false) => "unspent".to_owned(),
        };
        println!("{} {} {state}", t.name, t.expires);
    }
    Ok(())
}

fn list(a: ListArgs) -> anyhow::Result<()> {
    let cfg = DevIdCaConfig::load(&a.config)?;
    for c in open_db(&cfg)?.certificates()? {
        let state = if c.revoked { "revoked" } else { c.state.as_str() };
        println!("{} {} {} {} {}", c.serial, state, c.name, c.not_after, c.ek_hash);
    }
    Ok(())
}
