//! `spire-server-attestor-tpm-sign`: a SPIRE BundlePublisher plugin when SPIRE starts it (no arguments, magic
//! cookie `BundlePublisher=BundlePublisher`); otherwise the CLI `SOCKET [URL...] < bundle.pem`.

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
#[command(name = "spire-server-attestor-tpm-sign", version)]
struct Cli {
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

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spire-server-attestor-tpm-sign: cannot start runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn plugin_mode() -> ! {
    plugin::hclog::init();
    let publisher = Arc::new(Publisher::default());
    let config = publisher.config_service();
    let service = PublisherService(publisher);
    let result = runtime().block_on(plugin::goplugin::serve(
        &SERVICE_NAMES,
        |router| router.add_service(BundlePublisherServer::new(service)).add_service(ConfigServer::new(config)),
        plugin::goplugin::Broker::default(),
    ));
    if let Err(e) = result {
        tracing::error!(error = %e, "plugin stopped");
        std::process::exit(1);
    }
    std::process::exit(0)
}

fn main() {
    if std::env::args_os().len() == 1 && plugin::goplugin::launched_as("BundlePublisher") {
        plugin_mode();
    }
    let cli = Cli::parse();
    let Some(socket) = cli.socket else {
        eprint!("{}", plugin::goplugin::NOT_A_HOST);
        eprintln!("\nIt is also a command: {}\n(--help says more)", Cli::command().render_usage());
        std::process::exit(2);
    };
    common::logging::init_with(cli.log_format);
    let mut stdin = std::io::stdin().lock();
    match runtime().block_on(plugin::cli::run(
        &socket,
        cli.trust_domain.as_deref(),
        &cli.urls,
        &mut stdin,
        Duration::from_secs(30),
    )) {
        Ok(token) => println!("{token}"),
        Err(e) => {
            eprintln!("error: {}", common::report::error_chain(&e));
            std::process::exit(1);
        }
    }
}
