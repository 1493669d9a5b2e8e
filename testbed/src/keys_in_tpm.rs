//! "Keys in the TPM" (`make testbed`, and `real_spire_keys_in_the_tpm`): the real spire-server with KeyManager
//! "tpm" (its X509 CA and JWT keys in its swtpm) and a join-token spire-agent with KeyManager "tpm" (its SVID key
//! in its own swtpm): the agent's SVID key and the server's authorities are keys of those TPMs, found in no file;
//! a workload gets an SVID; the agent and the server restart on their keys; the CA rotates to new TPM keys.

use std::path::Path;

use anyhow::{ensure, Context};

use crate::real_spire::{fetch_verified, TRUST_DOMAIN};
use crate::single::Report;
use crate::spire::{external_plugin, AgentOptions, Attestor, Bootstrap, ServerOptions, SpireAgent, SpireServer};
use crate::swtpm::Swtpm;

/// How long a SPIRE process may take for one step.
const STEP: std::time::Duration = std::time::Duration::from_secs(90);

/// A KeyManager "tpm" block for `bin`, its keys in `dir`, on `tpm`.
pub fn key_manager(bin: &str, dir: &Path, tpm: &Swtpm) -> anyhow::Result<String> {
    let data = format!("directory = \"{}\"\ntpm_device_path = \"{}\"", dir.display(), tpm.device());
    external_plugin("KeyManager", "tpm", bin, &data)
}

/// The public keys (DER SubjectPublicKeyInfo) a KeyManager holds, by key ID, read from its store.
pub fn stored_keys(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let store = plugin::keymanager::store::Store::open(dir)?;
    Ok(store.load()?.into_iter().map(|(id, s)| (id, s.key.spki_der)).collect())
}

/// Files under `dir` that hold a private key in a form software can use: PEM, PKCS#8, SEC1, or a JWK's `d`.
pub fn private_key_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            let der_private =
                [&[0x02u8, 0x01, 0x00, 0x30][..], &[0x02, 0x01, 0x01, 0x04, 0x20], &[0x02, 0x01, 0x01, 0x04, 0x30]]
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == *n));
            if text.contains("PRIVATE KEY") || text.contains("\"d\":") || text.contains("\"keys\"") || der_private {
                found.push(path.display().to_string());
            }
        }
    }
    Ok(found)
}

/// The SubjectPublicKeyInfo of each certificate in `pem`.
fn cert_spki(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(crypto::devid::chain::parse_pem_bundle(pem.as_bytes())?.iter().map(|c| c.spki_der()).collect())
}

/// The scenario.
pub fn run(report: Report<'_>) -> anyhow::Result<()> {
    report("(i) Keys in the TPM: spire-server with KeyManager \"tpm\" on its swtpm, a join-token spire-agent with KeyManager \"tpm\" on its own.");
    let (server_tpm, agent_tpm) = (Swtpm::start()?, Swtpm::start()?);
    let keys = tempfile::tempdir()?;
    let (server_keys, agent_keys) = (keys.path().join("server"), keys.path().join("agent"));
    let mut server = SpireServer::start(&ServerOptions {
        key_manager: Some(key_manager("spire-server-keymanager-tpm", &server_keys, &server_tpm)?),
        ..ServerOptions::new(TRUST_DOMAIN, vec![])
    })?;
    let stored = stored_keys(&server_keys)?;
    let authorities = cert_spki(&server.bundle_pem()?)?;
    let ca_key = stored.iter().find(|(id, _)| id == "x509-CA-A").context("no x509-CA-A key in the store")?;
    ensure!(authorities.contains(&ca_key.1), "the bundle's X509 authority is not the TPM's x509-CA-A key");
    ensure!(stored.iter().any(|(id, _)| id == "JWT-Signer-A"), "no JWT-Signer-A key: {stored:?}");
    report(&format!(
        "  the server's X509 CA key (x509-CA-A) and JWT key (JWT-Signer-A) were made in its TPM; the bundle's authority is the TPM key: {} key(s) stored, only as TPM-wrapped blobs",
        stored.len()
    ));

    let bundle = server.path("bootstrap.pem");
    std::fs::write(&bundle, server.bundle_pem()?)?;
    let token = server.join_token("keys-node")?;
    let opts = AgentOptions {
        trust_domain: TRUST_DOMAIN.into(),
        server_port: server.port(),
        bootstrap: Bootstrap::Path(bundle),
        attestor: Attestor::JoinToken(token.clone()),
        rebootstrap: None,
        key_manager: Some(key_manager("spire-agent-keymanager-tpm", &agent_keys, &agent_tpm)?),
    };
    let mut agent = SpireAgent::start(&opts)?;
    agent.wait_healthy(STEP)?;
    let agent_id = format!("spiffe://{TRUST_DOMAIN}/spire/agent/join_token/{token}");
    let svid = agent_svid_spki(agent.dir())?;
    let agent_stored = stored_keys(&agent_keys)?;
    ensure!(
        agent_stored.iter().any(|(_, spki)| *spki == svid),
        "the agent's SVID key is not a key of its TPM: {agent_stored:?}"
    );
    report(&format!(
        "  {agent_id} attested; its SVID's key is {} in the agent's TPM",
        agent_stored.iter().find(|(_, k)| *k == svid).map(|(id, _)| id.as_str()).unwrap_or("?")
    ));
    for dir in [agent.dir().join("data"), agent_keys.clone(), server.dir().join("data"), server_keys.clone()] {
        let found = private_key_files(&dir)?;
        ensure!(found.is_empty(), "private key material in {}: {found:?}", dir.display());
    }
    report("  no file of the agent's data_dir, the server's data_dir or either plugin's directory holds a private key (PEM, PKCS#8, SEC1, JWK)");
    let workload = server.register_workload(&format!("spiffe://{TRUST_DOMAIN}/keys-node"), "keys-node/workload")?;
    let got = fetch_verified(&mut agent, &server, &workload)?;
    report(&format!("  a workload got {} from the agent; its chain verifies against the bundle", got.id));

    ensure!(agent.stop(), "spire-agent did not stop cleanly");
    agent.restart(&opts)?;
    agent.wait_healthy(STEP)?;
    agent.wait_log("SVID loaded", 1, STEP)?;
    ensure!(agent_svid_spki(agent.dir())? == svid, "the agent's SVID key changed across its restart");
    report("  spire-agent restarted: `SVID loaded`, the same TPM key, no new attestation");

    server.restart()?;
    ensure!(cert_spki(&server.bundle_pem()?)?.contains(&ca_key.1), "the server's CA key changed across its restart");
    report("  spire-server restarted on its TPM keys: the same X509 authority");
    let prepared = server.local_authority("prepare", None)?;
    server.local_authority("activate", Some(&prepared))?;
    let after = stored_keys(&server_keys)?;
    let b = after.iter().find(|(id, _)| id == "x509-CA-B").context("no x509-CA-B after prepare")?;
    ensure!(cert_spki(&server.bundle_pem()?)?.contains(&b.1), "the prepared authority is not the TPM's x509-CA-B key");
    let got = fetch_verified(&mut agent, &server, &workload)?;
    report(&format!("  CA rotation (localauthority x509 prepare, activate): the new authority is the TPM's x509-CA-B key; {} still verifies", got.id));
    ensure!(agent.stop(), "spire-agent did not stop cleanly");
    ensure!(server.stop(), "spire-server did not stop cleanly");
    Ok(())
}

/// The SubjectPublicKeyInfo of the agent's SVID as its data_dir caches it.
fn agent_svid_spki(agent_dir: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let text = std::fs::read_to_string(agent_dir.join("data/agent-data.json")).context("agent-data.json")?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let svid =
        v["svid"].as_array().and_then(|a| a.first()).and_then(|c| c.as_str()).context("no svid in agent-data.json")?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(svid)?;
    // SPIRE caches the SVID as PEM (base64 of it in the JSON); DER would do too.
    let pem = match String::from_utf8(bytes.clone()) {
        Ok(text) if text.starts_with("-----") => text,
        _ => crypto::pem::encode("CERTIFICATE", &bytes),
    };
    cert_spki(&pem)?.into_iter().next().context("no certificate")
}
