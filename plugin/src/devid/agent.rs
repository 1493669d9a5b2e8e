//! `spire-agent-nodeattestor-tpm-devid`: the agent side of SPIRE's `tpm_devid`, as a NodeAttestor plugin.
//!
//! Configuration is SPIRE's (`devid_cert_path`, `devid_priv_path`, `devid_pub_path`, `devid_password`,
//! `owner_hierarchy_password`, `endorsement_hierarchy_password`, `tpm_device_path`), read and checked in
//! Configure. `tpm_device_path` empty means SPIRE's autodetection (exactly one `/dev/tpmrmN`, else exactly one
//! `/dev/tpmN`); it also takes `swtpm:host=H,port=P`. `AidAttestation` sends one payload, answers one challenge
//! and ends. Attestations are serialized (a TPM without a resource manager has three object slots).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crypto::devid::wire::{AttestationRequest, ChallengeRequest, ChallengeResponse};
use tonic::{Request, Response, Status, Streaming};
use tpm::attest::{Evidence, Hierarchies, PendingAttestation};
use tpm::devid::DevIdBlobs;
use tpm::Password;
use tpm::{Tpm, TpmDevice};

use crate::config::{self, read_file, ConfigError, ConfigService, ConfigSlot, PluginConfig};
use crate::pb::agent_nodeattestor::node_attestor_server::NodeAttestor;
use crate::pb::agent_nodeattestor::payload_or_challenge_response::Data;
use crate::pb::agent_nodeattestor::{Challenge, PayloadOrChallengeResponse};
use crate::pb::config::CoreConfiguration;
use crate::stream::{spawn_exchange, Closed, Outbound};

/// The services Init reports.
pub const SERVICE_NAMES: [&str; 2] =
    ["spire.plugin.agent.nodeattestor.v1.NodeAttestor", "spire.service.common.config.v1.Config"];

/// How long the agent waits for the server's challenge.
const CHALLENGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A checked agent configuration with the DevID material loaded.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The TPM.
    pub device: TpmDevice,
    /// DevID chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The DevID blobs.
    pub devid: DevIdBlobs,
    /// `devid_password`.
    pub devid_password: Password,
    /// Owner and endorsement hierarchy passwords.
    pub hierarchies: Hierarchies,
}

/// Reads every `CERTIFICATE` block of a PEM file, in order (SPIRE: "no certificates found in file" if none).
pub fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    const KEY: &str = "devid_cert_path";
    let text = read_file(KEY, path)?;
    let certs = crypto::devid::chain::parse_pem_bundle(&text).map_err(|e| ConfigError::file(KEY, path, e))?;
    if certs.is_empty() {
        return Err(ConfigError::file(KEY, path, "no certificates found in file"));
    }
    Ok(certs.iter().map(|c| c.der().to_vec()).collect())
}

/// SPIRE's TPM autodetection: exactly one `/dev/tpmrmN`, else exactly one `/dev/tpmN`.
pub fn autodetect(dev: &Path) -> Result<TpmDevice, ConfigError> {
    const KEY: &str = "tpm_device_path";
    let names: Vec<String> = std::fs::read_dir(dev)
        .map_err(|e| ConfigError::file(KEY, dev, e))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
        .collect();
    for prefix in ["tpmrm", "tpm"] {
        let found: Vec<&String> = names
            .iter()
            .filter(|n| n.strip_prefix(prefix).is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())))
            .collect();
        match found.as_slice() {
            [one] => return Ok(TpmDevice::Device(dev.join(one))),
            [] => continue,
            _ => {
                return Err(ConfigError::invalid(
                    KEY,
                    "more than one possible TPM device was found; set tpm_device_path",
                ))
            }
        }
    }
    Err(ConfigError::invalid(KEY, "not set and no TPM device found in /dev"))
}

/// The agent plugin's `plugin_data` as written (SPIRE's keys).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    devid_cert_path: Option<PathBuf>,
    devid_priv_path: Option<PathBuf>,
    devid_pub_path: Option<PathBuf>,
    devid_password: Option<String>,
    owner_hierarchy_password: Option<String>,
    endorsement_hierarchy_password: Option<String>,
    tpm_device_path: Option<String>,
}

/// Parses and loads the plugin configuration (HCL `plugin_data`).
pub fn parse_config(text: &str) -> Result<AgentConfig, ConfigError> {
    let raw: Raw = config::decode(text)?;
    let password = |s: Option<String>| s.map(|s| Password::new(s.into_bytes())).unwrap_or_default();
    let cert = config::path("devid_cert_path", raw.devid_cert_path)?;
    let private = config::path("devid_priv_path", raw.devid_priv_path)?;
    let public = config::path("devid_pub_path", raw.devid_pub_path)?;
    let devid_password = password(raw.devid_password);
    let hierarchies = Hierarchies {
        owner: password(raw.owner_hierarchy_password),
        endorsement: password(raw.endorsement_hierarchy_password),
    };
    let device_path = raw.tpm_device_path;
    let cert = cert.ok_or(ConfigError::Missing("devid_cert_path"))?;
    let private = private.ok_or(ConfigError::Missing("devid_priv_path"))?;
    let public = public.ok_or(ConfigError::Missing("devid_pub_path"))?;
    let device = match device_path.filter(|s| !s.is_empty()) {
        None => autodetect(Path::new("/dev"))?,
        Some(text) => {
            const KEY: &str = "tpm_device_path";
            let device: TpmDevice =
                text.parse().map_err(|e| ConfigError::Value { key: KEY.into(), cause: Box::new(e) })?;
            if let TpmDevice::Device(path) = &device {
                let meta = std::fs::metadata(path).map_err(|e| ConfigError::file(KEY, path, e))?;
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    return Err(ConfigError::file(
                        KEY,
                        path,
                        "unix-socket TPMs are not supported; use swtpm:host=H,port=P or a device",
                    ));
                }
            }
            device
        }
    };
    let devid = DevIdBlobs::parse(read_file("devid_priv_path", &private)?, read_file("devid_pub_path", &public)?)
        .map_err(|e| ConfigError::file("devid_pub_path", &public, e))?;
    let chain = read_chain(&cert)?;
    let leaf = crypto::devid::Cert::from_der(&chain[0]).map_err(|e| ConfigError::file("devid_cert_path", &cert, e))?;
    if !leaf.has_key(devid.key.spki_der()) {
        return Err(ConfigError::file(
            "devid_cert_path",
            &cert,
            "the leaf certificate does not certify the key in devid_pub_path (mismatched files)",
        ));
    }
    Ok(AgentConfig { device, chain, devid, devid_password, hierarchies })
}

impl PluginConfig for AgentConfig {
    fn load(hcl: &str, _core: Option<&CoreConfiguration>) -> Result<(Self, Vec<String>), ConfigError> {
        Ok((parse_config(hcl)?, Vec::new()))
    }

    fn log_configured(&self) {
        let leaf_fp = crypto::devid::Cert::from_der(&self.chain[0]).map(|c| c.sha1_hex()).unwrap_or_default();
        tracing::info!(device = %self.device, devid_key = %self.devid.key.key_type(), devid_cert_sha1 = %leaf_fp,
            chain = self.chain.len(), "configured");
    }
}

/// The payload of message 1: the evidence plus the certificate chain.
/// A TPM without an EK certificate sends none: the server must know its EK by hash.
pub fn payload(chain: &[Vec<u8>], evidence: Evidence) -> AttestationRequest {
    if evidence.ek_cert.is_none() {
        tracing::warn!("the TPM has no EK certificate in NV: sending the EK's public key only; the server must list its hash (endorsement_hashes_path)");
    }
    AttestationRequest {
        devid_cert: chain.to_vec(),
        devid_pub: evidence.devid_pub,
        ek_cert: evidence.ek_cert.unwrap_or_default(),
        ek_pub: evidence.ek_pub,
        ak_pub: evidence.ak_pub,
        certified_devid: evidence.certified_devid,
        certification_signature: evidence.certification_signature,
    }
}

/// Why the agent side failed, per step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The TPM work failed.
    #[error("{step}: {cause}")]
    Tpm {
        /// The step.
        step: &'static str,
        /// The TPM error.
        cause: tpm::TpmError,
    },
    /// The server's challenge is not the JSON SPIRE sends.
    #[error("bad challenge from server: unable to unmarshall challenge: {0}")]
    ChallengeJson(serde_json::Error),
    /// The server's challenge lacks a part (SPIRE's agent refuses the same, in the same words).
    #[error("bad challenge from server: received empty {0} challenge from server")]
    ChallengeEmpty(&'static str),
    /// The server asked for a quote of PCRs this agent cannot name.
    #[error("bad challenge from server: PCR quote: {0}")]
    Quote(String),
    /// The TPM's ECDSA signature is not the raw r||s it must be.
    #[error("the TPM's DevID signature: {0}")]
    Signature(super::signature::NotRawEcdsa),
    /// Our own message did not encode (payload or response).
    #[error("cannot encode the {what}: {cause}")]
    Encode {
        /// Which message.
        what: &'static str,
        /// The encoder's error.
        cause: serde_json::Error,
    },
}

/// The first half: open the TPM and gather the evidence (blocking; TPM commands).
pub fn begin(cfg: &AgentConfig) -> Result<(Vec<u8>, PendingAttestation), AgentError> {
    let tpm = Tpm::open(&cfg.device).map_err(|source| AgentError::Tpm { step: "open the TPM", cause: source })?;
    let (evidence, pending) = tpm
        .devid_evidence(&cfg.devid, &cfg.devid_password, &cfg.hierarchies)
        .map_err(|source| AgentError::Tpm { step: "gather the attestation evidence", cause: source })?;
    let json = serde_json::to_vec(&payload(&cfg.chain, evidence))
        .map_err(|source| AgentError::Encode { what: "payload", cause: source })?;
    Ok((json, pending))
}

/// The second half: answer the server's challenge JSON (blocking; TPM commands).
pub fn answer(pending: &PendingAttestation, challenge: &[u8]) -> Result<Vec<u8>, AgentError> {
    let challenge: ChallengeRequest = serde_json::from_slice(challenge).map_err(AgentError::ChallengeJson)?;
    let Some(cred) = challenge.cred_activation else {
        return Err(AgentError::ChallengeEmpty("credential activation"));
    };
    if challenge.devid.is_empty() {
        return Err(AgentError::ChallengeEmpty("DevID"));
    }
    // Beyond SPIRE's: the server may ask for a quote of PCRs, made by the AK just activated over the same nonce.
    let selection = match &challenge.pcr_quote {
        Some(asked) => Some(asked.selection.parse::<crypto::devid::quote::PcrSelection>().map_err(AgentError::Quote)?),
        None => None,
    };
    let pcrs: Vec<u8> = selection.iter().flat_map(|s| s.pcrs.iter().copied()).collect();
    let (response, quote) = pending
        .respond_and_quote(
            &challenge.devid,
            &cred.credential,
            &cred.secret,
            selection.as_ref().map(|s| (s.hash, pcrs.as_slice())),
        )
        .map_err(|source| AgentError::Tpm { step: "solve the challenge", cause: source })?;
    let devid = super::signature::der(pending.key_type(), response.devid_signature).map_err(AgentError::Signature)?;
    let pcr_quote =
        quote.map(|q| crypto::devid::quote::QuoteAnswer { quoted: q.quoted, signature: q.signature, values: q.values });
    let json = ChallengeResponse { devid, cred_activation: response.activated_secret.to_vec(), pcr_quote };
    serde_json::to_vec(&json).map_err(|source| AgentError::Encode { what: "response", cause: source })
}

/// The plugin's state.
#[derive(Debug, Default)]
pub struct AgentPlugin {
    config: Arc<ConfigSlot<AgentConfig>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl AgentPlugin {
    /// SPIRE's Config service for this plugin.
    pub fn config_service(&self) -> ConfigService<AgentConfig> {
        ConfigService(self.config.clone())
    }
}

/// gRPC face of [`AgentPlugin`].
#[derive(Debug, Clone, Default)]
pub struct AgentService(pub Arc<AgentPlugin>);

/// Why an AidAttestation stream ended before the agent answered the challenge.
#[derive(Debug, thiserror::Error)]
enum AidFailure {
    /// The TPM, the DevID files or the challenge: our error, with its step.
    #[error("{0}")]
    Attest(AgentError),
    /// The blocking task running the TPM work did not complete.
    #[error("TPM task failed: {0}")]
    Task(tokio::task::JoinError),
    #[error("no challenge from the server in time")]
    Timeout,
    #[error("agent closed the stream")]
    Closed(Closed),
    /// The stream itself failed (SPIRE's status, passed on).
    #[error("{}", .0.message())]
    Stream(Status),
}

impl From<Closed> for AidFailure {
    fn from(c: Closed) -> AidFailure {
        AidFailure::Closed(c)
    }
}

/// The one conversion to SPIRE: a failure of ours is INTERNAL with its reason (and logged here).
impl From<AidFailure> for Status {
    fn from(e: AidFailure) -> Status {
        match e {
            AidFailure::Stream(status) => status,
            AidFailure::Timeout => Status::deadline_exceeded(e.to_string()),
            AidFailure::Closed(_) => Status::cancelled(e.to_string()),
            AidFailure::Attest(_) | AidFailure::Task(_) => {
                tracing::error!(error = %e, "attestation failed");
                Status::internal(e.to_string())
            }
        }
    }
}

#[tonic::async_trait]
impl NodeAttestor for AgentService {
    type AidAttestationStream = Outbound<PayloadOrChallengeResponse>;

    async fn aid_attestation(
        &self,
        req: Request<Streaming<Challenge>>,
    ) -> Result<Response<Self::AidAttestationStream>, Status> {
        let cfg = self.0.config.get()?;
        let mut inbound = req.into_inner();
        let plugin = self.0.clone();
        Ok(Response::new(spawn_exchange(|tx| async move {
            let _turn = plugin.one_at_a_time.lock().await;
            let c = cfg.clone();
            let (payload, pending) = tokio::task::spawn_blocking(move || begin(&c))
                .await
                .map_err(AidFailure::Task)?
                .map_err(AidFailure::Attest)?;
            tracing::info!(device = %cfg.device, bytes = payload.len(), "sending tpm_devid attestation payload");
            tx.send(PayloadOrChallengeResponse { data: Some(Data::Payload(payload)) }).await?;
            let challenge = match tokio::time::timeout(CHALLENGE_TIMEOUT, inbound.message()).await {
                Err(_) => return Err(AidFailure::Timeout),
                Ok(Err(status)) => return Err(AidFailure::Stream(status)),
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(c))) => c.challenge,
            };
            let response = tokio::task::spawn_blocking(move || answer(&pending, &challenge))
                .await
                .map_err(AidFailure::Task)?
                .map_err(AidFailure::Attest)?;
            tracing::info!("answered the tpm_devid challenge");
            tx.send(PayloadOrChallengeResponse { data: Some(Data::ChallengeResponse(response)) }).await?;
            Ok(())
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autodetection_follows_spire() {
        let cases: [(&[&str], Result<&str, &str>); 6] = [
            (&["tpmrm0", "tpm0", "null"], Ok("tpmrm0")),
            (&["tpm0", "tty0"], Ok("tpm0")),
            (&["tpmrm0", "tpmrm1", "tpm0"], Err("more than one possible TPM device")),
            (&["tpm0", "tpm1"], Err("more than one possible TPM device")),
            (&["tpmrm", "tpmx0", "tty"], Err("no TPM device found")),
            (&[], Err("no TPM device found")),
        ];
        for (names, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            for n in names {
                std::fs::write(dir.path().join(n), b"").unwrap();
            }
            match (autodetect(dir.path()), want) {
                (Ok(TpmDevice::Device(p)), Ok(name)) => assert_eq!(p, dir.path().join(name), "{names:?}"),
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{names:?}: {e}"),
                (got, want) => panic!("{names:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn config_refuses_unknown_keys_wrong_types_and_socket_devices() {
        for (hcl, want) in [
            ("", "devid_cert_path is required"),
            ("devid_cert_path = \"a\"", "devid_priv_path is required"),
            ("devid_cert_path = \"a\"\ndevid_priv_path = \"b\"", "devid_pub_path is required"),
            ("devid_password = 1", "devid_password: expected a string"),
            ("nope = \"x\"", "unknown key \"nope\""),
            (
                "devid_cert_path = \"a\"\ndevid_priv_path = \"b\"\ndevid_pub_path = \"c\"\ntpm_device_path = \"tcp:1\"",
                "tpm_device_path",
            ),
        ] {
            let err = parse_config(hcl).unwrap_err().to_string();
            assert!(err.contains(want), "{hcl}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tpm.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let hcl = format!(
            "devid_cert_path = \"a\"\ndevid_priv_path = \"b\"\ndevid_pub_path = \"c\"\ntpm_device_path = \"{}\"",
            sock.display()
        );
        assert!(parse_config(&hcl).unwrap_err().to_string().contains("unix-socket TPMs are not supported"));
    }
}
