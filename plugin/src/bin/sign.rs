//! `spire-server-attestor-tpm-sign`: a SPIRE BundlePublisher plugin when SPIRE starts it (no arguments, magic
//! cookie `BundlePublisher=BundlePublisher`); otherwise the CLI `SOCKET [URL...] < bundle.pem`, and
//! `keys ...`, which builds a signed keyset update one signing host at a time (`plugin::cli`).

use std::sync::Arc;

use clap::Parser;
use plugin::pb::bundlepublisher::bundle_publisher_server::BundlePublisherServer;
use plugin::pb::config::config_server::ConfigServer;
use plugin::publisher::{Publisher, PublisherService, SERVICE_NAMES};

fn main() {
    if std::env::args_os().len() == 1 && plugin::goplugin::launched_as("BundlePublisher") {
        let publisher = Arc::new(Publisher::default());
        let config = publisher.config_service();
        let service = PublisherService(publisher);
        plugin::goplugin::serve_plugin("spire-server-attestor-tpm-sign", &SERVICE_NAMES, |router| {
            router.add_service(BundlePublisherServer::new(service)).add_service(ConfigServer::new(config))
        });
        return;
    }
    plugin::cli::main(plugin::cli::Cli::parse());
}
