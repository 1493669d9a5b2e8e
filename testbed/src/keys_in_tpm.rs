//! "Keys in the TPM" (`make testbed`, and `real_spire_keys_in_the_tpm`): the real spire-server with KeyManager
//! "tpm" (its X509 CA and JWT keys in its swtpm) and a join-token spire-agent with KeyManager "tpm" (its SVID key
//! in its own swtpm): the agent's SVID key and the server's authorities are keys of those TPMs, found in no file;
//! a workload gets an SVID; the agent and the server restart on their keys; the CA rotates to new TPM keys.

use std::path::Path;

use anyhow::{ensure, Context};

use crate::real_spire::{fetch_verified, TRUST_DOMAIN};
use crate::single::Report;
use crate::spire::{AgentOptions, Attestor, ServerOptions, SpireAgent, SpireServer};
use crate::swtpm::Swtpm;

/// How long a SPIRE process may take for one step.
const STEP: std::time::Duration = std::time::Duration::from_secs(90);

/// A KeyManager "tpm" block for `bin`, its keys in `dir`, on `tpm`.
pub fn key_manager(bin: &str, dir: &Path, tpm: &Swtpm) -> anyhow::Result<String> {
    key_manager_at(&crate::process::bin_path(bin)?, dir, tpm)
}

/// [`key_manager`] for the plugin executable at `path`.
pub fn key_manager_at(path: &Path, dir: &Path, tpm: &Swtpm) -> anyhow::Result<String> {
    let data = format!("directory = \"{}\"\ntpm_device_path = \"{}\"", dir.display(), tpm.device());
    crate::spire::external_plugin_at("KeyManager", "tpm", path, &data)
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
    let jwt_key = stored.iter().find(|(id, _)| id == "JWT-Signer-A").context("no JWT-Signer-A key")?;
    ensure!(
        jwt_points(&server.cli(&["bundle", "show", "-format", "spiffe"])?)?.contains(&ec_point(&jwt_key.1)?),
        "the bundle's JWT authority is not the TPM's JWT-Signer-A key"
    );
    report(&format!(
        "  the server's X509 CA key (x509-CA-A) and JWT key (JWT-Signer-A) were made in its TPM; the bundle's X509 and JWT authorities are those TPM keys: {} key(s) stored, only as TPM-wrapped blobs",
        stored.len()
    ));

    let token = server.join_token("keys-node")?;
    let opts = AgentOptions {
        key_manager: Some(key_manager("spire-agent-keymanager-tpm", &agent_keys, &agent_tpm)?),
        ..server.agent_options(Attestor::JoinToken(token.clone()))?
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
    devid_rotation_and_clear(report)
}

/// tpm_devid through our plugins with the agent's key in the TPM that holds the DevID; SVID rotation makes new
/// TPM keys and leaves nothing loaded; a TPM cleared under the agent's keys, while it runs and while it is down, is
/// named, and the agent, which can attest again, comes back with a new key.
fn devid_rotation_and_clear(report: Report<'_>) -> anyhow::Result<()> {
    use crate::devid::{DevIdLab, LabOptions};
    use crate::real_spire::{our_agent_devid, our_server_devid};
    report("tpm_devid with KeyManager \"tpm\": one swtpm holds the DevID and the agent's key; agent_ttl 1m, so the agent rotates within a minute.");
    let lab = DevIdLab::new(LabOptions::default())?;
    let keys = tempfile::tempdir()?;
    let mut server = SpireServer::start(&ServerOptions {
        agent_ttl: Some("1m".into()),
        ..ServerOptions::new(TRUST_DOMAIN, vec![our_server_devid(&lab)?])
    })?;
    let shared = keys.path().join("shared");
    let mut opts = AgentOptions {
        key_manager: Some(key_manager("spire-agent-keymanager-tpm", &shared, &lab.tpm)?),
        ..server.agent_options(Attestor::Plugin(our_agent_devid(&lab)?))?
    };
    let mut agent = SpireAgent::start(&opts)?;
    agent.wait_healthy(STEP)?;
    let first = agent_svid_spki(agent.dir())?;
    ensure!(stored_keys(&shared)?.iter().any(|(_, k)| *k == first), "the SVID key is not in the shared TPM's store");
    report("  attested with tpm_devid; the agent's SVID key and the DevID live in the same TPM");
    // tpm_devid can attest again, so SPIRE rotates the agent's SVID by a full re-attestation.
    agent.wait_log("Successfully reattested node", 1, STEP)?;
    let rotated = agent_svid_spki(agent.dir())?;
    let stored = stored_keys(&shared)?;
    ensure!(rotated != first, "the rotated SVID has the old key");
    ensure!(stored.iter().any(|(_, k)| *k == rotated) && stored.len() == 2, "{stored:?}");
    let leftovers = lab.tpm.tpm2("tpm2_getcap", &["handles-transient"], lab.dir())?
        + &lab.tpm.tpm2("tpm2_getcap", &["handles-loaded-session"], lab.dir())?;
    ensure!(leftovers.trim().is_empty(), "objects or sessions left in the TPM: {leftovers}");
    report("  `Successfully reattested node` (SPIRE's rotation for an attestor that can attest again): a new TPM key in the other slot (agent-svid-A/B), nothing left loaded in the TPM");
    ensure!(agent.stop(), "spire-agent did not stop cleanly");

    ensure!(server.stop(), "spire-server did not stop cleanly");

    cleared_under_the_running_agent(&lab, &opts.attestor, keys.path(), report)?;

    // The agent's keys on a TPM of their own (SPIRE's default agent_ttl: no rotation meanwhile), which is then
    // cleared while the agent is down, as a TPM reset by firmware or a replaced board would be.
    let mut server = SpireServer::start(&ServerOptions::new(TRUST_DOMAIN, vec![our_server_devid(&lab)?]))?;
    let key_tpm = Swtpm::start()?;
    let own = keys.path().join("own");
    opts = AgentOptions {
        key_manager: Some(key_manager("spire-agent-keymanager-tpm", &own, &key_tpm)?),
        ..server.agent_options(opts.attestor)?
    };
    let mut agent = SpireAgent::start(&opts)?;
    agent.wait_healthy(STEP)?;
    let before = agent_svid_spki(agent.dir())?;
    ensure!(agent.stop(), "spire-agent did not stop cleanly");
    key_tpm.tpm2("tpm2_clear", &["-c", "p"], keys.path())?;
    agent.restart(&opts)?;
    agent.wait_log("cleared or replaced", 1, STEP)?;
    agent.wait_healthy(STEP)?;
    let after = agent_svid_spki(agent.dir())?;
    ensure!(after != before, "the agent came back with its dead key");
    ensure!(stored_keys(&own)?.iter().any(|(_, k)| *k == after), "the new SVID key is not in the TPM's store");
    report("  the agent's key TPM cleared while it was down: at start the plugin names it (`this TPM cannot load the key: it was cleared or replaced since the key was made, ...; the key is not offered`); SPIRE, finding no key, makes a new one in the TPM and attests again with its DevID: back, with a new key");
    agent.stop();
    ensure!(server.stop(), "spire-server did not stop cleanly");
    Ok(())
}

/// The agent's keys on a TPM of their own, cleared under the running agent. The server keeps its CA in `disk`, so
/// that its restart only drops the agent's connection: the agent must sign a new TLS handshake with its dead key,
/// and says why it cannot. At its next rotation (agent_ttl 1m), SPIRE makes a new key in the cleared TPM and
/// attests again with the DevID (in another TPM): back, with no restart of the agent.
fn cleared_under_the_running_agent(
    lab: &crate::devid::DevIdLab,
    attestor: &Attestor,
    dir: &Path,
    report: Report<'_>,
) -> anyhow::Result<()> {
    let mut server = SpireServer::start(&ServerOptions {
        agent_ttl: Some("1m".into()),
        key_manager: Some(crate::spire::builtin_plugin(
            "KeyManager",
            "disk",
            &format!("keys_path = \"{}\"", dir.join("server-keys.json").display()),
        )),
        ..ServerOptions::new(TRUST_DOMAIN, vec![crate::real_spire::our_server_devid(lab)?])
    })?;
    let key_tpm = Swtpm::start()?;
    let store = dir.join("live");
    let opts = AgentOptions {
        key_manager: Some(key_manager("spire-agent-keymanager-tpm", &store, &key_tpm)?),
        ..server.agent_options(attestor.clone())?
    };
    let mut agent = SpireAgent::start(&opts)?;
    agent.wait_healthy(STEP)?;
    let before = agent_svid_spki(agent.dir())?;
    key_tpm.tpm2("tpm2_clear", &["-c", "p"], dir)?;
    server.restart()?;
    agent.wait_log("the TPM was cleared or replaced since the key was made", 1, STEP)?;
    ensure!(
        agent.log().contains("tls: failed to sign handshake"),
        "the agent did not fail on its handshake's signature"
    );
    crate::wait::wait_for("the agent's new SVID key after the clear", STEP, || {
        Ok(agent_svid_spki(agent.dir()).is_ok_and(|k| k != before))
    })?;
    agent.wait_healthy(STEP)?;
    ensure!(agent.log().contains("Successfully reattested node"), "the new key did not come by re-attestation");
    let after = agent_svid_spki(agent.dir())?;
    ensure!(stored_keys(&store)?.iter().any(|(_, k)| *k == after), "the new SVID key is not in the TPM's store");
    let leftovers = key_tpm.tpm2("tpm2_getcap", &["handles-transient"], dir)?
        + &key_tpm.tpm2("tpm2_getcap", &["handles-loaded-session"], dir)?;
    ensure!(leftovers.trim().is_empty(), "objects or sessions left in the TPM: {leftovers}");
    report("  the agent's key TPM cleared under the running agent: its next handshake fails, naming the cause (`tls: failed to sign handshake: ... the TPM was cleared or replaced since the key was made`); at its rotation SPIRE makes a new key in the TPM and attests again with its DevID: back, with no restart");
    ensure!(agent.stop(), "spire-agent did not stop cleanly");
    ensure!(server.stop(), "spire-server did not stop cleanly");
    Ok(())
}

/// The uncompressed EC point (x || y) of a P-256 SubjectPublicKeyInfo: its last 64 bytes.
fn ec_point(spki: &[u8]) -> anyhow::Result<Vec<u8>> {
    ensure!(spki.len() >= 65 && spki[spki.len() - 65] == 0x04, "not an uncompressed P-256 key");
    Ok(spki[spki.len() - 64..].to_vec())
}

/// The EC points (x || y) of the JWT authorities in a SPIFFE bundle (JWKS, `use` = `jwt-svid`).
fn jwt_points(jwks: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let v: serde_json::Value = serde_json::from_str(jwks)?;
    let keys = v["keys"].as_array().context("no keys in the SPIFFE bundle")?;
    keys.iter()
        .filter(|k| k["use"] == "jwt-svid" && k["kty"] == "EC")
        .map(|k| {
            let coord =
                |c: &str| -> anyhow::Result<Vec<u8>> { Ok(b64.decode(k[c].as_str().context("no coordinate")?)?) };
            Ok([coord("x")?, coord("y")?].concat())
        })
        .collect()
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
