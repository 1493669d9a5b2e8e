//! `spire-server-nodeattestor-tpm-devid`: SPIRE server NodeAttestor `tpm_devid`, loaded by SPIRE over go-plugin
//! (magic cookie `NodeAttestor=NodeAttestor`).

use std::sync::Arc;

use plugin::devid::server::{ServerPlugin, ServerService, SERVICE_NAMES};
use plugin::pb::config::config_server::ConfigServer;
use plugin::pb::server_nodeattestor::node_attestor_server::NodeAttestorServer;

/// SPIRE server NodeAttestor plugin for tpm_devid: verifies that an agent's DevID key lives in a genuine TPM. SPIRE
/// starts it (server.conf: NodeAttestor "tpm_devid" with plugin_cmd).
#[derive(clap::Parser)]
#[command(name = "spire-server-nodeattestor-tpm-devid", version)]
struct Cli {}

fn main() {
    let plugin = Arc::new(ServerPlugin::default());
    let config = plugin.config_service();
    let service = ServerService(plugin);
    plugin::goplugin::plugin_main::<Cli>("NodeAttestor", &SERVICE_NAMES, |router| {
        router.add_service(NodeAttestorServer::new(service.clone())).add_service(ConfigServer::new(config))
    });
}
