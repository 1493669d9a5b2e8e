//! `spire-server-attestor-tpm-sign`: a SPIRE BundlePublisher plugin when SPIRE starts it (no arguments, magic
//! cookie `BundlePublisher=BundlePublisher`); otherwise the CLI `SOCKET [URL...] < bundle.pem`.

use std::sync::Arc;
use std::time::Duration;

use plugin::pb::bundlepublisher::bundle_publisher_server::BundlePublisherServer;
use plugin::pb::config::config_server::ConfigServer;
use plugin::publisher::{Publisher, PublisherService, SERVICE_NAMES};

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spire-server-attestor-tpm-sign: cannot start runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        if !plugin::goplugin::launched_as("BundlePublisher") {
            eprint!("{}", plugin::goplugin::NOT_A_HOST);
            eprintln!("(CLI mode: spire-server-attestor-tpm-sign SOCKET [URL...] < bundle.pem)");
            std::process::exit(1);
        }
        plugin::hclog::init();
        let publisher = Arc::new(Publisher::default());
        let config = publisher.config_service();
        let service = PublisherService(publisher);
        let result = runtime().block_on(plugin::goplugin::serve(
            &SERVICE_NAMES,
            |router| {
                router.add_service(BundlePublisherServer::new(service.clone())).add_service(ConfigServer::new(config))
            },
            plugin::goplugin::Broker::default(),
        ));
        if let Err(e) = result {
            tracing::error!(error = %e, "plugin stopped");
            std::process::exit(1);
        }
        return;
    }
    common::logging::init();
    let result = runtime().block_on(plugin::cli::run(&args, &mut std::io::stdin().lock(), Duration::from_secs(30)));
    match result {
        Ok(token) => println!("{token}"),
        Err(e @ plugin::cli::CliError::Usage) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("spire-server-attestor-tpm-sign: {e}");
            std::process::exit(1);
        }
    }
}
