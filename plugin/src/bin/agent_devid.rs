//! `spire-agent-nodeattestor-tpm-devid`: SPIRE agent NodeAttestor `tpm_devid`, loaded by SPIRE over go-plugin
//! (magic cookie `NodeAttestor=NodeAttestor`).

use std::sync::Arc;

use plugin::devid::agent::{AgentPlugin, AgentService, SERVICE_NAMES};
use plugin::pb::agent_nodeattestor::node_attestor_server::NodeAttestorServer;
use plugin::pb::config::config_server::ConfigServer;

/// SPIRE agent NodeAttestor plugin for tpm_devid: proves to the server that this node's DevID key lives in its TPM.
/// SPIRE starts it (agent.conf: NodeAttestor "tpm_devid" with plugin_cmd).
#[derive(clap::Parser)]
#[command(name = "spire-agent-nodeattestor-tpm-devid", version)]
struct Cli {}

fn main() {
    let plugin = Arc::new(AgentPlugin::default());
    let config = plugin.config_service();
    let service = AgentService(plugin);
    plugin::goplugin::plugin_main::<Cli>("NodeAttestor", &SERVICE_NAMES, |router| {
        router.add_service(NodeAttestorServer::new(service.clone())).add_service(ConfigServer::new(config))
    });
}
