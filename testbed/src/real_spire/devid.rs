//! The real SPIRE with `tpm_devid`: SPIRE's plugins against ours in every pairing, the boot state through
//! quotes, and a forgery SPIRE's server accepts and ours refuses.

use super::*;

/// The agent ID SPIRE's `tpm_devid` gives a DevID: `.../spire/agent/tpm_devid/<sha1 of the leaf, hex>`.
pub fn devid_agent_id(lab: &DevIdLab) -> anyhow::Result<String> {
    agent_id_of(lab, &lab.path("devid/devid.crt.pem"))
}

fn agent_id_of(lab: &DevIdLab, cert: &Path) -> anyhow::Result<String> {
    let out = crate::pki::openssl(
        &["x509", "-noout", "-fingerprint", "-sha1", "-in", &cert.display().to_string()],
        lab.dir(),
    )?;
    let hex = out.trim().rsplit('=').next().unwrap_or_default().replace(':', "").to_ascii_lowercase();
    ensure!(hex.len() == 40, "no SHA-1 fingerprint in {out:?}");
    Ok(format!("spiffe://{TRUST_DOMAIN}/spire/agent/tpm_devid/{hex}"))
}

/// Our agent NodeAttestor as SPIRE loads it (the TPM over swtpm's TCP interface).
pub fn our_agent_devid(lab: &DevIdLab) -> anyhow::Result<String> {
    external_plugin("NodeAttestor", "tpm_devid", "spire-agent-nodeattestor-tpm-devid", &lab.agent_hcl())
}

/// Our server NodeAttestor as SPIRE loads it.
pub fn our_server_devid(lab: &DevIdLab) -> anyhow::Result<String> {
    external_plugin("NodeAttestor", "tpm_devid", "spire-server-nodeattestor-tpm-devid", &lab.server_hcl())
}

/// SPIRE's built-in agent `tpm_devid`, reaching the lab's TPM through the swtpm unix socket `tpm`.
fn spire_agent_devid(lab: &DevIdLab, tpm: &Path) -> String {
    let data = format!(
        "tpm_device_path = \"{}\"\ndevid_cert_path = \"{}\"\ndevid_priv_path = \"{}\"\ndevid_pub_path = \"{}\"",
        tpm.display(),
        lab.path("devid/devid.crt.pem").display(),
        lab.path("devid/devid.priv.blob").display(),
        lab.path("devid/devid.pub.blob").display()
    );
    crate::spire::builtin_plugin("NodeAttestor", "tpm_devid", &data)
}

/// One tpm_devid attestation through the real binaries: a server with `server_plugin`, an agent with
/// `agent_plugin` bootstrapping from `bundle show` in a file. Returns what `agent show` lists for `id`.
fn devid_attest(server_plugin: String, agent_plugin: String, id: &str) -> anyhow::Result<(String, Vec<String>)> {
    let mut server = SpireServer::start(&ServerOptions::new(TRUST_DOMAIN, vec![server_plugin]))?;
    let mut a = SpireAgent::start(&server.agent_options(Attestor::Plugin(agent_plugin))?)?;
    a.wait_healthy(STEP)?;
    server.wait_log("Agent attestation request completed", 1, STEP)?;
    let shown = server.agent_show(id)?;
    ensure!(a.stop(), "spire-agent did not stop cleanly");
    ensure!(server.stop(), "spire-server did not stop cleanly");
    Ok(shown)
}

/// (f) tpm_devid against SPIRE's own plugins, RSA and ECC: SPIRE's server with our agent; ours with ours;
/// SPIRE's agent (on the swtpm's unix socket) with our server. `agent show` must list the same agent and
/// selectors in all three.
pub fn devid(report: Report<'_>) -> anyhow::Result<()> {
    for key_type in ["rsa2048", "ecc-p256"] {
        report(&format!("(f) {key_type} DevID: provision + sign-csr on a swtpm manufactured with an EK chain."));
        let mut lab = DevIdLab::new(LabOptions { key_type, ..LabOptions::default() })?;
        let id = devid_agent_id(&lab)?;
        let spire_server = crate::spire::builtin_plugin("NodeAttestor", "tpm_devid", &lab.server_hcl());
        let reference = devid_attest(spire_server, our_agent_devid(&lab)?, &id)?;
        ensure!(reference.0 == "tpm_devid", "attestation type {:?}", reference.0);
        report(&format!("  our agent plugin -> SPIRE's built-in server tpm_devid: {id}"));
        for sel in &reference.1 {
            report(&format!("    {sel}"));
        }
        let ours = without_ek_selectors(devid_attest(our_server_devid(&lab)?, our_agent_devid(&lab)?, &id)?)?;
        ensure!(ours == reference, "our server plugin listed {ours:?}, SPIRE's {reference:?}");
        report("  our agent plugin -> our server plugin: the same agent ID and SPIRE's selectors, plus tpm_devid:ek:hash, ek:manufacturer, ek:model, ek:version");
        let socket = lab.tpm.restart_unixio()?;
        let theirs =
            without_ek_selectors(devid_attest(our_server_devid(&lab)?, spire_agent_devid(&lab, &socket), &id)?)?;
        ensure!(theirs == reference, "with SPIRE's agent our server listed {theirs:?}, SPIRE's {reference:?}");
        report("  SPIRE's built-in agent tpm_devid (tpm_device_path = the swtpm's unix socket) -> our server plugin: the same");
        lab.tpm.restart()?;
        if key_type == "rsa2048" {
            boot_state(&mut lab, &id, report)?;
            forgery(&lab, report)?;
        }
    }
    Ok(())
}

/// The boot state through the real binaries: our server plugin with `pcr_selection` quotes through our agent
/// plugin (`pcr:` selectors, and `boot:` with a policy); SPIRE's agent plugin ignores the request and attests
/// without them, and is refused under `require_pcr_policy`, which our agent passes.
fn boot_state(lab: &mut DevIdLab, id: &str, report: Report<'_>) -> anyhow::Result<()> {
    let pcr = |lab: &DevIdLab, i: u8| -> anyhow::Result<String> {
        let out = lab.tpm.tpm2("tpm2_pcrread", &[&format!("sha256:{i}")], lab.dir())?;
        let line = out.lines().find(|l| l.trim_start().starts_with(&format!("{i} :"))).context("tpm2_pcrread")?;
        Ok(line.rsplit("0x").next().unwrap_or_default().trim().to_ascii_lowercase())
    };
    let (pcr0, pcr7) = (pcr(lab, 0)?, pcr(lab, 7)?);
    std::fs::write(
        lab.path("pcr-policy.yaml"),
        format!("lab:\n  \"sha256:0\": \"{pcr0}\"\n  \"sha256:7\": \"{pcr7}\"\n"),
    )?;
    let server_hcl = lab.server_hcl();
    let ours_with = |extra: &str| {
        let data = format!("{server_hcl}pcr_selection = \"sha256:0,7\"\n{extra}");
        external_plugin("NodeAttestor", "tpm_devid", "spire-server-nodeattestor-tpm-devid", &data)
    };
    let strict = format!("pcr_policy = \"{}\"\nrequire_pcr_policy = true\n", lab.path("pcr-policy.yaml").display());
    let (_, selectors) = devid_attest(ours_with("")?, our_agent_devid(lab)?, id)?;
    ensure!(selectors.contains(&format!("tpm_devid:pcr:sha256:7:{pcr7}")), "{selectors:?}");
    report(&format!("  boot state: our server plugin with pcr_selection = \"sha256:0,7\" and our agent plugin: tpm_devid:pcr:sha256:7:{pcr7}, ..."));
    let (_, selectors) = devid_attest(ours_with(&strict)?, our_agent_devid(lab)?, id)?;
    ensure!(selectors.contains(&"tpm_devid:boot:lab".to_owned()), "{selectors:?}");
    report("    with pcr_policy and require_pcr_policy: tpm_devid:boot:lab");
    let socket = lab.tpm.restart_unixio()?;
    let (_, selectors) = devid_attest(ours_with("")?, spire_agent_devid(lab, &socket), id)?;
    ensure!(!selectors.iter().any(|s| s.starts_with("tpm_devid:pcr:")), "{selectors:?}");
    report("    SPIRE's agent plugin ignores the quote request and attests, without pcr: selectors");
    let mut server = SpireServer::start(&ServerOptions::new(TRUST_DOMAIN, vec![ours_with(&strict)?]))?;
    let mut a = SpireAgent::start(&server.agent_options(Attestor::Plugin(spire_agent_devid(lab, &socket)))?)?;
    a.wait_log("Failed to retrieve attestation result", 1, STEP)?;
    server.wait_log("no PCR quote in the challenge response", 1, STEP)?;
    ensure!(server.agent_ids()?.is_empty(), "our server admitted SPIRE's agent under require_pcr_policy");
    report("    and under require_pcr_policy our server refuses it: `no PCR quote in the challenge response ...`");
    a.stop();
    ensure!(server.stop(), "spire-server did not stop cleanly");
    lab.tpm.restart()?;
    Ok(())
}

/// What `agent show` lists, without the `tpm_devid:ek:*` selectors our server plugin adds to SPIRE's (after
/// checking that it added `ek:hash` and the three a verified EK certificate gives).
fn without_ek_selectors((kind, selectors): (String, Vec<String>)) -> anyhow::Result<(String, Vec<String>)> {
    let (ek, spires): (Vec<String>, Vec<String>) = selectors.into_iter().partition(|s| s.starts_with("tpm_devid:ek:"));
    for kind in ["hash", "manufacturer", "model", "version"] {
        ensure!(ek.iter().any(|s| s.starts_with(&format!("tpm_devid:ek:{kind}:"))), "no ek:{kind} selector in {ek:?}");
    }
    Ok((kind, spires))
}

/// A forgery SPIRE's server checks accept and ours refuse, carried by the real spire-agent: a DevID certificate
/// for a key in a file, with the residency proof made for a different key that lives in the TPM.
fn forgery(lab: &DevIdLab, report: Report<'_>) -> anyhow::Result<()> {
    report("  forgery: a DevID certificate (same CA) for a key in a FILE; residency proven for the TPM's DevID key");
    let (dir, s) = (lab.dir(), |f: &str| lab.path(f).display().to_string());
    crate::pki::openssl(
        &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "forged.key"],
        dir,
    )?;
    crate::pki::openssl(&["req", "-new", "-key", "forged.key", "-subj", "/CN=forged-node", "-out", "forged.csr"], dir)?;
    let (code, _, err) = crate::process::run_bin(
        "spire-server-attestor-tpm-devid",
        &[
            "sign-csr",
            "--csr",
            &s("forged.csr"),
            "--ca-cert",
            &s("int.pem"),
            "--ca-key",
            &s("int.key"),
            "--chain",
            &s("int.pem"),
            "--out",
            &s("forged.crt.pem"),
        ],
        b"",
    )?;
    ensure!(code == 0, "sign-csr: {err}");
    std::fs::write(lab.path("genuine.hcl"), lab.agent_hcl())?;
    let data = format!(
        "genuine_hcl = \"{}\"\nforged_cert = \"{}\"\nforged_key = \"{}\"",
        s("genuine.hcl"),
        s("forged.crt.pem"),
        s("forged.key")
    );
    let forged_agent = || external_plugin("NodeAttestor", "tpm_devid", "forged-devid-agent", &data);
    let id = agent_id_of(lab, &lab.path("forged.crt.pem"))?;
    let spire_server = crate::spire::builtin_plugin("NodeAttestor", "tpm_devid", &lab.server_hcl());
    let (_, selectors) = devid_attest(spire_server, forged_agent()?, &id)?;
    ensure!(selectors.iter().any(|s| s == "tpm_devid:subject:cn:forged-node"), "{selectors:?}");
    report(&format!("    SPIRE's built-in server tpm_devid ACCEPTS it: {id} (subject:cn:forged-node)"));
    let mut server = SpireServer::start(&ServerOptions::new(TRUST_DOMAIN, vec![our_server_devid(lab)?]))?;
    let mut a = SpireAgent::start(&server.agent_options(Attestor::Plugin(forged_agent()?))?)?;
    a.wait_log("Failed to retrieve attestation result", 1, STEP)?;
    server.wait_log("DevIDPub is not the key in the DevID certificate", 1, STEP)?;
    ensure!(server.agent_ids()?.is_empty(), "our server admitted the forged agent");
    report("    our server plugin under the real spire-server refuses it: `DevIDPub is not the key in the DevID certificate`");
    ensure!(a.stop(), "spire-agent did not stop cleanly");
    ensure!(server.stop(), "spire-server did not stop cleanly");
    Ok(())
}
