//! The hashicorp go-plugin server side, as SPIRE drives it: magic-cookie check, a unix socket, the handshake
//! line `1|1|unix|PATH|grpc|` as the only stdout output, gRPC (h2c) with the broker stream kept open, the
//! controller's Shutdown, a silent stdio stream, gRPC health (`plugin` = SERVING) and SPIRE's private Init.
//!
//! Shared by every plugin of this project (the BundlePublisher and both NodeAttestors): a plugin hands its services
//! to [`serve`] and names them for Init.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::pb::goplugin::grpc_broker_server::{GrpcBroker, GrpcBrokerServer};
use crate::pb::goplugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::pb::goplugin::grpc_stdio_server::{GrpcStdio, GrpcStdioServer};
use crate::pb::goplugin::{ConnInfo, Empty, StdioData};
use crate::pb::init::init_server::{Init, InitServer};
use crate::pb::init::{DeinitRequest, DeinitResponse, InitRequest, InitResponse};

/// What go-plugin prints when a plugin binary is run by hand.
pub const NOT_A_HOST: &str = "This binary is a plugin. These are not meant to be executed directly.\n\
    Please execute the program that consumes these plugins, which will\nload any plugins automatically\n";

/// Why the plugin runtime stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The socket could not be created.
    #[error("cannot create the plugin socket {path}: {cause}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// The error.
        cause: std::io::Error,
    },
    /// The handshake line could not be written.
    #[error("cannot write the handshake to stdout: {0}")]
    Stdout(std::io::Error),
    /// The gRPC server failed.
    // tonic says the cause of a transport error only as its source: the whole chain is said here.
    #[error("gRPC server: {}", common::report::error_chain(.0))]
    Grpc(tonic::transport::Error),
}

/// True when the host set the magic cookie `<cookie>=<cookie>`.
pub fn launched_as(cookie: &str) -> bool {
    std::env::var(cookie).is_ok_and(|v| v == cookie)
}

/// The host's broker address for host services (`service_id` 1), once it arrived.
#[derive(Debug, Clone, Default)]
pub struct Broker(Arc<Mutex<Option<ConnInfo>>>);

impl Broker {
    /// The ConnInfo for host services, if the host sent it.
    pub fn host_services(&self) -> Option<ConnInfo> {
        common::sync::lock(&self.0).clone()
    }
}

struct BrokerSvc(Broker);

type Pending<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcBroker for BrokerSvc {
    type StartStreamStream = Pending<ConnInfo>;

    async fn start_stream(
        &self,
        req: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut incoming = req.into_inner();
        let slot = self.0 .0.clone();
        tokio::spawn(async move {
            while let Ok(Some(info)) = incoming.message().await {
                tracing::debug!(service_id = info.service_id, network = %info.network, "broker connection info");
                if info.service_id == 1 {
                    *common::sync::lock(&slot) = Some(info);
                }
            }
        });
        // Kept open for the life of the process: ending it would end the host's broker.
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}

struct ControllerSvc(tokio::sync::mpsc::Sender<()>);

#[tonic::async_trait]
impl GrpcController for ControllerSvc {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::info!("host asked the plugin to shut down");
        let _ = self.0.try_send(());
        Ok(Response::new(Empty {}))
    }
}

struct StdioSvc;

#[tonic::async_trait]
impl GrpcStdio for StdioSvc {
    type StreamStdioStream = Pending<StdioData>;

    async fn stream_stdio(&self, _: Request<Empty>) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
}

struct InitSvc(Vec<String>);

#[tonic::async_trait]
impl Init for InitSvc {
    async fn init(&self, req: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        tracing::debug!(host_services = ?req.get_ref().host_service_names, "init");
        Ok(Response::new(InitResponse { plugin_service_names: self.0.clone() }))
    }

    async fn deinit(&self, _: Request<DeinitRequest>) -> Result<Response<DeinitResponse>, Status> {
        tracing::debug!("deinit");
        Ok(Response::new(DeinitResponse {}))
    }
}

fn socket_path() -> PathBuf {
    let dir = std::env::var_os("PLUGIN_UNIX_SOCKET_DIR")
        .or_else(|| std::env::var_os("TMPDIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    dir.join(format!("plugin{}{:09}", std::process::id(), nanos))
}

/// Serves the plugin until the host calls Shutdown (or the process is killed). `plugin_services` are the
/// fully-qualified service names Init reports (the plugin interface and Config); `add` registers their gRPC
/// servers on the router.
pub async fn serve(
    plugin_services: &[&str],
    add: impl FnOnce(tonic::transport::server::Router) -> tonic::transport::server::Router,
    broker: Broker,
) -> Result<(), ServeError> {
    let path = socket_path();
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|source| ServeError::Socket { path: path.clone(), cause: source })?;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_service_status("plugin", tonic_health::ServingStatus::Serving).await;
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel(1);
    // An interactive Ctrl-C reaches the whole process group; the host decides when the plugin ends.
    if let Ok(mut int) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()) {
        tokio::spawn(async move { while int.recv().await.is_some() {} });
    }
    let router = tonic::transport::Server::builder()
        .add_service(health_svc)
        .add_service(GrpcBrokerServer::new(BrokerSvc(broker)))
        .add_service(GrpcControllerServer::new(ControllerSvc(stop_tx)))
        .add_service(GrpcStdioServer::new(StdioSvc))
        .add_service(InitServer::new(InitSvc(plugin_services.iter().map(|s| s.to_string()).collect())));
    let router = add(router);
    // Listening already: only now tell the host where.
    let mut out = std::io::stdout().lock();
    writeln!(out, "1|1|unix|{}|grpc|", path.display()).and_then(|()| out.flush()).map_err(ServeError::Stdout)?;
    drop(out);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    // go-plugin stops its gRPC server outright on Shutdown (the broker and stdio streams never end on their
    // own): answer, let the reply flush, then stop.
    let result = tokio::select! {
        r = router.serve_with_incoming(incoming) => r,
        _ = async {
            let _ = stop_rx.recv().await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        } => Ok(()),
    };
    let _ = std::fs::remove_file(&path);
    result.map_err(ServeError::from)
}

/// The whole life of a plugin binary that has no other mode: refuses to run unless a host launched it with the
/// magic cookie `cookie` (its command line `Cli`, which takes no argument, answers `--help` and `--version`;
/// anything else exits 2 saying what the binary is), logs hclog JSON to stderr, serves until the host's Shutdown,
/// exits non-zero on failure.
pub fn plugin_main<Cli: clap::Parser>(
    cookie: &str,
    plugin_services: &[&str],
    add: impl FnOnce(tonic::transport::server::Router) -> tonic::transport::server::Router,
) {
    if !launched_as(cookie) {
        Cli::parse();
        eprint!("{NOT_A_HOST}");
        std::process::exit(2);
    }
    serve_plugin(Cli::command().get_name(), plugin_services, add);
}

/// A plugin's life once a host launched it: hclog JSON on stderr, serving until the host's Shutdown; exits 1,
/// logging why, on failure. Also the sign binary's plugin mode (it has a command line mode besides).
pub fn serve_plugin(
    bin: &str,
    plugin_services: &[&str],
    add: impl FnOnce(tonic::transport::server::Router) -> tonic::transport::server::Router,
) {
    crate::hclog::init();
    // Before any thread starts: libtss2's own stderr records would reach SPIRE's log beside our errors.
    common::logging::quiet_tss_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{bin}: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(plugin_services, add, Broker::default())) {
        tracing::error!(error = %common::report::error_chain(&e), "plugin stopped");
        std::process::exit(1);
    }
}

impl From<tonic::transport::Error> for ServeError {
    fn from(e: tonic::transport::Error) -> Self {
        ServeError::Grpc(e)
    }
}
