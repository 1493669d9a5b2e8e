//! `spire-server-nodeattestor-tpm-devid`: the server side of SPIRE's `tpm_devid`, as a NodeAttestor plugin.
//!
//! Configuration is SPIRE's (`devid_ca_path`, `endorsement_ca_path`, both required) plus three switches for the
//! checks SPIRE omits, all on by default: `check_devid_pub_matches_cert`, `check_ak_attributes`,
//! `check_qualified_signer` (see `crypto::devid`). `Attest` takes one payload, sends one challenge, checks one
//! response and returns the agent ID `spiffe://<td>/spire/agent/tpm_devid/<sha1 of the DevID leaf>` with SPIRE's
//! selectors and `can_reattest = true`. Refusals are `InvalidArgument` with the failed check's reason.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crypto::devid::{DevIdVerifier, ExtraChecks};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::hcl::{self, Value};
use crate::pb::config::config_server::Config;
use crate::pb::config::{ConfigureRequest, ConfigureResponse, ValidateRequest, ValidateResponse};
use crate::pb::server_nodeattestor::attest_request::Request as In;
use crate::pb::server_nodeattestor::attest_response::Response as Out;
use crate::pb::server_nodeattestor::node_attestor_server::NodeAttestor;
use crate::pb::server_nodeattestor::{AgentAttributes, AttestRequest, AttestResponse};
use crypto::unix_now as now;

/// The services Init reports.
pub const SERVICE_NAMES: [&str; 2] =
    ["spire.plugin.server.nodeattestor.v1.NodeAttestor", "spire.service.common.config.v1.Config"];

/// How long the server waits for the agent's challenge response.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A checked server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The trust domain (from SPIRE's core configuration).
    pub trust_domain: String,
    /// The verifier with both CA sets loaded.
    pub verifier: DevIdVerifier,
}

fn bool_value(key: &str, value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(format!("{key}: expected true or false, got {}", other.kind())),
    }
}

/// Parses the plugin configuration and loads both CA bundles.
pub fn parse_config(text: &str, trust_domain: &str) -> Result<ServerConfig, String> {
    if trust_domain.is_empty() || trust_domain.contains(['/', ':']) {
        return Err(format!("trust domain {trust_domain:?} is not a SPIFFE trust domain name"));
    }
    let map = hcl::parse(text).map_err(|e| e.to_string())?;
    let (mut devid_ca, mut ek_ca) = (None, None);
    let mut extra = ExtraChecks::default();
    for (key, value) in &map {
        let path = || match value {
            Value::Str(s) if !s.is_empty() => Ok(PathBuf::from(s)),
            other => Err(format!("{key}: expected a file path, got {}", other.kind())),
        };
        match key.as_str() {
            "devid_ca_path" => devid_ca = Some(path()?),
            "endorsement_ca_path" => ek_ca = Some(path()?),
            "check_devid_pub_matches_cert" => extra.devid_pub_matches_certificate = bool_value(key, value)?,
            "check_ak_attributes" => extra.ak_attributes = bool_value(key, value)?,
            "check_qualified_signer" => extra.qualified_signer = bool_value(key, value)?,
            other => {
                return Err(format!(
                    "unknown key {other:?} (known: devid_ca_path, endorsement_ca_path, check_devid_pub_matches_cert, \
                     check_ak_attributes, check_qualified_signer)"
                ))
            }
        }
    }
    let devid_ca = devid_ca.ok_or("devid_ca_path is required")?;
    let ek_ca = ek_ca.ok_or("endorsement_ca_path is required")?;
    let read = |key: &str, p: &PathBuf| std::fs::read(p).map_err(|e| format!("{key} {}: {e}", p.display()));
    let verifier = DevIdVerifier::new(&read("devid_ca_path", &devid_ca)?, &read("endorsement_ca_path", &ek_ca)?, extra)
        .map_err(|e| e.to_string())?;
    Ok(ServerConfig { trust_domain: trust_domain.to_string(), verifier })
}

/// The plugin's state.
#[derive(Debug, Default)]
pub struct ServerPlugin {
    config: std::sync::Mutex<Option<Arc<ServerConfig>>>,
}

/// gRPC face of [`ServerPlugin`].
#[derive(Debug, Clone, Default)]
pub struct ServerService(pub Arc<ServerPlugin>);

type Outbound = Pin<Box<dyn Stream<Item = Result<AttestResponse, Status>> + Send>>;

fn refuse(e: crypto::devid::DevIdError) -> Status {
    tracing::warn!(reason = %e, "tpm_devid attestation refused");
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl NodeAttestor for ServerService {
    type AttestStream = Outbound;

    async fn attest(&self, req: Request<Streaming<AttestRequest>>) -> Result<Response<Self::AttestStream>, Status> {
        let cfg = self
            .0
            .config
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| Status::failed_precondition("not configured"))?;
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let run = async {
                let payload = match inbound.message().await? {
                    Some(AttestRequest { request: Some(In::Payload(p)) }) if !p.is_empty() => p,
                    _ => return Err(Status::invalid_argument("missing attestation payload")),
                };
                let (challenge, pending) = cfg.verifier.challenge(&payload, now()).map_err(refuse)?;
                tx.send(Ok(AttestResponse { response: Some(Out::Challenge(challenge)) }))
                    .await
                    .map_err(|_| Status::cancelled("stream closed"))?;
                let response = match tokio::time::timeout(RESPONSE_TIMEOUT, inbound.message()).await {
                    Err(_) => return Err(Status::deadline_exceeded("no challenge response in time")),
                    Ok(r) => match r? {
                        Some(AttestRequest { request: Some(In::ChallengeResponse(r)) }) if !r.is_empty() => r,
                        _ => return Err(Status::invalid_argument("missing challenge response")),
                    },
                };
                let attested = pending.verify(&response).map_err(refuse)?;
                let spiffe_id = format!("spiffe://{}{}", cfg.trust_domain, attested.agent_path());
                tracing::info!(agent = %spiffe_id, selectors = ?attested.selectors, "tpm_devid attestation passed");
                let attributes = AgentAttributes { spiffe_id, selector_values: attested.selectors, can_reattest: true };
                tx.send(Ok(AttestResponse { response: Some(Out::AgentAttributes(attributes)) }))
                    .await
                    .map_err(|_| Status::cancelled("stream closed"))?;
                Ok(())
            };
            if let Err(status) = run.await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

fn trust_domain(core: Option<&crate::pb::config::CoreConfiguration>) -> String {
    core.map(|c| c.trust_domain.clone()).unwrap_or_default()
}

#[tonic::async_trait]
impl Config for ServerService {
    async fn configure(&self, req: Request<ConfigureRequest>) -> Result<Response<ConfigureResponse>, Status> {
        let req = req.into_inner();
        let td = trust_domain(req.core_configuration.as_ref());
        let cfg = parse_config(&req.hcl_configuration, &td).map_err(|e| {
            tracing::error!(error = %e, "configuration refused");
            Status::invalid_argument(e)
        })?;
        tracing::info!(trust_domain = %cfg.trust_domain, "configured");
        if let Ok(mut slot) = self.0.config.lock() {
            *slot = Some(Arc::new(cfg));
        }
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(&self, req: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let req = req.into_inner();
        let td = trust_domain(req.core_configuration.as_ref());
        Ok(Response::new(match parse_config(&req.hcl_configuration, &td) {
            Ok(_) => ValidateResponse { valid: true, notes: Vec::new() },
            Err(e) => ValidateResponse { valid: false, notes: vec![e] },
        }))
    }
}
