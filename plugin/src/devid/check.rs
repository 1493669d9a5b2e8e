//! `spire-server-attestor-tpm-devid check`: the whole `tpm_devid` exchange run locally, the agent side on this
//! machine's TPM and the server side against the given CA sets, reporting which step fails and why.

use std::io::Write;
use std::path::PathBuf;

use crypto::devid::Attested;
use tpm::attest::Hierarchies;
use tpm::devid::DevIdBlobs;
use tpm::Password;
use tpm::TpmDevice;

use crate::config::read_file;
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
    /// The server plugin's `plugin_data` (HCL): its CA sets, EK policy, CRL and PCR quote, as SPIRE would pass it.
    pub server_hcl: String,
    /// The trust domain for the printed agent ID.
    pub trust_domain: crypto::TrustDomain,
    /// What the server side judges certificate validity by.
    pub clock: common::clock::Clock,
}

/// Whatever a step's own error is.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// The step that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub struct CheckError {
    /// The step, as printed.
    pub step: &'static str,
    /// Why it failed.
    cause: Cause,
}

/// Runs steps in order, printing `ok` or `FAIL` with each one's detail.
struct Steps<'a> {
    out: &'a mut dyn Write,
}

impl Steps<'_> {
    fn run<T>(&mut self, step: &'static str, f: impl FnOnce() -> Result<(T, String), Cause>) -> Result<T, CheckError> {
        match f() {
            Ok((value, detail)) => {
                let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
                let _ = writeln!(self.out, "ok    {step}{detail}");
                Ok(value)
            }
            Err(source) => {
                let _ = writeln!(self.out, "FAIL  {step}: {source}");
                Err(CheckError { step, cause: source })
            }
        }
    }
}

/// Runs every step, writing one line per step to `out`; returns the agent ID and selectors, or the failed step.
pub fn run(req: &CheckRequest, out: &mut dyn Write) -> Result<(String, Attested), CheckError> {
    let mut steps = Steps { out };
    let cfg = steps.run("read the agent's DevID files", || {
        let chain = agent::read_chain(&req.devid_cert)?;
        let devid = DevIdBlobs::parse(
            read_file("devid_priv_path", &req.devid_priv)?,
            read_file("devid_pub_path", &req.devid_pub)?,
        )?;
        let detail = format!("{} DevID, chain of {}", devid.key.key_type(), chain.len());
        let cfg = AgentConfig {
            device: req.device.clone(),
            chain,
            devid,
            devid_password: req.devid_password.clone(),
            hierarchies: req.hierarchies.clone(),
        };
        Ok((cfg, detail))
    })?;
    let server = steps.run("read the server plugin's configuration", || {
        let server = crate::devid::server::parse_config(&req.server_hcl, &req.trust_domain.to_string())?;
        let verifier = server.verifier();
        let mut detail = format!("ek_policy {}", verifier.ek_policy().mode());
        if let Some(q) = verifier.quote() {
            detail.push_str(&format!(
                ", PCR quote {}{}",
                q.selection,
                if q.require { ", policy required" } else { "" }
            ));
        }
        if server.crl.is_some() {
            detail.push_str(", CRL");
        }
        Ok((server, detail))
    })?;
    let verifier = server.verifier();
    let (payload, pending) = steps.run("agent: DevID, AK, EK, EK certificate and Certify on the TPM", || {
        let (payload, pending) = agent::begin(&cfg)?;
        let detail = format!("{} bytes of payload from {}", payload.len(), cfg.device);
        Ok(((payload, pending), detail))
    })?;
    let now = req.clock.now();
    let (challenge, challenged) = steps.run("server: DevID chain, EK, AK certification, revocation", || {
        let (challenge, challenged) = verifier.challenge(&payload, now)?;
        if let Some(crl) = &server.crl {
            crl.current().check(challenged.leaf(), now)?;
        }
        Ok(((challenge, challenged), String::new()))
    })?;
    let response = steps
        .run("agent: sign the nonce with the DevID, activate the credential, quote the PCRs asked", || {
            Ok((agent::answer(&pending, &challenge)?, String::new()))
        })?;
    let attested = steps.run("server: proof of possession, proof of residency, the PCR quote and policy", || {
        Ok((challenged.verify(&response)?, String::new()))
    })?;
    Ok((format!("spiffe://{}{}", req.trust_domain, attested.agent_path()), attested))
}
