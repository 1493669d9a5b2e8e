//! "A fleet enrolls itself" (`make testbed`, and `real_spire_fleet_enrolls_itself`): the enrollment CA with its
//! key in its own swtpm; three nodes enroll with the real `enroll` (one by a one-time token, one listed by its EK
//! hash, one a virtual TPM without an EK certificate, listed too); the real spire-server admits the two with EK
//! certificates with SPIRE's built-in `tpm_devid` (devid_ca_path = the CA's chain), and all three with ours (the
//! CA's CRL, and its inventory for the EK without a certificate); a revoked node that must attest again is
//! refused.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use crate::devid_ca::{agent_hcl, ek_hash_line, held_leaf, CaOptions, CaSite};
use crate::real_spire::TRUST_DOMAIN;
use crate::single::Report;
use crate::spire::{builtin_plugin, external_plugin, Attestor, ServerOptions, SpireAgent, SpireServer};
use crate::swtpm::Swtpm;

/// How long a SPIRE process may take for one step.
const STEP: std::time::Duration = std::time::Duration::from_secs(90);

/// One node of the fleet.
struct Node {
    name: &'static str,
    tpm: Swtpm,
    out: PathBuf,
}

impl Node {
    fn agent_id(&self) -> anyhow::Result<String> {
        Ok(format!("spiffe://{TRUST_DOMAIN}/spire/agent/tpm_devid/{}", held_leaf(&self.out)?.sha1_hex()))
    }

    /// Our agent plugin on this node's TPM.
    fn our_agent(&self) -> anyhow::Result<String> {
        external_plugin(
            "NodeAttestor",
            "tpm_devid",
            "spire-agent-nodeattestor-tpm-devid",
            &agent_hcl(&self.tpm, &self.out),
        )
    }

    /// SPIRE's built-in agent plugin, on the swtpm's unix socket `socket`.
    fn spire_agent(&self, socket: &Path) -> String {
        let data = format!(
            "tpm_device_path = \"{}\"\ndevid_cert_path = \"{}\"\ndevid_priv_path = \"{}\"\ndevid_pub_path = \"{}\"",
            socket.display(),
            self.out.join("devid.crt.pem").display(),
            self.out.join("devid.priv.blob").display(),
            self.out.join("devid.pub.blob").display()
        );
        builtin_plugin("NodeAttestor", "tpm_devid", &data)
    }
}

/// A spire-server with `plugin`.
fn server(plugin: String) -> anyhow::Result<SpireServer> {
    SpireServer::start(&ServerOptions::new(TRUST_DOMAIN, vec![plugin]))
}

/// A fresh spire-agent (its own data_dir: it attests from scratch) with `attestor`.
fn agent(server: &SpireServer, attestor: String) -> anyhow::Result<SpireAgent> {
    SpireAgent::start(&server.agent_options(Attestor::Plugin(attestor))?)
}

/// Attests `node` with `attestor` to `server` and checks what `agent show` lists: tpm_devid, the approved name.
fn admitted(server: &mut SpireServer, node: &Node, attestor: String, seen: usize) -> anyhow::Result<()> {
    let mut a = agent(server, attestor)?;
    a.wait_healthy(STEP)?;
    server.wait_log("Agent attestation request completed", seen, STEP)?;
    let (kind, selectors) = server.agent_show(&node.agent_id()?)?;
    ensure!(kind == "tpm_devid", "{}: attestation type {kind:?}", node.name);
    let cn = format!("tpm_devid:subject:cn:{}", node.name);
    ensure!(selectors.contains(&cn), "{}: no {cn} in {selectors:?}", node.name);
    ensure!(a.stop(), "spire-agent of {} did not stop cleanly", node.name);
    Ok(())
}

/// The scenario.
pub fn run(report: Report<'_>) -> anyhow::Result<()> {
    report("(h) Three nodes: n1 and n2 on swtpm manufactured with EK certificates, n3 a virtual TPM without one.");
    let nodes_dir = tempfile::tempdir()?;
    let node = |name, tpm| Node { name, tpm, out: nodes_dir.path().join(name) };
    let (n1, mut n2, n3) =
        (node("n1", Swtpm::start_with_ek()?), node("n2", Swtpm::start_with_ek()?), node("n3", Swtpm::start()?));
    ensure!(n3.tpm.ek_ca().is_none(), "n3 must have no EK certificate");
    let (ek1, ek2) = (n1.tpm.ek_ca().context("n1's EK CA")?, n2.tpm.ek_ca().context("n2's EK CA")?);
    let inventory = format!("{}\n{}\n", ek_hash_line(&n2.tpm, "n2")?, ek_hash_line(&n3.tpm, "n3")?);
    let ca = CaSite::start(&CaOptions {
        endorsement_cas: vec![ek1.to_owned(), ek2.to_owned()],
        inventory: Some(inventory),
        ..CaOptions::default()
    })?;
    report("The enrollment CA: its key made in its own TPM, a self-signed CA certificate; the inventory lists n2 and n3 by EK hash (`devid ek-hash`), n1 gets a one-time token.");
    std::fs::write(nodes_dir.path().join("token"), ca.token("n1", "1h")?)?;
    let token = nodes_dir.path().join("token").display().to_string();
    for (n, extra) in [
        (&n1, vec!["--key-type", "rsa2048", "--token-file", token.as_str()]),
        (&n2, vec!["--key-type", "ecc-p256"]),
        (&n3, vec!["--key-type", "ecc-p256"]),
    ] {
        let (code, said) = ca.enroll(&n.tpm, &n.out, &extra)?;
        ensure!(code == 0, "{} enroll: {said}", n.name);
        report(&format!("  {}: `devid enroll` -> {}", n.name, said.trim()));
    }

    let manufacturers = nodes_dir.path().join("manufacturers.pem");
    std::fs::write(&manufacturers, [std::fs::read_to_string(ek1)?, std::fs::read_to_string(ek2)?].concat())?;
    let spire_hcl =
        format!("devid_ca_path = \"{}\"\nendorsement_ca_path = \"{}\"", ca.ca_cert.display(), manufacturers.display());
    report("SPIRE's built-in server tpm_devid, devid_ca_path = the CA's chain: n1 with our agent plugin, n2 with SPIRE's own.");
    let mut builtin = server(builtin_plugin("NodeAttestor", "tpm_devid", &spire_hcl))?;
    admitted(&mut builtin, &n1, n1.our_agent()?, 1)?;
    report(&format!("  n1 admitted: {} with tpm_devid:subject:cn:n1", n1.agent_id()?));
    let socket = n2.tpm.restart_unixio()?;
    admitted(&mut builtin, &n2, n2.spire_agent(&socket), 2)?;
    report(&format!("  n2 admitted: {} with tpm_devid:subject:cn:n2", n2.agent_id()?));
    ensure!(builtin.stop(), "spire-server did not stop cleanly");

    report("Our server plugin with devid_crl_path = the CA's CRL and endorsement_hashes_path = the CA's inventory: n2 with SPIRE's agent plugin, n1 and n3 with ours.");
    let ours_hcl =
        format!("{}endorsement_hashes_path = \"{}\"\n", ca.server_hcl(&manufacturers, true), ca.inventory.display());
    let plugin = external_plugin("NodeAttestor", "tpm_devid", "spire-server-nodeattestor-tpm-devid", &ours_hcl)?;
    let mut ours = server(plugin)?;
    admitted(&mut ours, &n2, n2.spire_agent(&socket), 1)?;
    n2.tpm.restart()?;
    admitted(&mut ours, &n1, n1.our_agent()?, 2)?;
    report("  n1 and n2 admitted, with the same agent IDs and subject:cn as under SPIRE's plugin");
    admitted(&mut ours, &n3, n3.our_agent()?, 3)?;
    let (_, selectors) = ours.agent_show(&n3.agent_id()?)?;
    ensure!(selectors.contains(&"tpm_devid:ek:name:n3".to_owned()), "n3: {selectors:?}");
    report(&format!(
        "  n3 (no EK certificate: its EK is known by hash) admitted: {} with tpm_devid:subject:cn:n3, tpm_devid:ek:name:n3",
        n3.agent_id()?
    ));

    ensure!(ours.stop(), "spire-server did not stop cleanly");
    // The same virtual TPM where the server does not know its EK: SPIRE's trust alone, or another EK listed.
    let other = Swtpm::start()?;
    let others = nodes_dir.path().join("other-hashes");
    std::fs::write(&others, format!("{}\n", ek_hash_line(&other, "other")?))?;
    for (case, extra, says) in [
        ("endorsement_ca_path alone (SPIRE's rule)", String::new(), "missing endorsement certificate"),
        (
            "another EK's hash listed",
            format!("endorsement_hashes_path = \"{}\"\n", others.display()),
            "nor in the inventory",
        ),
    ] {
        let hcl = format!("{}{extra}", ca.server_hcl(&manufacturers, true));
        let plugin = external_plugin("NodeAttestor", "tpm_devid", "spire-server-nodeattestor-tpm-devid", &hcl)?;
        let mut server = server(plugin)?;
        let mut a = agent(&server, n3.our_agent()?)?;
        a.wait_log("Failed to retrieve attestation result", 1, STEP)?;
        server.wait_log(says, 1, STEP)?;
        ensure!(server.agent_ids()?.is_empty(), "n3 admitted with {case}");
        report(&format!("  n3 refused by a server with {case}: `{says}`"));
        a.stop();
        ensure!(server.stop(), "spire-server did not stop cleanly");
    }
    let mut ours =
        server(external_plugin("NodeAttestor", "tpm_devid", "spire-server-nodeattestor-tpm-devid", &ours_hcl)?)?;
    admitted(&mut ours, &n1, n1.our_agent()?, 1)?;

    let serial = held_leaf(&n1.out)?.serial().to_vec();
    let hash = ek_hash_line(&n1.tpm, "n1")?;
    let hash = hash.split(' ').next().context("ek-hash line")?;
    let (code, _, said) = ca.admin(&["revoke", "--ek-hash", hash])?;
    ensure!(code == 0, "revoke: {said}");
    ca.wait_for_crl_listing(&serial)?;
    report(&format!("n1 is stolen: `devid-ca revoke --ek-hash {hash}`; the CRL lists its certificate within seconds."));
    let mut again = agent(&ours, n1.our_agent()?)?;
    again.wait_log("Failed to retrieve attestation result", 1, STEP)?;
    ours.wait_log("is revoked", 1, STEP)?;
    ensure!(!again.healthy(), "the revoked node's agent is healthy");
    report("  n1's agent attesting again (a fresh data_dir: it must re-bootstrap) is refused: `the DevID certificate (serial ...) is revoked`");
    let (code, said) = ca.enroll(&n1.tpm, &nodes_dir.path().join("n1-again"), &["--token-file", &token])?;
    ensure!(code != 0, "n1 enrolled again after its EK was revoked: {said}");
    report(&format!("  and it cannot enroll again: {}", said.trim().lines().last().unwrap_or_default()));
    // spire-agent exits by itself when attestation fails; stopping it only reaps it.
    again.stop();
    ensure!(ours.stop(), "spire-server did not stop cleanly");
    drop(n1);
    Ok(())
}
