//! The enrollment CA's HTTPS API and `run`.
//!
//! `POST /v1/enroll` takes an [`EnrollRequest`]: the EK is checked against the EK policy, the node's approval is
//! found (the certificate it renews, a one-time token, or its EK's inventory name, in that order), and the answer
//! is a challenge in a session of its own. `POST /v1/enroll/answer` takes the [`EnrollAnswer`] of that session
//! (once: the session is gone afterwards), checks every proof, and issues the certificate (serial reserved, TPM
//! signature, stored: `db`). `GET /v1/ca` answers the CA chain, `GET /v1/crl` the current CRL.
//!
//! Invariants: no certificate is signed before every proof of its session passed; the name in it is the approved
//! one; a session answers once and within [`SESSION_TTL`]; the TPM and the database are used off the event loop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use der::{Decode, Encode, EncodePem};
use http::{Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use x509_cert::Certificate;

use super::config::DevIdCaConfig;
use super::db::{Approval, Db, Reservation};
use super::metrics::CaMetrics;
use super::refusal::Refusal;
use super::sessions::Sessions;
use super::x509::{self, CaKey};
use crate::server::http::{self as server, PeerSlots, Reply, Request, ServerLimits};
use common::clock::Clock;
use crypto::devid::chain::{self, Cert};
use crypto::devid::ek::{EkPolicy, Inventory};
use crypto::devid::enroll::{self, Begun, EnrollAnswer, EnrollRequest, Enrolled};

pub use super::sessions::SESSION_TTL;
/// Largest request body.
const MAX_BODY: usize = enroll::MAX_MESSAGE;
/// How far back a certificate's notBefore is set, for nodes whose clocks lag the CA's.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// How often the CRL task looks for new revocations.
const CRL_POLL: Duration = Duration::from_secs(1);

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A file of the config could not be read or used.
    #[error("{what} {}", path.display())]
    File {
        /// What it is.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `ca-cert` is not the TPM key's certificate.
    #[error("ca-cert {0}: its first certificate is not for the CA key in the TPM (provision wrote another?)")]
    NotOurKey(std::path::PathBuf),
    /// The EK policy cannot be built.
    #[error(transparent)]
    EkPolicy(#[from] crypto::devid::ek::EkPolicyError),
    /// The database could not be opened.
    #[error("database")]
    Db(#[from] super::db::DbError),
    /// No listener could be bound.
    #[error(transparent)]
    Listen(#[from] crate::server::tls::ListenError),
    /// The TLS identity is unusable.
    #[error(transparent)]
    Tls(#[from] crate::server::tls::TlsError),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The first CRL could not be signed or written.
    #[error("the first CRL: {0}")]
    Crl(String),
}

fn file_error(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> RunError {
    let path = path.to_owned();
    move |source| RunError::File { what, path, source }
}

/// The CA chain of `ca-cert` (its own certificate first).
pub fn load_chain(path: &std::path::Path) -> Result<Vec<Certificate>, RunError> {
    let pem = std::fs::read(path).map_err(|e| file_error("ca-cert", path)(Box::new(e)))?;
    let chain = Certificate::load_pem_chain(&pem).map_err(|e| file_error("ca-cert", path)(Box::new(e)))?;
    if chain.is_empty() {
        return Err(file_error("ca-cert", path)("no certificate".into()));
    }
    Ok(chain)
}

/// The EK policy of the config: its manufacturer CAs and its inventory, as they are now.
fn ek_policy(cfg: &DevIdCaConfig) -> Result<(EkPolicy, Option<SystemTime>), RunError> {
    let anchors = match &cfg.endorsement_ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| file_error("endorsement-ca", path)(Box::new(e)))?;
            chain::parse_pem_bundle(&pem).map_err(|e| file_error("endorsement-ca", path)(Box::new(e)))?
        }
        None => Vec::new(),
    };
    let (inventory, mtime) = match &cfg.inventory {
        Some(path) => {
            let (inventory, mtime) = read_inventory(path)?;
            (Some(inventory), mtime)
        }
        None => (None, None),
    };
    Ok((EkPolicy::new(anchors, inventory, None)?, mtime))
}

fn read_inventory(path: &std::path::Path) -> Result<(Inventory, Option<SystemTime>), RunError> {
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).map_err(|e| file_error("inventory", path)(Box::new(e)))?;
    let inventory = Inventory::parse(&text).map_err(|e| file_error("inventory", path)(Box::new(e)))?;
    Ok((inventory, mtime))
}

/// A session between the challenge and the answer.
struct Session {
    begun: Begun,
    name: String,
    approval: Approval,
}

/// The CRL written last.
#[derive(Debug, Default)]
struct CrlState {
    pem: String,
    this_update: u64,
    next_update: u64,
    mark: i64,
}

/// The running CA.
struct Ca {
    cfg: DevIdCaConfig,
    key: CaKey,
    chain: Vec<Certificate>,
    chain_pem: String,
    anchor: Cert,
    ek: RwLock<(EkPolicy, Option<SystemTime>)>,
    db: Arc<Db>,
    sessions: Mutex<Sessions<Session>>,
    crl: RwLock<CrlState>,
    clock: Clock,
    metrics: CaMetrics,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("key", &self.key).finish_non_exhaustive()
    }
}

fn hex_id() -> String {
    let mut raw = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `state-dir` (0700) when it does not exist.
fn make_state_dir(dir: &std::path::Path) -> Result<(), RunError> {
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| file_error("state-dir", dir)(Box::new(e)))?;
    }
    Ok(())
}

/// Runs the CA with its TPM key `key` until `shutdown` resolves.
pub async fn run(
    cfg: DevIdCaConfig,
    key: Arc<dyn tpm::KeySigner>,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let chain = load_chain(&cfg.ca_cert)?;
    let key = CaKey::new(key);
    let own = chain[0]
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| file_error("ca-cert", &cfg.ca_cert)(Box::new(e)))?;
    let own_key = crypto::keys::VerifyingKey::from_spki_der("ca-cert", &own).ok();
    let tpm_key = crypto::keys::VerifyingKey::from_spki_der("tpm", key.spki_der()).ok();
    if !matches!((&own_key, &tpm_key), (Some(a), Some(b)) if a.same_key(b)) {
        return Err(RunError::NotOurKey(cfg.ca_cert.clone()));
    }
    let chain_pem = chain
        .iter()
        .map(|c| c.to_pem(der::pem::LineEnding::LF))
        .collect::<Result<String, _>>()
        .map_err(|e| file_error("ca-cert", &cfg.ca_cert)(Box::new(e)))?;
    let anchor = Cert::from_der(&chain[0].to_der().map_err(|e| file_error("ca-cert", &cfg.ca_cert)(Box::new(e)))?)
        .map_err(|e| file_error("ca-cert", &cfg.ca_cert)(Box::new(e)))?;
    let ek = ek_policy(&cfg)?;
    make_state_dir(&cfg.state_dir)?;
    let db = Arc::new(Db::open(&cfg.database())?);
    db.recover()?;
    let metrics = CaMetrics::new()?;
    let tls = crate::server::tls::acceptor(&cfg.tls)?;
    let listeners = crate::server::tls::bind_all(&cfg.listen).await?;
    let endpoint = match cfg.metrics_addr {
        Some(addr) => Some(crate::metrics::Endpoint::bind(addr).await?),
        None => None,
    };
    tracing::info!(
        ek_policy = %ek.0.mode(),
        key = %tpm_key.as_ref().map(|k| k.fingerprint().to_owned()).unwrap_or_default(),
        ca = %chain[0].tbs_certificate.subject,
        "devid-ca ready"
    );
    let ca = Arc::new(Ca {
        key,
        chain,
        chain_pem,
        anchor,
        ek: RwLock::new(ek),
        db,
        sessions: Mutex::new(Sessions::default()),
        crl: RwLock::new(CrlState { mark: -1, ..CrlState::default() }),
        clock: clock.clone(),
        metrics: metrics.clone(),
        cfg,
    });
    ca.clone().refresh_crl(true).await.map_err(RunError::Crl)?;
    let crl_task = tokio::spawn(ca.clone().keep_crl());
    let exporter = endpoint.map(|e| {
        let (health, before) = (ca.clone(), ca.clone());
        e.spawn(
            metrics.all.clone(),
            Arc::new(move || health.health()),
            Arc::new(move || {
                let this = common::sync::read(&before.crl).this_update;
                before.metrics.crl_age.set(before.clock.now().saturating_sub(this) as f64);
            }),
        )
    });
    serve(ca, listeners, tls, shutdown).await;
    crl_task.abort();
    if let Some(e) = exporter {
        e.abort();
    }
    tracing::info!("devid-ca stopped");
    Ok(())
}

/// Accepts HTTPS connections until `shutdown`: 256 at once, 64 per peer address (a fleet behind one NAT address
/// enrolls together).
async fn serve(
    ca: Arc<Ca>,
    listeners: Vec<tokio::net::TcpListener>,
    tls: tokio_rustls::TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) {
    let limits = ServerLimits { max_body: MAX_BODY, per_peer: 64, ..ServerLimits::default() };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = PeerSlots::new(limits.per_peer);
    let graceful = GracefulShutdown::new();
    let (acceptors, mut rx) = crate::server::tls::spawn_acceptors(listeners);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            c = rx.recv() => match c { Some(c) => c, None => break },
        };
        let (Ok(slot), Some(mine)) = (slots.clone().try_acquire_owned(), per_ip.try_acquire(peer.ip())) else {
            tracing::warn!(%peer, "too many connections; closed");
            continue;
        };
        // Responses go out as they are written: with Nagle, a small reply waits for the client's delayed ACK.
        let _ = stream.set_nodelay(true);
        let ca = ca.clone();
        let service = service_fn(move |req: Request| {
            let ca = ca.clone();
            async move { Ok::<_, Infallible>(ca.handle(req, peer).await) }
        });
        let (acceptor, watcher) = (tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => server::serve_watched(stream, service, &limits, watcher, (slot, mine)).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    for a in acceptors {
        a.abort();
    }
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after 10 s of shutdown; closing them");
    }
}

fn json<T: serde::Serialize>(value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => server::ok("application/json", body),
        Err(e) => server::text(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding the answer: {e}")),
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::Malformed { what, reason: e.to_string() })
}

/// Runs blocking work (the TPM, SQLite) off the event loop.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Refusal> + Send + 'static) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Refusal::Internal(format!("task: {e}")))?
}

impl Ca {
    async fn handle(self: &Arc<Self>, req: Request, peer: std::net::SocketAddr) -> Reply {
        let path = req.uri().path().to_owned();
        let who = peer.ip().to_string();
        let (step, result) = match (req.method().clone(), path.as_str()) {
            (Method::POST, "/v1/enroll") => ("begin", self.clone().begin(req).await),
            (Method::POST, "/v1/enroll/answer") => ("answer", self.clone().answer(req).await),
            (Method::GET, "/v1/ca") => return server::ok("application/x-pem-file", self.chain_pem.clone()),
            (Method::GET, "/v1/crl") => {
                return server::ok("application/x-pem-file", common::sync::read(&self.crl).pem.clone())
            }
            (_, "/v1/enroll" | "/v1/enroll/answer") => return server::method_not_allowed("POST"),
            (_, "/v1/ca" | "/v1/crl") => return server::method_not_allowed("GET"),
            _ => return server::reply(Err(Refusal::NoEndpoint(path)), who.as_str()),
        };
        self.metrics.enrollments.with_label_values(&[step, server::result_label(&result)]).inc();
        server::reply(result, who.as_str())
    }

    /// The EK policy with the inventory as it is now (re-read when its file changed).
    fn ek_policy(&self) -> EkPolicy {
        if let Some(path) = &self.cfg.inventory {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let stale = common::sync::read(&self.ek).1 != mtime;
            if stale {
                match read_inventory(path) {
                    Ok((inventory, mtime)) => {
                        let mut ek = common::sync::write(&self.ek);
                        ek.0 = ek.0.with_inventory(Some(inventory));
                        ek.1 = mtime;
                        tracing::info!(file = %path.display(), "inventory reloaded");
                    }
                    // The last good inventory stays in force: a broken edit approves nobody new and revokes nobody.
                    Err(e) => {
                        tracing::error!(error = %common::report::error_chain(&e), "inventory unusable; keeping the last good one")
                    }
                }
            }
        }
        common::sync::read(&self.ek).0.clone()
    }

    async fn begin(self: Arc<Self>, req: Request) -> Result<Reply, Refusal> {
        let limits = ServerLimits { max_body: MAX_BODY, ..ServerLimits::default() };
        let (_, body) = match server::read_body(req, &limits).await {
            Ok(b) => b,
            Err(e) => return Ok(e.reply()),
        };
        let request: EnrollRequest = parse("an enrollment request", &body)?;
        let now = self.clock.now();
        let policy = self.ek_policy();
        let (mut challenge, begun) = enroll::begin(&request, &policy, now).map_err(Refusal::Proof)?;
        let hash = begun.ek.hash.to_string();
        let this = self.clone();
        let (begun, name, approval) = blocking(move || {
            let (name, approval) = this.approve(&request, &begun, now)?;
            Ok((begun, name, approval))
        })
        .await?;
        let session = hex_id();
        challenge.session = session.clone();
        let via = approval_label(&approval);
        let opened = Session { begun, name: name.clone(), approval };
        common::sync::lock(&self.sessions).open(session, &hash, Instant::now(), opened)?;
        tracing::info!(ek = %hash, %name, via, "enrollment challenged");
        Ok(json(&challenge))
    }

    /// Who approved this node, and the name it gets: the certificate it renews, a token, or the inventory.
    fn approve(&self, req: &EnrollRequest, begun: &Begun, now: u64) -> Result<(String, Approval), Refusal> {
        let hash = begun.ek.hash.to_string();
        if self.db.ek_revoked(&hash)? {
            return Err(Refusal::Denied(super::db::DbError::RevokedEk(hash)));
        }
        if !req.renew.is_empty() {
            let certs = req
                .renew
                .iter()
                .map(|der| Cert::from_der(der).map_err(|e| Refusal::Renewal(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            chain::verify(&certs[0], &certs[1..], std::slice::from_ref(&self.anchor), now)
                .map_err(|e| Refusal::Renewal(e.to_string()))?;
            if !certs[0].has_key(&begun.devid_spki) {
                return Err(Refusal::Renewal("it is not for the DevID key being enrolled".into()));
            }
            let leaf = Certificate::from_der(&req.renew[0]).map_err(|e| Refusal::Renewal(e.to_string()))?;
            let serial = x509::serial_hex(&leaf.tbs_certificate.serial_number);
            let record = self
                .db
                .certificate(&serial)?
                .ok_or_else(|| Refusal::Renewal(format!("serial {serial} is not one this CA issued")))?;
            if record.revoked {
                return Err(Refusal::Denied(super::db::DbError::RevokedCertificate(serial)));
            }
            if record.ek_hash != hash {
                return Err(Refusal::Denied(super::db::DbError::OtherEk { serial, ek: hash }));
            }
            // The inventory's name for this EK, if it has one now: an operator renames a node there.
            let name = begun.ek.name.clone().unwrap_or(record.name);
            return Ok((name, Approval::Renewal(serial)));
        }
        if let Some(token) = &req.token {
            let info = self.db.token(token, now)?;
            // A TPM the inventory names keeps that name: a token cannot rename it.
            if let Some(listed) = begun.ek.name.as_ref().filter(|listed| **listed != info.name) {
                return Err(Refusal::OtherName { hash, listed: listed.clone(), token: info.name });
            }
            return Ok((info.name, Approval::Token(token.clone())));
        }
        match (&begun.ek.listed, &begun.ek.name) {
            (true, Some(name)) => Ok((name.clone(), Approval::Inventory)),
            (true, None) => Err(Refusal::Unnamed { hash }),
            (false, _) => Err(Refusal::NotApproved { hash }),
        }
    }

    async fn answer(self: Arc<Self>, req: Request) -> Result<Reply, Refusal> {
        let limits = ServerLimits { max_body: MAX_BODY, ..ServerLimits::default() };
        let (_, body) = match server::read_body(req, &limits).await {
            Ok(b) => b,
            Err(e) => return Ok(e.reply()),
        };
        let answer: EnrollAnswer = parse("an enrollment answer", &body)?;
        let session = common::sync::lock(&self.sessions).take(&answer.session, Instant::now())?;
        session.begun.finish(&answer).map_err(Refusal::Proof)?;
        let enrolled = blocking(move || self.issue(&session)).await?;
        Ok(json(&enrolled))
    }

    /// Reserves a serial (spending the token), has the TPM sign the certificate, stores it.
    fn issue(&self, session: &Session) -> Result<Enrolled, Refusal> {
        let now = self.clock.now();
        let serial = x509::random_serial().map_err(|e| Refusal::Internal(e.to_string()))?;
        let serial_hex = x509::serial_hex(&serial);
        let hash = session.begun.ek.hash.to_string();
        // Backdated five minutes: a node whose clock is a little behind the CA's still accepts its certificate.
        let not_before = now.saturating_sub(CLOCK_SKEW.as_secs());
        let not_after = now + self.cfg.validity.as_secs();
        let reservation = Reservation {
            serial: serial_hex.clone(),
            ek_hash: hash.clone(),
            name: session.name.clone(),
            not_before,
            not_after,
            approval: session.approval.clone(),
        };
        self.db.reserve(reservation, now)?;
        let started = Instant::now();
        let signed = x509::issue_devid(
            &self.key,
            &self.chain[0],
            serial,
            &session.name,
            &session.begun.devid_spki,
            not_before,
            not_after,
        );
        self.metrics.tpm_sign.observe(started.elapsed().as_secs_f64());
        let der = match signed.and_then(|c| Ok(c.to_der()?)) {
            Ok(der) => der,
            Err(e) => {
                if let Err(undo) = self.db.abandon(&serial_hex) {
                    tracing::error!(error = %undo, serial = %serial_hex, "could not abandon the reservation");
                }
                return Err(Refusal::Internal(format!("signing: {}", common::report::error_chain(&e))));
            }
        };
        self.db.issue(&serial_hex, &der)?;
        let leaf = Certificate::from_der(&der)
            .and_then(|c| c.to_pem(der::pem::LineEnding::LF))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        tracing::info!(name = %session.name, serial = %serial_hex, ek = %hash, via = approval_label(&session.approval), not_after, "DevID certificate issued");
        Ok(Enrolled {
            chain_pem: format!("{leaf}{}", self.chain_pem),
            name: session.name.clone(),
            serial: serial_hex,
            not_after,
        })
    }

    fn health(&self) -> Result<String, String> {
        let crl = common::sync::read(&self.crl);
        if self.clock.now() >= crl.next_update {
            return Err(format!("the CRL is past its nextUpdate ({})", crl.next_update));
        }
        Ok(format!("ok: CRL good until {}", crl.next_update))
    }

    /// Re-signs and writes the CRL when a revocation happened since the last one, when half of its lifetime
    /// passed, or when `force`d.
    async fn refresh_crl(self: Arc<Self>, force: bool) -> Result<(), String> {
        let this = self.clone();
        blocking(move || {
            let now = this.clock.now();
            let (revoked, mark) = this.db.revoked()?;
            let (last_mark, this_update, next_update) = {
                let crl = common::sync::read(&this.crl);
                (crl.mark, crl.this_update, crl.next_update)
            };
            let half = this_update + (next_update.saturating_sub(this_update)) / 2;
            if !force && mark == last_mark && now < half {
                return Ok(());
            }
            let entries = revoked
                .iter()
                .filter_map(|(serial, at)| x509::parse_serial(serial).map(|serial| x509::Revoked { serial, at: *at }))
                .collect::<Vec<_>>();
            let number = this.db.next_crl_number()?;
            let next = now + this.cfg.crl_lifetime.as_secs();
            let started = Instant::now();
            let list = x509::crl(&this.key, &this.chain[0], &entries, number, now, next)
                .map_err(|e| Refusal::Internal(common::report::error_chain(&e)))?;
            this.metrics.tpm_sign.observe(started.elapsed().as_secs_f64());
            let der = list.to_der().map_err(|e| Refusal::Internal(e.to_string()))?;
            let pem = crypto::pem::encode("X509 CRL", &der);
            common::fsutil::publish_atomic(&this.cfg.crl, ".devid-crl.tmp", pem.as_bytes(), 0o644)
                .map_err(|e| Refusal::Internal(format!("writing {}: {e}", this.cfg.crl.display())))?;
            *common::sync::write(&this.crl) = CrlState { pem, this_update: now, next_update: next, mark };
            this.metrics.crl_this_update.set(now as f64);
            this.metrics.crl_next_update.set(next as f64);
            tracing::info!(number, revoked = entries.len(), next_update = next, file = %this.cfg.crl.display(), "CRL signed and written");
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Keeps the CRL current: a revocation is in the CRL within a second or so of its commit.
    async fn keep_crl(self: Arc<Self>) {
        loop {
            tokio::time::sleep(CRL_POLL).await;
            if let Err(e) = self.clone().refresh_crl(false).await {
                tracing::error!(error = %e, "CRL not re-signed; the last one stays");
            }
        }
    }
}

fn approval_label(approval: &Approval) -> &'static str {
    match approval {
        Approval::Inventory => "inventory",
        Approval::Token(_) => "token",
        Approval::Renewal(_) => "renewal",
    }
}
