//! The `tpm_devid` scenario of `make testbed`: for RSA and ECC DevIDs, with and without hierarchy and DevID
//! passwords, a manufactured swtpm and a DevID CA, our agent and server NodeAttestor plugins loaded over go-plugin
//! and one attestation relayed between them message by message, as SPIRE's agent and server do.

use anyhow::Context;
use crypto::devid::wire::{AttestationRequest, ChallengeRequest, ChallengeResponse};

use crate::devid::{DevIdLab, LabOptions};
use crate::host::PluginHost;
use crate::single::Report;

fn one(report: Report<'_>, options: LabOptions) -> anyhow::Result<()> {
    let label = format!(
        "{} DevID, {}, {}",
        options.key_type,
        if options.intermediate { "leaf from an intermediate CA" } else { "leaf from the root CA" },
        match (options.devid_password, options.owner_password) {
            (Some(_), Some(_)) => "DevID, owner and endorsement passwords",
            (None, Some(_)) => "owner and endorsement passwords",
            (Some(_), None) => "DevID password",
            (None, None) => "no passwords",
        }
    );
    report(&format!("{label}: swtpm manufactured with an EK certificate (swtpm_setup + private swtpm_localca)"));
    let lab = DevIdLab::new(options)?;
    report("  DevID provisioned in the TPM (spire-server-attestor-tpm-devid provision), CSR signed by the DevID key");
    report("  leaf issued by the file-based DevID CA (sign-csr); server trusts the DevID root and the EK CA chain");
    let agent = PluginHost::launch("spire-agent-nodeattestor-tpm-devid", "NodeAttestor")?;
    agent.init()?;
    agent.configure(&lab.agent_hcl(), "example.org").context("agent Configure")?;
    let server = PluginHost::launch("spire-server-nodeattestor-tpm-devid", "NodeAttestor")?;
    server.init()?;
    server.configure(&lab.server_hcl(), "example.org").context("server Configure")?;
    report("  agent and server NodeAttestor plugins loaded over go-plugin, Init + Configure done");

    let (mut a, payload) = agent.aid_attestation().context("agent payload")?;
    let p: AttestationRequest = serde_json::from_slice(&payload)?;
    report(&format!(
        "agent -> server payload ({} B JSON): DevIDCert x{}, DevIDPub {} B, EKCert {} B, EKPub {} B, AKPub {} B, \
         CertifiedDevID {} B, CertificationSignature {} B",
        payload.len(),
        p.devid_cert.len(),
        p.devid_pub.len(),
        p.ek_cert.len(),
        p.ek_pub.len(),
        p.ak_pub.len(),
        p.certified_devid.len(),
        p.certification_signature.len()
    ));
    let (mut s, challenge) = server.attest_begin(payload).context("server checks of the payload")?;
    let c: ChallengeRequest = serde_json::from_slice(&challenge)?;
    let cred = c.cred_activation.unwrap_or_default();
    report(&format!(
        "server checked DevID chain, EK certificate chain, EKPub, AK certification; challenge: nonce {} B, \
         credential {} B, encrypted seed {} B",
        c.devid.len(),
        cred.credential.len(),
        cred.secret.len()
    ));
    let response = agent.agent_answer(&mut a, challenge).context("agent answer")?;
    let r: ChallengeResponse = serde_json::from_slice(&response)?;
    report(&format!(
        "agent -> server response: DevID signature over the nonce {} B, activated secret {} B",
        r.devid.len(),
        r.cred_activation.len()
    ));
    let attrs = server.attest_finish(&mut s, response).context("server checks of the response")?;
    report(&format!("server: proof of possession and residency passed; agent ID {}", attrs.spiffe_id));
    for sel in &attrs.selector_values {
        report(&format!("  selector tpm_devid:{sel}"));
    }
    report(&format!("  can_reattest = {}", attrs.can_reattest));
    let left = lab.tpm_leftovers()?;
    anyhow::ensure!(left.is_empty(), "objects left in the TPM: {left}");
    report("  TPM holds no transient object or session afterwards");
    agent.unload()?;
    server.unload()?;
    Ok(())
}

/// Runs the scenario.
pub fn run(report: Report<'_>) -> anyhow::Result<()> {
    one(report, LabOptions::default())?;
    one(
        report,
        LabOptions {
            key_type: "ecc-p256",
            devid_password: Some("devid-password"),
            owner_password: Some("owner-password"),
            endorsement_password: Some("endorsement-password"),
            intermediate: false,
        },
    )?;
    one(report, LabOptions { key_type: "ecc-p256", ..LabOptions::default() })?;
    one(
        report,
        LabOptions {
            owner_password: Some("owner-password"),
            endorsement_password: Some("endorsement-password"),
            devid_password: Some("devid-password"),
            ..LabOptions::default()
        },
    )
}
