//! A go-plugin host that loads a plugin exactly as SPIRE does: magic-cookie environment, the stdout handshake
//! line, gRPC over the plugin's unix socket, the broker stream with host-service ConnInfo (id 1), the stdio
//! stream, SPIRE's Init, Config, the plugin interface, Deinit, GRPCController/Shutdown and process exit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use hyper_util::rt::TokioIo;
use plugin::pb::config::config_client::ConfigClient;
use plugin::pb::config::{ConfigureRequest, CoreConfiguration, ValidateRequest, ValidateResponse};
use plugin::pb::goplugin::grpc_broker_client::GrpcBrokerClient;
use plugin::pb::goplugin::grpc_controller_client::GrpcControllerClient;
use plugin::pb::goplugin::grpc_stdio_client::GrpcStdioClient;
use plugin::pb::goplugin::{ConnInfo, Empty};
use plugin::pb::init::init_client::InitClient;
use plugin::pb::init::{DeinitRequest, InitRequest};
use tonic::transport::{Channel, Endpoint};

use crate::process::bin_path;

/// The host services a SPIRE server offers in Init.
pub const SERVER_HOST_SERVICES: [&str; 3] = [
    "spire.hostservice.server.identityprovider.v1.IdentityProvider",
    "spire.hostservice.server.agentstore.v1.AgentStore",
    "spire.hostservice.common.metrics.v1.Metrics",
];

/// A loaded plugin.
#[derive(Debug)]
pub struct PluginHost {
    /// The runtime the gRPC calls run on.
    pub runtime: tokio::runtime::Runtime,
    child: Option<Child>,
    /// The gRPC connection to the plugin.
    pub channel: Channel,
    /// The handshake line as printed.
    pub handshake: String,
    /// Everything the plugin wrote to stdout after the handshake.
    pub stdout_rest: Arc<Mutex<Vec<String>>>,
    /// The plugin's stderr lines.
    pub stderr: Arc<Mutex<Vec<String>>>,
    broker: Option<tokio::sync::mpsc::Sender<ConnInfo>>,
}

impl PluginHost {
    /// Launches `bin` with the magic cookie `cookie=cookie` and SPIRE's go-plugin environment, reads the
    /// handshake (60 s at most, as go-plugin allows), dials, opens the broker and stdio streams, and sends the
    /// host-services ConnInfo.
    /// The plugin gets neither `RUST_LOG` nor `TSS2_LOG`, as under an operator's SPIRE: what it logs is what an
    /// operator reads.
    pub fn launch(bin: &str, cookie: &str) -> anyhow::Result<PluginHost> {
        let path = bin_path(bin)?;
        let mut child = Command::new(&path)
            .env_remove("RUST_LOG")
            .env_remove("TSS2_LOG")
            .env(cookie, cookie)
            .env("PLUGIN_MIN_PORT", "10000")
            .env("PLUGIN_MAX_PORT", "25000")
            .env("PLUGIN_PROTOCOL_VERSIONS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr_pipe = child.stderr.take().context("stderr")?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push(line);
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout_rest = Arc::new(Mutex::new(Vec::new()));
        let rest = stdout_rest.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            if let Some(first) = lines.next() {
                let _ = tx.send(first);
            }
            for line in lines {
                if let Ok(mut r) = rest.lock() {
                    r.push(line);
                }
            }
        });
        let handshake = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "no handshake line within 60 s; stderr: {:?}",
                    stderr.lock().map(|s| s.clone()).unwrap_or_default()
                );
            }
        };
        // go-plugin: TrimSpace, split on '|': core version, app version, network, address, protocol[, cert].
        let fields: Vec<&str> = handshake.trim().split('|').collect();
        ensure!(fields.len() >= 5, "unrecognized handshake {handshake:?}");
        ensure!(fields[0] == "1" && fields[1] == "1", "incompatible versions in {handshake:?}");
        ensure!(fields[2] == "unix" && fields[4] == "grpc", "not unix+grpc: {handshake:?}");
        ensure!(
            fields.get(5).is_none_or(|c| c.len() <= 50),
            "a server certificate was sent; SPIRE runs without AutoMTLS"
        );
        let socket = PathBuf::from(fields[3]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let channel = runtime.block_on(async {
            Endpoint::from_static("http://plugin")
                .connect_with_connector(tower::service_fn(move |_| {
                    let socket = socket.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
                }))
                .await
        })?;
        let mut host =
            PluginHost { runtime, child: Some(child), channel, handshake, stdout_rest, stderr, broker: None };
        let (btx, brx) = tokio::sync::mpsc::channel(4);
        let ch = host.channel.clone();
        host.runtime.block_on(async {
            let stream = tokio_stream::wrappers::ReceiverStream::new(brx);
            let mut broker = GrpcBrokerClient::new(ch.clone());
            let resp = broker.start_stream(stream).await?;
            let mut inbound = resp.into_inner();
            tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
            let stdio = GrpcStdioClient::new(ch).stream_stdio(Empty {}).await?;
            let mut out = stdio.into_inner();
            tokio::spawn(async move { while let Ok(Some(_)) = out.message().await {} });
            btx.send(ConnInfo {
                service_id: 1,
                network: "unix".into(),
                address: "/tmp/plugin-host-services".into(),
                knock: None,
            })
            .await
            .context("broker stream closed")?;
            anyhow::Ok(())
        })?;
        host.broker = Some(btx);
        Ok(host)
    }

    /// SPIRE's Init with the server's host services; returns the plugin's service names.
    pub fn init(&self) -> anyhow::Result<Vec<String>> {
        let ch = self.channel.clone();
        let resp =
            self.runtime.block_on(InitClient::new(ch).init(InitRequest {
                host_service_names: SERVER_HOST_SERVICES.iter().map(|s| s.to_string()).collect(),
            }))?;
        Ok(resp.into_inner().plugin_service_names)
    }

    /// Config/Validate.
    pub fn validate(&self, hcl: &str, trust_domain: &str) -> Result<ValidateResponse, tonic::Status> {
        let ch = self.channel.clone();
        self.runtime
            .block_on(ConfigClient::new(ch).validate(ValidateRequest {
                core_configuration: Some(CoreConfiguration { trust_domain: trust_domain.into() }),
                hcl_configuration: hcl.into(),
            }))
            .map(|r| r.into_inner())
    }

    /// Config/Configure.
    pub fn configure(&self, hcl: &str, trust_domain: &str) -> Result<(), tonic::Status> {
        let ch = self.channel.clone();
        self.runtime
            .block_on(ConfigClient::new(ch).configure(ConfigureRequest {
                core_configuration: Some(CoreConfiguration { trust_domain: trust_domain.into() }),
                hcl_configuration: hcl.into(),
            }))
            .map(|_| ())
    }

    /// BundlePublisher/PublishBundle with `bundle`.
    pub fn publish_bundle(&self, bundle: Option<plugin::pb::types::Bundle>) -> Result<(), tonic::Status> {
        use plugin::pb::bundlepublisher::bundle_publisher_client::BundlePublisherClient;
        use plugin::pb::bundlepublisher::PublishBundleRequest;
        let ch = self.channel.clone();
        self.runtime
            .block_on(BundlePublisherClient::new(ch).publish_bundle(PublishBundleRequest { bundle }))
            .map(|_| ())
    }

    /// Deinit, then GRPCController/Shutdown; waits for the process to exit (2 s, as go-plugin does) and
    /// returns its exit code.
    pub fn unload(mut self) -> anyhow::Result<i32> {
        let ch = self.channel.clone();
        self.runtime.block_on(InitClient::new(ch.clone()).deinit(DeinitRequest {}))?;
        self.broker = None; // the host ends its side of the broker stream
        let _ = self.runtime.block_on(GrpcControllerClient::new(ch).shutdown(Empty {}));
        let mut child = self.child.take().context("no child")?;
        match crate::wait::wait_until("the plugin to exit gracefully", Duration::from_secs(2), || Ok(child.try_wait()?))
        {
            Ok(status) => Ok(status.code().unwrap_or(-1)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Agent NodeAttestor/AidAttestation: opens the stream as SPIRE's agent does (sending nothing) and returns the
    /// plugin's payload.
    pub fn aid_attestation(&self) -> Result<(AgentSession, Vec<u8>), tonic::Status> {
        use plugin::pb::agent_nodeattestor::node_attestor_client::NodeAttestorClient;
        use plugin::pb::agent_nodeattestor::payload_or_challenge_response::Data;
        let ch = self.channel.clone();
        self.runtime.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let mut inbound = NodeAttestorClient::new(ch)
                .aid_attestation(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            match inbound.message().await? {
                Some(m) => match m.data {
                    Some(Data::Payload(p)) if !p.is_empty() => Ok((AgentSession { tx, inbound }, p)),
                    _ => Err(tonic::Status::internal("plugin response missing attestation payload")),
                },
                None => Err(tonic::Status::internal("plugin closed stream before returning attestation data")),
            }
        })
    }

    /// Sends the server's challenge to the agent plugin and returns its challenge response.
    pub fn agent_answer(&self, session: &mut AgentSession, challenge: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
        use plugin::pb::agent_nodeattestor::payload_or_challenge_response::Data;
        use plugin::pb::agent_nodeattestor::Challenge;
        self.runtime.block_on(async {
            session
                .tx
                .send(Challenge { challenge })
                .await
                .map_err(|_| tonic::Status::internal("plugin closed stream before handling the challenge"))?;
            match session.inbound.message().await? {
                Some(m) => match m.data {
                    Some(Data::ChallengeResponse(r)) if !r.is_empty() => Ok(r),
                    _ => Err(tonic::Status::internal("plugin response missing challenge response")),
                },
                None => Err(tonic::Status::internal("plugin closed stream before handling the challenge")),
            }
        })
    }

    /// Server NodeAttestor/Attest: sends the agent's payload; returns the challenge (or the refusal).
    pub fn attest_begin(&self, payload: Vec<u8>) -> Result<(ServerSession, Vec<u8>), tonic::Status> {
        use plugin::pb::server_nodeattestor::attest_request::Request as In;
        use plugin::pb::server_nodeattestor::attest_response::Response as Out;
        use plugin::pb::server_nodeattestor::node_attestor_client::NodeAttestorClient;
        use plugin::pb::server_nodeattestor::AttestRequest;
        let ch = self.channel.clone();
        self.runtime.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(AttestRequest { request: Some(In::Payload(payload)) })
                .await
                .map_err(|_| tonic::Status::internal("request stream closed"))?;
            let mut inbound =
                NodeAttestorClient::new(ch).attest(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
            match inbound.message().await? {
                Some(m) => match m.response {
                    Some(Out::Challenge(c)) => Ok((ServerSession { tx, inbound }, c)),
                    other => Err(tonic::Status::internal(format!("expected a challenge, got {other:?}"))),
                },
                None => Err(tonic::Status::internal("server plugin closed the stream")),
            }
        })
    }

    /// Sends the agent's challenge response; returns the agent's attributes (or the refusal).
    pub fn attest_finish(
        &self,
        session: &mut ServerSession,
        response: Vec<u8>,
    ) -> Result<plugin::pb::server_nodeattestor::AgentAttributes, tonic::Status> {
        use plugin::pb::server_nodeattestor::attest_request::Request as In;
        use plugin::pb::server_nodeattestor::attest_response::Response as Out;
        use plugin::pb::server_nodeattestor::AttestRequest;
        self.runtime.block_on(async {
            session
                .tx
                .send(AttestRequest { request: Some(In::ChallengeResponse(response)) })
                .await
                .map_err(|_| tonic::Status::internal("request stream closed"))?;
            match session.inbound.message().await? {
                Some(m) => match m.response {
                    Some(Out::AgentAttributes(a)) => Ok(a),
                    other => Err(tonic::Status::internal(format!("expected agent attributes, got {other:?}"))),
                },
                None => Err(tonic::Status::internal("server plugin closed the stream")),
            }
        })
    }

    /// The plugin's stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An open AidAttestation stream (agent side).
#[derive(Debug)]
pub struct AgentSession {
    tx: tokio::sync::mpsc::Sender<plugin::pb::agent_nodeattestor::Challenge>,
    inbound: tonic::Streaming<plugin::pb::agent_nodeattestor::PayloadOrChallengeResponse>,
}

/// An open Attest stream (server side).
#[derive(Debug)]
pub struct ServerSession {
    tx: tokio::sync::mpsc::Sender<plugin::pb::server_nodeattestor::AttestRequest>,
    inbound: tonic::Streaming<plugin::pb::server_nodeattestor::AttestResponse>,
}

/// The three messages of one relayed `tpm_devid` exchange and its outcome.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Agent to server.
    pub payload: Vec<u8>,
    /// Server to agent.
    pub challenge: Vec<u8>,
    /// Agent to server.
    pub response: Vec<u8>,
    /// What the server plugin returned.
    pub attributes: plugin::pb::server_nodeattestor::AgentAttributes,
}

/// Which side refused a relayed exchange.
#[derive(Debug)]
pub enum RelayError {
    /// The agent plugin failed.
    Agent(tonic::Status),
    /// The server plugin refused.
    Server(tonic::Status),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Agent(s) => write!(f, "agent plugin: {:?}: {}", s.code(), s.message()),
            RelayError::Server(s) => write!(f, "server plugin: {:?}: {}", s.code(), s.message()),
        }
    }
}

impl std::error::Error for RelayError {}

/// Relays one attestation between a loaded agent NodeAttestor and a loaded server NodeAttestor, as SPIRE's agent
/// and server do between them: payload, challenge, challenge response, attributes.
pub fn relay(agent: &PluginHost, server: &PluginHost) -> Result<Exchange, RelayError> {
    let (mut a, payload) = agent.aid_attestation().map_err(RelayError::Agent)?;
    let (mut s, challenge) = server.attest_begin(payload.clone()).map_err(RelayError::Server)?;
    let response = agent.agent_answer(&mut a, challenge.clone()).map_err(RelayError::Agent)?;
    let attributes = server.attest_finish(&mut s, response.clone()).map_err(RelayError::Server)?;
    Ok(Exchange { payload, challenge, response, attributes })
}

/// A SPIRE bundle message for trust domain `td` carrying the certificates of `pem`.
pub fn spire_bundle(td: &str, pem: &str, sequence: u64) -> anyhow::Result<plugin::pb::types::Bundle> {
    let parsed = crypto::bundle::Bundle::parse(pem)?;
    Ok(plugin::pb::types::Bundle {
        trust_domain: td.into(),
        x509_authorities: parsed
            .certificates()
            .iter()
            .map(|der| plugin::pb::types::X509Certificate { asn1: der.clone(), tainted: false })
            .collect(),
        jwt_authorities: Vec::new(),
        refresh_hint: 0,
        sequence_number: sequence,
        wit_authorities: Vec::new(),
    })
}
