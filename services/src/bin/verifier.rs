//! `spire-server-attestor-tpm-verifier CONFIG -l` serves verified bundles to the SPIRE agent;
//! `spire-server-attestor-tpm-verifier CONFIG KEYSET [URL]` prints one verified bundle and exits;
//! `spire-server-attestor-tpm-verifier CONFIG KEYSET --keys` prints the keys the node trusts for it.

use std::path::PathBuf;

use clap::Parser;
use common::logging::{self, LogFormat};
use services::server::http::shutdown_signal;
use services::server::uds;
use services::verifier::{self, VerifierConfig};
use services::ConfigFile;

/// Fetches the signed trust bundle, verifies every signature against the configured keys and serves it to
/// the SPIRE agent on a unix socket (-l); or verifies one keyset's token once and prints the bundle.
#[derive(Parser)]
#[command(name = "spire-server-attestor-tpm-verifier", version)]
struct Cli {
    /// The YAML config (the upstream keys keep their meaning).
    config: PathBuf,
    /// Serve every keyset on the socket until stopped.
    #[arg(short = 'l', long = "listen", conflicts_with_all = ["keyset", "url"])]
    listen: bool,
    /// Verify this keyset once and print its bundle (PEM).
    #[arg(required_unless_present = "listen")]
    keyset: Option<String>,
    /// Fetch from this URL instead of the keyset's sources.
    url: Option<String>,
    /// Print the policy KEYSET trusts now (its keys, version, and where they came from) and exit.
    #[arg(long, requires = "keyset", conflicts_with = "url")]
    keys: bool,
    /// Log lines as text (default) or json; overrides the config's `log-format`.
    #[arg(long, value_name = "text|json", global = true)]
    log_format: Option<LogFormat>,
}

fn main() {
    let cli = Cli::parse();
    common::report::exit(run(cli));
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = VerifierConfig::load(&cli.config)?;
    logging::init_with(cli.log_format.unwrap_or(cfg.log_format));
    // Before any thread exists: taking systemd's socket clears LISTEN_FDS/LISTEN_PID from the environment.
    let inherited = if cli.listen { uds::inherited(&cfg.socket)? } else { None };
    // One thread: the cached path allocates almost nothing and the node's RSS stays small.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match cli.keyset {
        None => runtime.block_on(verifier::run_with(
            cfg,
            verifier::RunOptions { inherited, ..Default::default() },
            shutdown_signal(),
        ))?,
        Some(keyset) if cli.keys => print!("{}", verifier::describe_keys(&cfg, &keyset)?),
        Some(keyset) => print!(
            "{}",
            runtime.block_on(verifier::verify_once(
                &cfg,
                &keyset,
                cli.url.as_deref(),
                &common::clock::Clock::system()
            ))?
        ),
    }
    Ok(())
}
