//! `spire-server-attestor-tpm-sign`: a SPIRE BundlePublisher plugin when SPIRE starts it (no arguments, magic
//! cookie `BundlePublisher=BundlePublisher`); otherwise the CLI `SOCKET [URL...] < bundle.pem`, and
//! `keys ...`, which builds a signed keyset update.

use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use plugin::pb::bundlepublisher::bundle_publisher_server::BundlePublisherServer;
use plugin::pb::config::config_server::ConfigServer;
use plugin::publisher::{Publisher, PublisherService, SERVICE_NAMES};

/// Has a trust bundle (PEM, on standard input) signed by signer-unix at SOCKET and by each co-signer URL in
/// order, publishes it, and prints the token. Started by SPIRE with no arguments, it is the BundlePublisher
/// plugin that does the same for every bundle SPIRE publishes.
#[derive(Parser)]
#[command(name = "spire-server-attestor-tpm-sign", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// signer-unix's socket (e.g. /var/run/spire/server-attestor-tpm/signer-unix.sock).
    socket: Option<PathBuf>,
    /// Co-signers (signer-http /sign URLs), in order.
    urls: Vec<String>,
    /// Bind the bundle to this SPIFFE trust domain (verifier keysets with `trust-domain` require it).
    #[arg(long, value_name = "TD")]
    trust_domain: Option<String>,
    /// Log lines as text (default) or json.
    #[arg(long, value_name = "text|json", default_value = "text")]
    log_format: common::logging::LogFormat,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Build a signed keyset update, so that nodes trust new keys without being touched.
    ///
    /// The keyset's new policy is signed by signer-unix at SOCKET and each co-signer URL (the policy it
    /// replaces), then by the signer-unix of each key it introduces. Checked
    /// against SOCKET's publish policy; written to --out (standard output without it) only when it verifies.
    Keys(KeysArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).args(["chain", "threshold"])))]
struct KeysArgs {
    /// The keyset's name, as the nodes' verifier config names it.
    #[arg(long)]
    keyset: String,
    /// The new version: above every version published before (1 for the first update).
    #[arg(long)]
    version: u64,
    /// The new chain's public key files, innermost signer first (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "a.pem[,b.pem...]", conflicts_with_all = ["threshold", "keys"])]
    chain: Vec<PathBuf>,
    /// The new chain's backup key file.
    #[arg(long, value_name = "c.pem", requires = "chain")]
    backup: Option<PathBuf>,
    /// A threshold policy instead: K of --keys must sign.
    #[arg(long, value_name = "K", requires = "keys")]
    threshold: Option<usize>,
    /// The threshold's key files (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "a.pem,b.pem,c.pem", requires = "threshold")]
    keys: Vec<PathBuf>,
    /// signer-unix socket of a key the update introduces; it signs the update too (repeat for each).
    #[arg(long = "new-key-socket", value_name = "SOCKET")]
    new_key_sockets: Vec<PathBuf>,
    /// Write the update here (atomically, mode 0644) instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// How long the update stays valid (Go duration; nodes off for longer need it re-signed).
    #[arg(long, value_name = "DURATION", default_value = "8760h")]
    valid_for: common::duration::GoDuration,
    /// signer-unix's socket: a signer of the policy the update replaces.
    socket: PathBuf,
    /// Co-signers of the policy it replaces (signer-http /sign URLs), in order.
    urls: Vec<String>,
    /// Log lines as text (default) or json.
    #[arg(long, value_name = "text|json", default_value = "text")]
    log_format: common::logging::LogFormat,
}

fn keys(args: KeysArgs) -> anyhow::Result<()> {
    common::logging::init_with(args.log_format);
    let policy = match args.threshold {
        Some(threshold) => plugin::keys::NewPolicy::Threshold { threshold, keys: args.keys },
        None => plugin::keys::NewPolicy::Chain { chain: args.chain, backup: args.backup },
    };
    let req = plugin::keys::KeysRequest {
        keyset: args.keyset,
        version: args.version,
        policy,
        valid_for: args.valid_for.0,
        new_key_sockets: args.new_key_sockets,
        socket: args.socket,
        urls: args.urls,
        timeout: Duration::from_secs(30),
    };
    let token = runtime()?.block_on(plugin::keys::build(&req))?;
    match &args.out {
        None => println!("{token}"),
        Some(out) => {
            common::fsutil::write_atomic(out, ".update.tmp", format!("{token}\n").as_bytes(), 0o644)
                .with_context(|| format!("writing {}", out.display()))?;
            tracing::info!(file = %out.display(), "keyset update written");
        }
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Plugin mode: the go-plugin host reads our stderr as hclog JSON, so a failure is a log record, then exit 1.
fn plugin_mode() -> ! {
    plugin::hclog::init();
    let publisher = Arc::new(Publisher::default());
    let config = publisher.config_service();
    let service = PublisherService(publisher);
    let result = runtime().map_err(anyhow::Error::from).and_then(|rt| {
        Ok(rt.block_on(plugin::goplugin::serve(
            &SERVICE_NAMES,
            |router| router.add_service(BundlePublisherServer::new(service)).add_service(ConfigServer::new(config)),
            plugin::goplugin::Broker::default(),
        ))?)
    });
    if let Err(e) = result {
        tracing::error!(error = %common::report::error_chain(e.as_ref()), "plugin stopped");
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn main() {
    if std::env::args_os().len() == 1 && plugin::goplugin::launched_as("BundlePublisher") {
        plugin_mode();
    }
    let cli = Cli::parse();
    if let Some(Command::Keys(args)) = cli.command {
        common::report::exit(keys(args));
    }
    let Some(socket) = cli.socket else {
        eprint!("{}", plugin::goplugin::NOT_A_HOST);
        eprintln!("\nIt is also a command: {}\n(--help says more)", Cli::command().render_usage());
        std::process::exit(2);
    };
    common::logging::init_with(cli.log_format);
    let signed = || -> anyhow::Result<()> {
        let mut stdin = std::io::stdin().lock();
        let token = runtime()?.block_on(plugin::cli::run(
            &socket,
            cli.trust_domain.as_deref(),
            &cli.urls,
            &mut stdin,
            Duration::from_secs(30),
        ))?;
        println!("{token}");
        Ok(())
    };
    common::report::exit(signed());
}
