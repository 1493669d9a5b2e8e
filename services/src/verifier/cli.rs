//! The verifier's command line: serve (`-l`), verify one keyset once, or print the keys a keyset trusts.

use std::path::PathBuf;

use clap::Parser;
use common::logging::{self, LogFormat};

use super::VerifierConfig;
use crate::server::http::shutdown_signal;
use crate::server::uds;
use crate::ConfigFile;

/// Fetches the signed trust bundle, verifies every signature against the configured keys and serves it to
/// the SPIRE agent on a unix socket (-l); or verifies one keyset's token once and prints the bundle.
#[derive(Debug, Parser)]
#[command(name = "spire-server-attestor-tpm-verifier", version)]
pub struct Cli {
    /// The YAML config (the upstream keys keep their meaning).
    pub config: PathBuf,
    /// Serve every keyset on the socket until stopped.
    #[arg(short = 'l', long = "listen", conflicts_with_all = ["keyset", "url"])]
    pub listen: bool,
    /// Verify this keyset once and print its bundle (PEM).
    #[arg(required_unless_present = "listen")]
    pub keyset: Option<String>,
    /// Fetch from this URL instead of the keyset's sources.
    pub url: Option<String>,
    /// Print the policy KEYSET trusts now (its keys, version, and where they came from) and exit.
    #[arg(long, requires = "keyset", conflicts_with = "url")]
    pub keys: bool,
    /// Log lines as text (default) or json; overrides the config's `log-format`.
    #[arg(long, value_name = "text|json", global = true)]
    pub log_format: Option<LogFormat>,
}

/// Runs the command line `cli`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = VerifierConfig::load(&cli.config)?;
    logging::init_with(cli.log_format.unwrap_or(cfg.log_format));
    // Before any thread exists: taking systemd's socket clears LISTEN_FDS/LISTEN_PID from the environment.
    let inherited = if cli.listen { uds::inherited(&cfg.socket)? } else { None };
    // One thread: the cached path allocates almost nothing and the node's RSS stays small.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.keyset {
        None => runtime.block_on(super::run_with(
            cfg,
            super::RunOptions { inherited, ..Default::default() },
            shutdown_signal(),
        ))?,
        Some(keyset) if cli.keys => print!("{}", super::describe_keys(&cfg, &keyset)?),
        Some(keyset) => print!(
            "{}",
            runtime.block_on(super::verify_once(&cfg, &keyset, cli.url.as_deref(), &common::clock::Clock::system()))?
        ),
    }
    Ok(())
}
