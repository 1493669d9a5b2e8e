//! Test-only agent NodeAttestor `tpm_devid` (never packaged): the attack SPIRE's server checks do not stop, for
//! the real spire-agent to carry. It runs the genuine TPM half for a DevID key that lives in the TPM (its
//! certificate, `genuine_hcl`'s `devid_cert_path`, is never sent), but presents a DevID certificate for a key
//! that lives in a file (`forged_cert`, `forged_key`) and answers the possession challenge with that file key.
//! The residency proof is about the TPM key; the identity is the file key's: SPIRE's own server accepts it,
//! ours refuses it (`DevIDPub is not the key in the DevID certificate`).
//!
//! plugin_data: `genuine_hcl = "FILE"` (the agent plugin's own config), `forged_cert`, `forged_key` (PEM).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crypto::devid::wire::{AttestationRequest, ChallengeRequest, ChallengeResponse};
use plugin::devid::agent::{answer, begin, parse_config, read_chain, AgentConfig, SERVICE_NAMES};
use plugin::hcl::Value;
use plugin::pb::agent_nodeattestor::node_attestor_server::{NodeAttestor, NodeAttestorServer};
use plugin::pb::agent_nodeattestor::payload_or_challenge_response::Data;
use plugin::pb::agent_nodeattestor::{Challenge, PayloadOrChallengeResponse};
use plugin::pb::config::config_server::{Config, ConfigServer};
use plugin::pb::config::{ConfigureRequest, ConfigureResponse, ValidateRequest, ValidateResponse};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Debug)]
struct Forgery {
    genuine: AgentConfig,
    chain: Vec<Vec<u8>>,
    key: PathBuf,
}

#[derive(Debug, Clone, Default)]
struct Forger(Arc<Mutex<Option<Arc<Forgery>>>>);

fn parse(text: &str) -> anyhow::Result<Forgery> {
    let map = plugin::hcl::parse(text)?;
    let get = |k: &str| match map.iter().find(|(key, _)| key.as_str() == k) {
        Some((_, Value::Str(s))) => Ok(s.clone()),
        _ => anyhow::bail!("{k} (a string) is required"),
    };
    let genuine = parse_config(&std::fs::read_to_string(get("genuine_hcl")?)?).map_err(anyhow::Error::msg)?;
    let chain = read_chain(std::path::Path::new(&get("forged_cert")?)).map_err(anyhow::Error::msg)?;
    Ok(Forgery { genuine, chain, key: get("forged_key")?.into() })
}

/// The file key's signature over the nonce (RSA PKCS#1 v1.5 or ECDSA ASN.1, SHA-256), by openssl.
fn sign_with_file_key(key: &std::path::Path, nonce: &[u8]) -> anyhow::Result<Vec<u8>> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("nonce"), nonce)?;
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(dir.path().join("nonce"))
        .output()?;
    anyhow::ensure!(out.status.success(), "openssl dgst: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out.stdout)
}

type Outbound = Pin<Box<dyn Stream<Item = Result<PayloadOrChallengeResponse, Status>> + Send>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

#[tonic::async_trait]
impl NodeAttestor for Forger {
    type AidAttestationStream = Outbound;

    async fn aid_attestation(&self, req: Request<Streaming<Challenge>>) -> Result<Response<Outbound>, Status> {
        let f =
            self.0.lock().ok().and_then(|c| c.clone()).ok_or_else(|| Status::failed_precondition("not configured"))?;
        let mut inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let run = async {
                let g = f.clone();
                let (json, pending) = tokio::task::spawn_blocking(move || begin(&g.genuine))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
                let mut payload: AttestationRequest = serde_json::from_slice(&json).map_err(internal)?;
                payload.devid_cert = f.chain.clone();
                let payload = serde_json::to_vec(&payload).map_err(internal)?;
                tx.send(Ok(PayloadOrChallengeResponse { data: Some(Data::Payload(payload)) }))
                    .await
                    .map_err(|_| Status::cancelled("closed"))?;
                let Some(challenge) = inbound.message().await? else { return Ok(()) };
                let challenge = challenge.challenge;
                let nonce = serde_json::from_slice::<ChallengeRequest>(&challenge).map_err(internal)?.devid;
                let json = tokio::task::spawn_blocking(move || answer(&pending, &challenge))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
                let mut response: ChallengeResponse = serde_json::from_slice(&json).map_err(internal)?;
                response.devid = sign_with_file_key(&f.key, &nonce).map_err(internal)?;
                let response = serde_json::to_vec(&response).map_err(internal)?;
                tx.send(Ok(PayloadOrChallengeResponse { data: Some(Data::ChallengeResponse(response)) }))
                    .await
                    .map_err(|_| Status::cancelled("closed"))?;
                Ok::<(), Status>(())
            };
            if let Err(status) = run.await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Config for Forger {
    async fn configure(&self, req: Request<ConfigureRequest>) -> Result<Response<ConfigureResponse>, Status> {
        let f = parse(&req.into_inner().hcl_configuration).map_err(|e| Status::invalid_argument(format!("{e:#}")))?;
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Arc::new(f));
        }
        Ok(Response::new(ConfigureResponse {}))
    }

    async fn validate(&self, req: Request<ValidateRequest>) -> Result<Response<ValidateResponse>, Status> {
        let result = parse(&req.into_inner().hcl_configuration);
        Ok(Response::new(ValidateResponse {
            valid: result.is_ok(),
            notes: result.err().map(|e| e.to_string()).into_iter().collect(),
        }))
    }
}

/// Test only: a tpm_devid agent NodeAttestor that sends a forged payload.
#[derive(clap::Parser)]
#[command(name = "forged-devid-agent", version)]
struct Cli {}

fn main() {
    let f = Forger::default();
    plugin::goplugin::plugin_main::<Cli>("NodeAttestor", &SERVICE_NAMES, |router| {
        router.add_service(NodeAttestorServer::new(f.clone())).add_service(ConfigServer::new(f))
    });
}
