//! `spire-agent-keymanager-tpm`: SPIRE agent KeyManager "tpm", loaded by SPIRE over go-plugin (magic cookie
//! `KeyManager=KeyManager`): keys made in the TPM, kept on disk only as TPM-wrapped blobs.

use plugin::keymanager::agent::{AgentKeyManager, SERVICE_NAMES};
use plugin::pb::agent_keymanager::key_manager_server::KeyManagerServer;
use plugin::pb::config::config_server::ConfigServer;

/// SPIRE agent KeyManager plugin whose private keys never leave the TPM. SPIRE starts it (agent.conf:
/// KeyManager "tpm" with plugin_cmd).
#[derive(clap::Parser)]
#[command(name = "spire-agent-keymanager-tpm", version)]
struct Cli {}

fn main() {
    let service = AgentKeyManager::default();
    let config = service.config_service();
    plugin::goplugin::plugin_main::<Cli>("KeyManager", &SERVICE_NAMES, |router| {
        router.add_service(KeyManagerServer::new(service.clone())).add_service(ConfigServer::new(config))
    });
}
