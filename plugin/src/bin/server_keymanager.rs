//! `spire-server-keymanager-tpm`: SPIRE server KeyManager "tpm", loaded by SPIRE over go-plugin (magic cookie
//! `KeyManager=KeyManager`): keys made in the TPM, kept on disk only as TPM-wrapped blobs.

use plugin::keymanager::server::{ServerKeyManager, SERVICE_NAMES};
use plugin::pb::config::config_server::ConfigServer;
use plugin::pb::server_keymanager::key_manager_server::KeyManagerServer;

/// SPIRE server KeyManager plugin whose private keys never leave the TPM. SPIRE starts it (server.conf:
/// KeyManager "tpm" with plugin_cmd).
#[derive(clap::Parser)]
#[command(name = "spire-server-keymanager-tpm", version)]
struct Cli {}

fn main() {
    let service = ServerKeyManager::default();
    let config = service.config_service();
    plugin::goplugin::plugin_main::<Cli>("KeyManager", &SERVICE_NAMES, |router| {
        router.add_service(KeyManagerServer::new(service.clone())).add_service(ConfigServer::new(config))
    });
}
