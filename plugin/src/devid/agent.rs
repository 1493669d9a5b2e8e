//! `spire-agent-nodeattestor-tpm-devid`: the agent side of SPIRE's `tpm_devid`, as a NodeAttestor plugin.
//!
//! Configuration is SPIRE's (`devid_cert_path`, `devid_priv_path`, `devid_pub_path`, `devid_password`,
//! `owner_hierarchy_password`, `endorsement_hierarchy_password`, `tpm_device_path`), read and checked in
//! Configure. `tpm_device_path` empty means SPIRE's autodetection (exactly one `/dev/tpmrmN`, else exactly one
//! `/dev/tpmN`); it also takes `swtpm:host=H,port=P`. `AidAttestation` sends one payload, answers one challenge
//! and ends. Attestations are serialized (a TPM without a resource manager has three object slots).

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use crypto::devid::wire::{AttestationRequest, ChallengeRequest, ChallengeResponse};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tpm::attest::{Evidence, Hierarchies, PendingAttestation};
use tpm::devid::DevIdBlobs;
use tpm::Password;
use tpm::{Tpm, TpmDevice};

use crate::hcl::{self, Value};
use crate::pb::agent_nodeattestor::node_attestor_server::NodeAttestor;
use crate::pb::agent_nodeattestor::payload_or_challenge_response::Data;
use crate::pb::agent_nodeattestor::{Challenge, PayloadOrChallengeResponse};
use crate::pb::config::config_server::Config;
use crate::pb::config::{ConfigureRequest, ConfigureResponse, ValidateRequest, ValidateResponse};

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
pub fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("devid_cert_path {}: {e}", path.display()))?;
    let certs = crypto::devid::chain::parse_pem_bundle(&text)
        .map_err(|e| format!("devid_cert_path {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("devid_cert_path {}: no certificates found in file", path.display()));
    }
    Ok(certs.iter().map(|c| c.der().to_vec()).collect())
}

/// SPIRE's TPM autodetection: exactly one `/dev/tpmrmN`, else exactly one `/dev/tpmN`.
pub fn autodetect(dev: &Path) -> Result<TpmDevice, String> {
    let names: Vec<String> = std::fs::read_dir(dev)
        .map_err(|e| format!("tpm_device_path: cannot list {}: {e}", dev.display()))?
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
            _ => return Err("tpm_device_path: more than one possible TPM device was found; set tpm_device_path".into()),
        }
    }
    Err("tpm_device_path: not set and no TPM device found in /dev".into())
}

fn string(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::Str(s) => Ok(s.clone()),
        other => Err(format!("{key}: expected a string, got {}", other.kind())),
    }
}

/// Parses and loads the plugin configuration (HCL `plugin_data`).
pub fn parse_config(text: &str) -> Result<AgentConfig, String> {
    let map = hcl::parse(text).map_err(|e| e.to_string())?;
    let (mut cert, mut private, mut public, mut device) = (None, None, None, None);
    let mut devid_password = Password::default();
    let mut hierarchies = Hierarchies::default();
    for (key, value) in &map {
        match key.as_str() {
            "devid_cert_path" => cert = Some(PathBuf::from(string(key, value)?)),
            "devid_priv_path" => private = Some(PathBuf::from(string(key, value)?)),
            "devid_pub_path" => public = Some(PathBuf::from(string(key, value)?)),
            "tpm_device_path" => device = Some(string(key, value)?).filter(|s| !s.is_empty()),
            "devid_password" => devid_password = Password::new(string(key, value)?.into_bytes()),
            "owner_hierarchy_password" => hierarchies.owner = Password::new(string(key, value)?.into_bytes()),
            "endorsement_hierarchy_password" => {
                hierarchies.endorsement = Password::new(string(key, value)?.into_bytes())
            }
            other => {
                return Err(format!(
                    "unknown key {other:?} (known: devid_cert_path, devid_priv_path, devid_pub_path, devid_password, \
                     owner_hierarchy_password, endorsement_hierarchy_password, tpm_device_path)"
                ))
            }
        }
    }
    let cert = cert.ok_or("devid_cert_path is required")?;
    let private = private.ok_or("devid_priv_path is required")?;
    let public = public.ok_or("devid_pub_path is required")?;
    let device = match device {
        None => autodetect(Path::new("/dev"))?,
        Some(text) => {
            let device: TpmDevice = text.parse().map_err(|e| format!("tpm_device_path: {e}"))?;
            if let TpmDevice::Device(path) = &device {
                let meta = std::fs::metadata(path).map_err(|e| format!("tpm_device_path {}: {e}", path.display()))?;
                use std::os::unix::fs::FileTypeExt;
                if meta.file_type().is_socket() {
                    return Err(format!(
                        "tpm_device_path {}: unix-socket TPMs are not supported; use swtpm:host=H,port=P or a device",
                        path.display()
                    ));
                }
            }
            device
        }
    };
    let read = |key: &str, path: &Path| std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()));
    let devid = DevIdBlobs::parse(read("devid_priv_path", &private)?, read("devid_pub_path", &public)?)
        .map_err(|e| e.to_string())?;
    let chain = read_chain(&cert)?;
    let leaf = crypto::devid::Cert::from_der(&chain[0]).map_err(|e| format!("devid_cert_path: leaf: {e}"))?;
    if !leaf.has_key(devid.key.spki_der()) {
        return Err(format!(
            "devid_cert_path {}: the leaf certificate does not certify the key in devid_pub_path (mismatched files)",
            cert.display()
        ));
    }
    Ok(AgentConfig { device, chain, devid, devid_password, hierarchies })
}

/// The payload of message 1: the evidence plus the certificate chain.
pub fn payload(chain: &[Vec<u8>], evidence: Evidence) -> AttestationRequest {
    AttestationRequest {
        devid_cert: chain.to_vec(),
        devid_pub: evidence.devid_pub,
        ek_cert: evidence.ek_cert,
        ek_pub: evidence.ek_pub,
        ak_pub: evidence.ak_pub,
        certified_devid: evidence.certified_devid,
        certification_signature: evidence.certification_signature,
    }
}

/// Why the agent side failed, per step.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The TPM work failed.
    #[error("{step}: {source}")]
    Tpm {
        /// The step.
        step: &'static str,
        /// The TPM error.
        source: tpm::TpmError,
    },
    /// The server's challenge is unusable.
    #[error("bad challenge from server: {0}")]
    Challenge(String),
}

/// The first half: open the TPM and gather the evidence (blocking; TPM commands).
pub fn begin(cfg: &AgentConfig) -> Result<(Vec<u8>, PendingAttestation), AgentError> {
    let tpm = Tpm::open(&cfg.device).map_err(|source| AgentError::Tpm { step: "open the TPM", source })?;
    let (evidence, pending) = tpm
        .devid_evidence(&cfg.devid, &cfg.devid_password, &cfg.hierarchies)
        .map_err(|source| AgentError::Tpm { step: "gather the attestation evidence", source })?;
    let json = serde_json::to_vec(&payload(&cfg.chain, evidence))
        .map_err(|e| AgentError::Challenge(format!("cannot encode payload: {e}")))?;
    Ok((json, pending))
}

/// The second half: answer the server's challenge JSON (blocking; TPM commands).
pub fn answer(pending: &PendingAttestation, challenge: &[u8]) -> Result<Vec<u8>, AgentError> {
    let challenge: ChallengeRequest = serde_json::from_slice(challenge)
        .map_err(|e| AgentError::Challenge(format!("unable to unmarshall challenge: {e}")))?;
    let Some(cred) = challenge.cred_activation else {
        return Err(AgentError::Challenge("received empty credential activation challenge from server".into()));
    };
    if challenge.devid.is_empty() {
        return Err(AgentError::Challenge("received empty DevID challenge from server".into()));
    }
    let response = pending
        .respond(&challenge.devid, &cred.credential, &cred.secret)
        .map_err(|source| AgentError::Tpm { step: "solve the challenge", source })?;
    let json =
        ChallengeResponse { devid: response.devid_signature, cred_activation: response.activated_secret.to_vec() };
    serde_json::to_vec(&json).map_err(|e| AgentError::Challenge(format!("cannot encode response: {e}")))
}

/// The plugin's state.
#[derive(Debug, Default)]
pub struct AgentPlugin {
    config: std::sync::Mutex<Option<Arc<AgentConfig>>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// gRPC face of [`AgentPlugin`].
#[derive(Debug, Clone, Default)]
pub struct AgentService(pub Arc<AgentPlugin>);

type Outbound = Pin<Box<dyn Stream<Item = Result<PayloadOrChallengeResponse, Status>> + Send>>;

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "attestation failed");
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl NodeAttestor for AgentService {
    type AidAttestationStream = Outbound;

    async fn aid_attestation(
        &self,
        req: Request<Streaming<Challenge>>,
    ) -> Result<Response<Self::AidAttestationStream>, Status> {
        let cfg = self
            .0
            .config
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| Status::failed_precondition("not configured"))?;
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let plugin = self.0.clone();
        tokio::spawn(async move {
            let _turn = plugin.one_at_a_time.lock().await;
            let run = async {
                let c = cfg.clone();
                let (payload, pending) =
                    tokio::task::spawn_blocking(move || begin(&c)).await.map_err(internal)?.map_err(internal)?;
                tracing::info!(device = %cfg.device, bytes = payload.len(), "sending tpm_devid attestation payload");
                tx.send(Ok(PayloadOrChallengeResponse { data: Some(Data::Payload(payload)) }))
                    .await
                    .map_err(|_| Status::cancelled("agent closed the stream"))?;
                let challenge = match tokio::time::timeout(CHALLENGE_TIMEOUT, inbound.message()).await {
                    Err(_) => return Err(Status::deadline_exceeded("no challenge from the server in time")),
                    Ok(Err(status)) => return Err(status),
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Ok(Some(c))) => c.challenge,
                };
                let response = tokio::task::spawn_blocking(move || answer(&pending, &challenge))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
                tracing::info!("answered the tpm_devid challenge");
                tx.send(Ok(PayloadOrChallengeResponse { data: Some(Data::ChallengeResponse(response)) }))
                    .await
                    .map_err(|_| Status::cancelled("agent closed the stream"))?;
                Ok(())
            };
            if let Err(status) = run.await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Config for AgentService {
    async fn configure(&self, req: Request<ConfigureRequest>) -> Result<Response<ConfigureResponse>, Status> {
        let text = req.into_inner().hcl_configuration;
        let cfg = tokio::task::spawn_blocking(move || parse_config(&text)).await.map_err(internal)?.map_err(|e| {
            tracing::error!(error = %e, "configuration refused");
            Status::invalid_argument(e)
        })?;
        let leaf_fp = crypto::devid::Cert::from_der(&cfg.chain[0]).map(|c| c.sha1_hex()).unwrap_or_default();
        tracing::info!(device = %cfg.device, devid_key = %cfg.devid.key.key_type(), devid_cert_sha1 = %leaf_fp,
            chain = cfg.chain.len(), "configured");
        if let Ok(mut slot) = self.0.config.lock() {
            *slot = Some(Arc::new(cfg));
        }
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(&self, req: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let text = req.into_inner().hcl_configuration;
        let result = tokio::task::spawn_blocking(move || parse_config(&text)).await.map_err(internal)?;
        Ok(Response::new(match result {
            Ok(_) => ValidateResponse { valid: true, notes: Vec::new() },
            Err(e) => ValidateResponse { valid: false, notes: vec![e] },
        }))
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
                (Err(e), Err(text)) => assert!(e.contains(text), "{names:?}: {e}"),
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
            let err = parse_config(hcl).unwrap_err();
            assert!(err.contains(want), "{hcl}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tpm.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let hcl = format!(
            "devid_cert_path = \"a\"\ndevid_priv_path = \"b\"\ndevid_pub_path = \"c\"\ntpm_device_path = \"{}\"",
            sock.display()
        );
        assert!(parse_config(&hcl).unwrap_err().contains("unix-socket TPMs are not supported"));
    }
}
