//! `spire-agent-nodeattestor-tpm-devid`: SPIRE agent NodeAttestor `tpm_devid`, loaded by SPIRE over go-plugin
//! (magic cookie `NodeAttestor=NodeAttestor`).

use std::sync::Arc;

use plugin::devid::agent::{AgentPlugin, AgentService, SERVICE_NAMES};
use plugin::pb::agent_nodeattestor::node_attestor_server::NodeAttestorServer;
use plugin::pb::config::config_server::ConfigServer;

fn main() {
    if !plugin::goplugin::launched_as("NodeAttestor") {
        eprint!("{}", plugin::goplugin::NOT_A_HOST);
        std::process::exit(1);
    }
    plugin::hclog::init();
    let service = AgentService(Arc::new(AgentPlugin::default()));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spire-agent-nodeattestor-tpm-devid: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(plugin::goplugin::serve(
        &SERVICE_NAMES,
        |router| router.add_service(NodeAttestorServer::new(service.clone())).add_service(ConfigServer::new(service)),
        plugin::goplugin::Broker::default(),
    ));
    if let Err(e) = result {
        tracing::error!(error = %e, "plugin stopped");
        std::process::exit(1);
    }
}
