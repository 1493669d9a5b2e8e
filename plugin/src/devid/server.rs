//! `spire-server-nodeattestor-tpm-devid`: the server side of SPIRE's `tpm_devid`, as a NodeAttestor plugin.
//!
//! Configuration is SPIRE's (`devid_ca_path`, `endorsement_ca_path`) plus four switches for the checks SPIRE
//! omits, all on by default: `check_devid_pub_matches_cert`, `check_ak_attributes`, `check_qualified_signer`,
//! `check_devid_attributes` (see `crypto::devid`); and what SPIRE's plugin does not have ([`super::watched`]): `devid_crl_path`, the DevID CA's
//! CRL (a revoked DevID is refused before any challenge); `endorsement_hashes_path`, an inventory of EK hashes
//! (`sha256:<hex> [name]`), which admits an EK without a certificate (a virtual TPM's); and `ek_policy` (`ca`,
//! `hash`, `ca_or_hash`, `ca_and_hash`; by default whichever of the two files is set, `ca_or_hash` with both).
//! Selectors: SPIRE's, then `ek:hash:`, the TPM's manufacturer, model and version from a verified EK
//! certificate, and `ek:name:` from the inventory. `Attest` takes one payload, sends one challenge, checks one
//! response and returns the agent ID `spiffe://<td>/spire/agent/tpm_devid/<sha1 of the DevID leaf>` with SPIRE's
//! selectors and `can_reattest = true`. Refusals are `InvalidArgument` with the failed check's reason.

use std::path::PathBuf;
use std::sync::Arc;

use crypto::devid::chain::parse_pem_bundle;
use crypto::devid::ek::{EkMode, EkPolicy, Inventory};
use crypto::devid::quote::{PcrPolicy, PcrSelection, RawPolicy};
use crypto::devid::{DevIdVerifier, ExtraChecks, QuotePolicy};
use tonic::{Request, Response, Status, Streaming};

use super::watched::{CrlFile, HashesFile};
use crate::config::{self, read_file, ConfigError, ConfigService, ConfigSlot, PluginConfig};
use crate::pb::config::CoreConfiguration;
use crate::pb::server_nodeattestor::attest_request::Request as In;
use crate::pb::server_nodeattestor::attest_response::Response as Out;
use crate::pb::server_nodeattestor::node_attestor_server::NodeAttestor;
use crate::pb::server_nodeattestor::{AgentAttributes, AttestRequest, AttestResponse};
use crate::stream::{spawn_exchange, Closed, Outbound};

/// The services Init reports.
pub const SERVICE_NAMES: [&str; 2] =
    ["spire.plugin.server.nodeattestor.v1.NodeAttestor", "spire.service.common.config.v1.Config"];

/// How long the server waits for the agent's challenge response.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A checked server configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The trust domain (from SPIRE's core configuration).
    pub trust_domain: crypto::TrustDomain,
    /// The verifier with its CA sets and EK policy (its inventory as first read).
    pub verifier: Arc<DevIdVerifier>,
    /// The verifier with the inventory of `endorsement_hashes_path` as it is now.
    pub hashes: Option<Arc<HashesFile>>,
    /// The DevID CA's CRL, when `devid_crl_path` is set.
    pub crl: Option<Arc<CrlFile>>,
}

impl ServerConfig {
    /// The verifier in force (the inventory read again if it changed).
    pub fn verifier(&self) -> Arc<DevIdVerifier> {
        match &self.hashes {
            Some(file) => file.current(),
            None => self.verifier.clone(),
        }
    }
}

/// The server plugin's `plugin_data` as written: SPIRE's two keys, and the switches for the checks SPIRE omits
/// (each on unless set to false).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    devid_ca_path: Option<PathBuf>,
    endorsement_ca_path: Option<PathBuf>,
    check_devid_pub_matches_cert: Option<bool>,
    check_ak_attributes: Option<bool>,
    check_qualified_signer: Option<bool>,
    check_devid_attributes: Option<bool>,
    devid_crl_path: Option<PathBuf>,
    endorsement_hashes_path: Option<PathBuf>,
    ek_policy: Option<String>,
    pcr_selection: Option<String>,
    pcr_policy: Option<PathBuf>,
    require_pcr_policy: Option<bool>,
}

/// Parses the plugin configuration and loads both CA bundles.
pub fn parse_config(text: &str, trust_domain: &str) -> Result<ServerConfig, ConfigError> {
    let trust_domain: crypto::TrustDomain = trust_domain
        .parse()
        .map_err(|e: crypto::BadTrustDomain| ConfigError::Value { key: "trust_domain".into(), cause: Box::new(e) })?;
    let raw: Raw = config::decode(text)?;
    let (devid_ca, ek_ca) = (
        config::path("devid_ca_path", raw.devid_ca_path)?,
        config::path("endorsement_ca_path", raw.endorsement_ca_path)?,
    );
    let mut extra = ExtraChecks::default();
    if let Some(on) = raw.check_devid_pub_matches_cert {
        extra.devid_pub_matches_certificate = on;
    }
    if let Some(on) = raw.check_ak_attributes {
        extra.ak_attributes = on;
    }
    if let Some(on) = raw.check_qualified_signer {
        extra.qualified_signer = on;
    }
    if let Some(on) = raw.check_devid_attributes {
        extra.devid_attributes = on;
    }
    let devid_ca = devid_ca.ok_or(ConfigError::Missing("devid_ca_path"))?;
    let hashes_path = config::path("endorsement_hashes_path", raw.endorsement_hashes_path)?;
    if ek_ca.is_none() && hashes_path.is_none() {
        return Err(ConfigError::Missing("endorsement_ca_path"));
    }
    let devid_ca_pem = read_file("devid_ca_path", &devid_ca)?;
    let anchors = match &ek_ca {
        Some(path) => parse_pem_bundle(&read_file("endorsement_ca_path", path)?)
            .map_err(|e| ConfigError::file("endorsement_ca_path", path, e))?,
        None => Vec::new(),
    };
    if ek_ca.is_some() && anchors.is_empty() {
        return Err(ConfigError::invalid("endorsement_ca_path", "no certificate in the file"));
    }
    let mode = match raw.ek_policy.as_deref() {
        Some(m) => Some(m.parse::<EkMode>().map_err(|e| ConfigError::invalid("ek_policy", e))?),
        None => None,
    };
    // The inventory itself is read below, and again whenever it changes; an empty one stands in to check the mode.
    let policy = EkPolicy::new(anchors, hashes_path.as_ref().map(|_| Inventory::default()), mode)
        .map_err(|e| ConfigError::Value { key: "ek_policy".into(), cause: Box::new(e) })?;
    let mut verifier = DevIdVerifier::with_ek_policy(&devid_ca_pem, policy, extra)
        .map_err(|e| ConfigError::Value { key: "devid_ca_path".into(), cause: Box::new(e) })?;
    if let Some(quote) = quote_policy(raw.pcr_selection, raw.pcr_policy, raw.require_pcr_policy)? {
        // Only a restricted AK proves a quote: an unrestricted one signs any bytes, TPMS_ATTEST forged included.
        if !extra.ak_attributes {
            return Err(ConfigError::invalid(
                "check_ak_attributes",
                "must stay true with pcr_selection: a quote proves the PCRs only when the AK is restricted",
            ));
        }
        verifier = verifier.with_quote(quote);
    }
    let hashes = match hashes_path {
        Some(path) => Some(Arc::new(HashesFile::inventory(&path, verifier.clone())?)),
        None => None,
    };
    let crl = match config::path("devid_crl_path", raw.devid_crl_path)? {
        Some(path) => Some(Arc::new(CrlFile::crl(&path, verifier.devid_anchors())?)),
        None => None,
    };
    let verifier = Arc::new(hashes.as_ref().map_or(verifier, |h| (*h.current()).clone()));
    Ok(ServerConfig { trust_domain, verifier, hashes, crl })
}

/// `pcr_selection`, `pcr_policy` and `require_pcr_policy`: the boot state asked of our agents.
fn quote_policy(
    selection: Option<String>,
    policy: Option<PathBuf>,
    require: Option<bool>,
) -> Result<Option<QuotePolicy>, ConfigError> {
    let require = require.unwrap_or(false);
    let Some(selection) = selection else {
        if policy.is_some() || require {
            return Err(ConfigError::invalid("pcr_selection", "pcr_policy and require_pcr_policy need pcr_selection"));
        }
        return Ok(None);
    };
    let selection: PcrSelection = selection.parse().map_err(|e: String| ConfigError::invalid("pcr_selection", e))?;
    let policy = match config::path("pcr_policy", policy)? {
        Some(path) => {
            let text = read_file("pcr_policy", &path)?;
            let raw: RawPolicy =
                serde_yaml_ng::from_slice(&text).map_err(|e| ConfigError::file("pcr_policy", &path, e))?;
            PcrPolicy::new(raw, &selection).map_err(|e| ConfigError::file("pcr_policy", &path, e))?
        }
        None if require => return Err(ConfigError::invalid("require_pcr_policy", "needs pcr_policy")),
        None => PcrPolicy::default(),
    };
    if require && policy.is_empty() {
        return Err(ConfigError::invalid("pcr_policy", "names no PCR value set, and require_pcr_policy is set"));
    }
    Ok(Some(QuotePolicy { selection, policy, require }))
}

impl PluginConfig for ServerConfig {
    fn load(hcl: &str, core: Option<&CoreConfiguration>) -> Result<(Self, Vec<String>), ConfigError> {
        let trust_domain = core.map(|c| c.trust_domain.as_str()).unwrap_or_default();
        Ok((parse_config(hcl, trust_domain)?, Vec::new()))
    }

    fn log_configured(&self) {
        let crl = self.crl.as_ref().map(|c| c.current());
        tracing::info!(
            trust_domain = %self.trust_domain,
            ek_policy = %self.verifier.ek_policy().mode(),
            crl_issuer = crl.as_ref().map(|c| c.issuer()),
            crl_revoked = crl.as_ref().map(|c| c.len()),
            "configured"
        );
    }
}

/// The plugin's state.
#[derive(Debug, Default)]
pub struct ServerPlugin {
    config: Arc<ConfigSlot<ServerConfig>>,
    /// What certificate validity is judged by (the system's; a test's manual one).
    clock: common::clock::Clock,
}

impl ServerPlugin {
    /// A plugin judging certificate validity by `clock` (tests move a manual one instead of waiting).
    pub fn with_clock(clock: common::clock::Clock) -> ServerPlugin {
        ServerPlugin { clock, ..ServerPlugin::default() }
    }

    /// SPIRE's Config service for this plugin.
    pub fn config_service(&self) -> ConfigService<ServerConfig> {
        ConfigService(self.config.clone())
    }
}

/// gRPC face of [`ServerPlugin`].
#[derive(Debug, Clone, Default)]
pub struct ServerService(pub Arc<ServerPlugin>);

/// Why an Attest stream ended without the agent's attributes.
#[derive(Debug, thiserror::Error)]
enum AttestFailure {
    #[error("missing attestation payload")]
    NoPayload,
    #[error("missing challenge response")]
    NoResponse,
    #[error("no challenge response in time")]
    Timeout,
    #[error("stream closed")]
    Closed(Closed),
    /// The payload or the response failed a check: the agent proved nothing.
    #[error("{0}")]
    Refused(crypto::devid::DevIdError),
    /// The stream itself failed (SPIRE's status, passed on).
    #[error("{}", .0.message())]
    Stream(Status),
}

impl From<Status> for AttestFailure {
    fn from(s: Status) -> AttestFailure {
        AttestFailure::Stream(s)
    }
}

impl From<Closed> for AttestFailure {
    fn from(c: Closed) -> AttestFailure {
        AttestFailure::Closed(c)
    }
}

/// The one conversion to SPIRE: what the agent sent (or failed to send) is INVALID_ARGUMENT, with the reason
/// SPIRE logs; a refusal is also logged here.
impl From<AttestFailure> for Status {
    fn from(e: AttestFailure) -> Status {
        match e {
            AttestFailure::Stream(status) => status,
            AttestFailure::Timeout => Status::deadline_exceeded(e.to_string()),
            AttestFailure::Closed(_) => Status::cancelled(e.to_string()),
            AttestFailure::Refused(ref reason) => {
                tracing::warn!(%reason, "tpm_devid attestation refused");
                Status::invalid_argument(e.to_string())
            }
            AttestFailure::NoPayload | AttestFailure::NoResponse => Status::invalid_argument(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl NodeAttestor for ServerService {
    type AttestStream = Outbound<AttestResponse>;

    async fn attest(&self, req: Request<Streaming<AttestRequest>>) -> Result<Response<Self::AttestStream>, Status> {
        let cfg = self.0.config.get()?;
        let clock = self.0.clock.clone();
        let mut inbound = req.into_inner();
        Ok(Response::new(spawn_exchange(|tx| async move {
            let payload = match inbound.message().await? {
                Some(AttestRequest { request: Some(In::Payload(p)) }) if !p.is_empty() => p,
                _ => return Err(AttestFailure::NoPayload),
            };
            let now = clock.now();
            let (challenge, pending) = cfg.verifier().challenge(&payload, now).map_err(AttestFailure::Refused)?;
            if let Some(crl) = &cfg.crl {
                crl.current().check(pending.leaf(), now).map_err(AttestFailure::Refused)?;
            }
            tx.send(AttestResponse { response: Some(Out::Challenge(challenge)) }).await?;
            let response = match tokio::time::timeout(RESPONSE_TIMEOUT, inbound.message()).await {
                Err(_) => return Err(AttestFailure::Timeout),
                Ok(r) => match r? {
                    Some(AttestRequest { request: Some(In::ChallengeResponse(r)) }) if !r.is_empty() => r,
                    _ => return Err(AttestFailure::NoResponse),
                },
            };
            let attested = pending.verify(&response).map_err(AttestFailure::Refused)?;
            let spiffe_id = format!("spiffe://{}{}", cfg.trust_domain, attested.agent_path());
            tracing::info!(agent = %spiffe_id, selectors = ?attested.selectors, "tpm_devid attestation passed");
            let attributes = AgentAttributes { spiffe_id, selector_values: attested.selectors, can_reattest: true };
            tx.send(AttestResponse { response: Some(Out::AgentAttributes(attributes)) }).await?;
            Ok(())
        })))
    }
}
