//! `spire-server-attestor-tpm-devid check`: the whole `tpm_devid` exchange run locally, the agent side on this
//! machine's TPM and the server side against the given CA sets, reporting which step fails and why.

use std::io::Write;
use std::path::PathBuf;

use crypto::devid::{Attested, DevIdVerifier, ExtraChecks};
use tpm::attest::Hierarchies;
use tpm::devid::DevIdBlobs;
use tpm::Password;
use tpm::TpmDevice;

use crate::devid::agent::{self, AgentConfig};

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// The agent's TPM.
    pub device: TpmDevice,
    /// `devid_cert_path`.
    pub devid_cert: PathBuf,
    /// `devid_priv_path`.
    pub devid_priv: PathBuf,
    /// `devid_pub_path`.
    pub devid_pub: PathBuf,
    /// `devid_password`.
    pub devid_password: Password,
    /// Hierarchy passwords.
    pub hierarchies: Hierarchies,
    /// The server's `devid_ca_path`.
    pub devid_ca: PathBuf,
    /// The server's `endorsement_ca_path`.
    pub endorsement_ca: PathBuf,
    /// The trust domain for the printed agent ID.
    pub trust_domain: String,
}

/// Runs every step, writing one line per step to `out`; returns the agent ID and selectors, or the failed step.
pub fn run(req: &CheckRequest, out: &mut dyn Write) -> Result<(String, Attested), String> {
    let mut step = |name: &str, result: Result<String, String>| -> Result<(), String> {
        match result {
            Ok(detail) => {
                let _ = writeln!(
                    out,
                    "ok    {name}{}",
                    if detail.is_empty() { String::new() } else { format!(": {detail}") }
                );
                Ok(())
            }
            Err(e) => {
                let _ = writeln!(out, "FAIL  {name}: {e}");
                Err(format!("{name}: {e}"))
            }
        }
    };
    let read = |what: &str, p: &PathBuf| std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()));

    let mut cfg = None;
    step(
        "read the agent's DevID files",
        (|| {
            let chain = agent::read_chain(&req.devid_cert)?;
            let devid =
                DevIdBlobs::parse(read("devid_priv_path", &req.devid_priv)?, read("devid_pub_path", &req.devid_pub)?)
                    .map_err(|e| e.to_string())?;
            let detail = format!("{} DevID, chain of {}", devid.key.key_type(), chain.len());
            cfg = Some(AgentConfig {
                device: req.device.clone(),
                chain,
                devid,
                devid_password: req.devid_password.clone(),
                hierarchies: req.hierarchies.clone(),
            });
            Ok(detail)
        })(),
    )?;
    let cfg = cfg.ok_or("internal: no configuration")?;
    let mut verifier = None;
    step(
        "read the server's CA sets",
        (|| {
            let v = DevIdVerifier::new(
                &read("devid_ca_path", &req.devid_ca)?,
                &read("endorsement_ca_path", &req.endorsement_ca)?,
                ExtraChecks::default(),
            )
            .map_err(|e| e.to_string())?;
            verifier = Some(v);
            Ok(String::new())
        })(),
    )?;
    let verifier = verifier.ok_or("internal: no verifier")?;

    let mut started = None;
    step(
        "agent: DevID, AK, EK, EK certificate and Certify on the TPM",
        (|| {
            let (payload, pending) = agent::begin(&cfg).map_err(|e| e.to_string())?;
            let detail = format!("{} bytes of payload from {}", payload.len(), cfg.device);
            started = Some((payload, pending));
            Ok(detail)
        })(),
    )?;
    let (payload, pending) = started.ok_or("internal: no payload")?;

    let now = crypto::unix_now();
    let mut challenged = None;
    step(
        "server: DevID chain, EK certificate and chain, AK certification",
        (|| {
            let (challenge, c) = verifier.challenge(&payload, now).map_err(|e| e.to_string())?;
            challenged = Some((challenge, c));
            Ok(String::new())
        })(),
    )?;
    let (challenge, challenged) = challenged.ok_or("internal: no challenge")?;

    let mut response = None;
    step(
        "agent: sign the nonce with the DevID and activate the credential",
        (|| {
            response = Some(agent::answer(&pending, &challenge).map_err(|e| e.to_string())?);
            Ok(String::new())
        })(),
    )?;
    let response = response.ok_or("internal: no response")?;

    let mut attested = None;
    step(
        "server: proof of possession and proof of residency",
        (|| {
            attested = Some(challenged.verify(&response).map_err(|e| e.to_string())?);
            Ok(String::new())
        })(),
    )?;
    let attested = attested.ok_or("internal: not attested")?;
    Ok((format!("spiffe://{}{}", req.trust_domain, attested.agent_path()), attested))
}
