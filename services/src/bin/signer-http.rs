//! `spire-server-attestor-tpm-signer-http CONFIG`: the network co-signer.

use std::path::PathBuf;

use clap::Parser;
use common::logging::{self, LogFormat};
use services::server::http::shutdown_signal;
use services::signer_http::{self, SignerHttpConfig};
use services::ConfigFile;

/// Co-signs tokens already signed by an approved SPIRE server key, with this host's TPM (through the local
/// signer-unix), for the servers listed in `allowed-addrs`.
#[derive(Parser)]
#[command(name = "spire-server-attestor-tpm-signer-http", version)]
struct Cli {
    /// The YAML config (the upstream keys keep their meaning).
    config: PathBuf,
    /// Log lines as text (default) or json; overrides the config's `log-format`.
    #[arg(long, value_name = "text|json", global = true)]
    log_format: Option<LogFormat>,
}

fn main() {
    let cli = Cli::parse();
    common::report::exit(run(cli));
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = SignerHttpConfig::load(&cli.config)?;
    logging::init_with(cli.log_format.unwrap_or(cfg.log_format));
    // One async thread: verification is a few tens of microseconds and the TPM sign happens in signer-unix.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(signer_http::run(cfg, shutdown_signal()))?;
    Ok(())
}
