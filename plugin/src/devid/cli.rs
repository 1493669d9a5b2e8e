//! The command line of `spire-server-attestor-tpm-devid`: DevID provisioning for SPIRE's `tpm_devid`
//! (`provision`), a file-based DevID CA for labs and tests (`sign-csr`), and the whole exchange run locally, step
//! by step (`check`).

use std::path::{Path, PathBuf};

use crate::devid::provision::{provision, read_password, ProvisionRequest};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tpm::{KeyType, Password, TpmDevice};

#[derive(Parser, Debug)]
#[command(
    name = "spire-server-attestor-tpm-devid",
    version,
    about = "DevID keys for SPIRE's tpm_devid node attestation"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text (default) or json.
    #[arg(long, value_name = "text|json", default_value = "text", global = true)]
    log_format: common::logging::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Creates a DevID key in this machine's TPM and its certificate request (devid.priv.blob, devid.pub.blob,
    /// devid.csr in --out-dir).
    Provision(ProvisionArgs),
    /// Issues a DevID certificate for a CSR with a CA key in a file (labs and tests; production uses its own CA).
    SignCsr(SignCsrArgs),
    /// Runs the whole tpm_devid exchange locally, agent and server side, and says which step fails.
    Check(CheckArgs),
    /// Has the enrollment CA issue this node's DevID certificate (or renew it), proving its TPM; writes
    /// devid.crt.pem, devid.priv.blob and devid.pub.blob in --out-dir.
    Enroll(EnrollArgs),
    /// Prints this TPM's inventory line for the enrollment CA: `sha256:<hash of the EK> NAME`.
    EkHash(EkHashArgs),
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// The enrollment CA's URL (https://HOST:PORT).
    #[arg(long)]
    url: String,
    /// The DevID CA chain (PEM) the issued certificate must chain to.
    #[arg(long, value_name = "CA.pem")]
    ca_cert: PathBuf,
    /// The CA bundle the enrollment CA's HTTPS certificate chains to (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// A one-time enrollment token, read from a file (when this TPM is not in the CA's inventory).
    #[arg(long, value_name = "F")]
    token_file: Option<PathBuf>,
    /// Where devid.crt.pem, devid.priv.blob and devid.pub.blob go (SPIRE's agent plugin reads them there).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/spire/agent/devid")]
    out_dir: PathBuf,
    /// The TPM (default: /dev/tpmrm0, then /dev/tpm0).
    #[arg(long, value_name = "DEV")]
    tpm_device: Option<TpmDevice>,
    /// rsa2048 or ecc-p256, for a DevID created now.
    #[arg(long, default_value = "rsa2048")]
    key_type: KeyType,
    /// Renew the certificate held when it has less than this left (Go duration); otherwise it is kept.
    #[arg(long, value_name = "DURATION")]
    renew_before: Option<common::duration::GoDuration>,
    #[command(flatten)]
    passwords: ExchangePasswords,
}

/// The passwords a whole exchange needs: the DevID's, and the owner's (its SRK) and endorsement's (the EK).
#[derive(Args, Debug)]
struct ExchangePasswords {
    /// The DevID key's password, read from a file.
    #[arg(long, value_name = "F")]
    devid_password_file: Option<PathBuf>,
    /// The owner hierarchy's password, read from a file.
    #[arg(long, value_name = "F")]
    owner_password_file: Option<PathBuf>,
    /// The endorsement hierarchy's password, read from a file.
    #[arg(long, value_name = "F")]
    endorsement_password_file: Option<PathBuf>,
}

impl ExchangePasswords {
    /// The DevID's password and the hierarchies', each read from its file (empty when not given).
    fn read(&self) -> anyhow::Result<(Password, tpm::attest::Hierarchies)> {
        Ok((
            password("--devid-password-file", self.devid_password_file.as_deref())?,
            tpm::attest::Hierarchies {
                owner: password("--owner-password-file", self.owner_password_file.as_deref())?,
                endorsement: password("--endorsement-password-file", self.endorsement_password_file.as_deref())?,
            },
        ))
    }
}

#[derive(Args, Debug)]
struct EkHashArgs {
    /// The TPM (default: /dev/tpmrm0, then /dev/tpm0).
    #[arg(long, value_name = "DEV")]
    tpm_device: Option<TpmDevice>,
    /// The name the node should get (default: this host's name).
    #[arg(long)]
    name: Option<String>,
    /// The endorsement hierarchy's password, read from a file.
    #[arg(long, value_name = "F")]
    endorsement_password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ProvisionArgs {
    /// The TPM (default: /dev/tpmrm0, then /dev/tpm0).
    #[arg(long, value_name = "DEV")]
    tpm_device: Option<TpmDevice>,
    /// rsa2048 or ecc-p256.
    #[arg(long, default_value = "rsa2048")]
    key_type: KeyType,
    /// The CSR's subject common name (default: this host's name).
    #[arg(long, value_name = "NAME")]
    subject_cn: Option<String>,
    /// The DevID key's password, read from a file.
    #[arg(long, value_name = "F")]
    devid_password_file: Option<PathBuf>,
    /// The owner hierarchy's password, read from a file.
    #[arg(long, value_name = "F")]
    owner_password_file: Option<PathBuf>,
    /// Where the blobs and the CSR go.
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

#[derive(Args, Debug)]
struct SignCsrArgs {
    /// The DevID's certificate request (PEM).
    #[arg(long, value_name = "F")]
    csr: PathBuf,
    /// The issuing CA certificate (PEM).
    #[arg(long, value_name = "F")]
    ca_cert: PathBuf,
    /// The issuing CA's private key (PEM).
    #[arg(long, value_name = "F")]
    ca_key: PathBuf,
    /// Intermediates to append after the DevID certificate (PEM).
    #[arg(long, value_name = "F")]
    chain: Option<PathBuf>,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// Where the certificate (and chain) goes.
    #[arg(long, value_name = "F")]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The TPM (default: SPIRE's autodetection: exactly one /dev/tpmrmN, else exactly one /dev/tpmN).
    #[arg(long, value_name = "DEV")]
    tpm_device: Option<TpmDevice>,
    /// The agent's devid_cert_path.
    #[arg(long, value_name = "F")]
    devid_cert: PathBuf,
    /// The agent's devid_priv_path.
    #[arg(long, value_name = "F")]
    devid_priv: PathBuf,
    /// The agent's devid_pub_path.
    #[arg(long, value_name = "F")]
    devid_pub: PathBuf,
    #[command(flatten)]
    passwords: ExchangePasswords,
    /// The server's devid_ca_path.
    #[arg(long, value_name = "F")]
    devid_ca: PathBuf,
    /// The server's endorsement_ca_path.
    #[arg(long, value_name = "F")]
    endorsement_ca: Option<PathBuf>,
    /// The server's endorsement_hashes_path (EK hashes, for TPMs without an EK certificate).
    #[arg(long, value_name = "F")]
    endorsement_hashes: Option<PathBuf>,
    /// The server's ek_policy: ca, hash, ca_or_hash or ca_and_hash.
    #[arg(long, value_name = "MODE")]
    ek_policy: Option<String>,
    /// The server's devid_crl_path.
    #[arg(long, value_name = "F")]
    devid_crl: Option<PathBuf>,
    /// The server's pcr_selection (e.g. sha256:0,1,2,3,4,5,6,7).
    #[arg(long, value_name = "SEL")]
    pcr_selection: Option<String>,
    /// The server's pcr_policy.
    #[arg(long, value_name = "F")]
    pcr_policy: Option<PathBuf>,
    /// The server's require_pcr_policy.
    #[arg(long)]
    require_pcr_policy: bool,
    /// The trust domain of the printed agent ID.
    #[arg(long, value_name = "TD", default_value = "example.org")]
    trust_domain: crypto::TrustDomain,
}

fn password(flag: &str, file: Option<&Path>) -> anyhow::Result<Password> {
    match file {
        None => Ok(Password::default()),
        Some(f) => read_password(f).with_context(|| format!("{flag} {}", f.display())),
    }
}

/// The TPM named, else /dev/tpmrm0, then /dev/tpm0.
fn device_or_autodetect(named: Option<TpmDevice>) -> anyhow::Result<TpmDevice> {
    Ok(match named {
        Some(d) => d,
        None => TpmDevice::autodetect()?,
    })
}

fn provision_cmd(a: ProvisionArgs) -> anyhow::Result<()> {
    let device = device_or_autodetect(a.tpm_device)?;
    let subject_cn = match a.subject_cn {
        Some(c) => c,
        None => common::config::hostname().context("--subject-cn not given and no host name")?,
    };
    let req = ProvisionRequest {
        device,
        key_type: a.key_type,
        subject_cn,
        devid_password: password("--devid-password-file", a.devid_password_file.as_deref())?,
        owner_password: password("--owner-password-file", a.owner_password_file.as_deref())?,
        out_dir: a.out_dir,
    };
    provision(&req)?;
    eprintln!(
        "{} DevID created under the {} SRK on {}; wrote devid.priv.blob, devid.pub.blob, devid.csr in {}",
        req.key_type,
        if req.key_type == KeyType::Rsa2048 { "H-1" } else { "H-2" },
        req.device,
        req.out_dir.display()
    );
    Ok(())
}

fn sign_csr_cmd(a: SignCsrArgs) -> anyhow::Result<()> {
    let read = |flag: &str, f: &Path| std::fs::read_to_string(f).with_context(|| format!("{flag} {}", f.display()));
    let chain = a.chain.as_deref().map(|f| read("--chain", f)).transpose()?.unwrap_or_default();
    let pem = crate::devid::ca::sign_csr(
        &read("--csr", &a.csr)?,
        &read("--ca-cert", &a.ca_cert)?,
        &read("--ca-key", &a.ca_key)?,
        &chain,
        a.days,
    )?;
    common::fsutil::write_atomic(&a.out, ".sign-csr.tmp", pem.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("issued {} (valid {} days)", a.out.display(), a.days);
    Ok(())
}

fn check_cmd(a: CheckArgs) -> anyhow::Result<()> {
    use crate::devid::check::{run as check, CheckRequest};
    let server_hcl = server_hcl(&a);
    let (devid_password, hierarchies) = a.passwords.read()?;
    let device = match a.tpm_device {
        Some(d) => d,
        None => crate::devid::agent::autodetect(Path::new("/dev"))?,
    };
    let req = CheckRequest {
        device,
        devid_cert: a.devid_cert,
        devid_priv: a.devid_priv,
        devid_pub: a.devid_pub,
        devid_password,
        hierarchies,
        server_hcl,
        trust_domain: a.trust_domain,
        clock: common::clock::Clock::system(),
    };
    let (id, attested) = check(&req, &mut std::io::stdout())?;
    println!("agent ID   {id}");
    for s in &attested.selectors {
        println!("selector   tpm_devid:{s}");
    }
    Ok(())
}

/// The server plugin's `plugin_data` the check's flags describe.
fn server_hcl(a: &CheckArgs) -> String {
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let path = |p: &Path| quoted(&p.display().to_string());
    let mut hcl = format!("devid_ca_path = {}\n", path(&a.devid_ca));
    for (key, value) in [
        ("endorsement_ca_path", a.endorsement_ca.as_deref().map(path)),
        ("endorsement_hashes_path", a.endorsement_hashes.as_deref().map(path)),
        ("ek_policy", a.ek_policy.as_deref().map(quoted)),
        ("devid_crl_path", a.devid_crl.as_deref().map(path)),
        ("pcr_selection", a.pcr_selection.as_deref().map(quoted)),
        ("pcr_policy", a.pcr_policy.as_deref().map(path)),
        ("require_pcr_policy", a.require_pcr_policy.then(|| "true".to_owned())),
    ] {
        if let Some(v) = value {
            hcl.push_str(&format!("{key} = {v}\n"));
        }
    }
    hcl
}

fn enroll_cmd(a: EnrollArgs) -> anyhow::Result<()> {
    use crate::devid::enroll::{enroll, EnrollRequestArgs, Outcome};
    let device = device_or_autodetect(a.tpm_device)?;
    let token = match &a.token_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?.trim().to_owned())
        }
        None => None,
    };
    let (devid_password, hierarchies) = a.passwords.read()?;
    let req = EnrollRequestArgs {
        url: a.url,
        ca_cert: a.ca_cert,
        tls_ca: a.tls_ca,
        token,
        out_dir: a.out_dir,
        device,
        key_type: a.key_type,
        devid_password,
        hierarchies,
        renew_before: a.renew_before.map(|d| d.0),
        timeout: std::time::Duration::from_secs(30),
        now: common::clock::unix_now(),
    };
    let outcome = enroll(&req)?;
    match outcome {
        Outcome::Enrolled(ref issued) | Outcome::Renewed(ref issued) => {
            let how = if matches!(outcome, Outcome::Renewed(_)) { "renewed" } else { "enrolled" };
            let e = &issued.enrolled;
            eprintln!(
                "{how}: DevID certificate for {} (serial {}, valid until {}) written to {}; {} ms in TPM commands",
                e.name,
                e.serial,
                e.not_after,
                req.out_dir.join(crate::devid::enroll::CERT_FILE).display(),
                issued.tpm_time.as_millis()
            );
        }
        Outcome::Kept { not_after } => {
            let left = not_after.saturating_sub(req.now) / 86_400;
            eprintln!("the DevID held is kept: its certificate is valid for {left} more days (until {not_after})");
        }
    }
    Ok(())
}

fn ek_hash_cmd(a: EkHashArgs) -> anyhow::Result<()> {
    let device = device_or_autodetect(a.tpm_device)?;
    let name = match a.name {
        Some(n) => n,
        None => common::config::hostname().context("--name not given and no host name")?,
    };
    if !crypto::devid::ek::is_node_name(&name) {
        anyhow::bail!("name {name:?}: 1 to {} letters, digits, '.', '-', '_'", crypto::devid::ek::MAX_NAME);
    }
    let hierarchies = tpm::attest::Hierarchies {
        endorsement: password("--endorsement-password-file", a.endorsement_password_file.as_deref())?,
        ..Default::default()
    };
    println!("{}", crate::devid::enroll::ek_hash_line(&device, &hierarchies, &name)?);
    Ok(())
}

/// Runs the subcommand the command line names.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    common::logging::quiet_tss_logging();
    common::logging::init_with(cli.log_format);
    match cli.command {
        Command::Provision(a) => provision_cmd(a),
        Command::SignCsr(a) => sign_csr_cmd(a),
        Command::Check(a) => check_cmd(a),
        Command::Enroll(a) => enroll_cmd(a),
        Command::EkHash(a) => ek_hash_cmd(a),
    }
}
