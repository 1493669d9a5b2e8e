//! `spire-server-attestor-tpm-devid enroll`: the node side of the enrollment CA. It creates (or reuses) the DevID
//! key exactly as `provision` does, proves to the CA in one session over HTTPS that its EK is genuine and
//! approved, that an AK is in that TPM and that the DevID is fixed in it, checks what the CA issued, and writes
//! `devid.crt.pem`, `devid.priv.blob` and `devid.pub.blob` where SPIRE's agent plugin reads them. With
//! `--renew-before`, a DevID whose certificate has longer than that left is kept; a shorter one is renewed with the
//! same key, proving possession and residency again (no token).
//!
//! Invariants: nothing is written unless the certificate chains to `--ca-cert` and certifies this node's DevID key;
//! each file is written atomically, the certificate last, so a node never holds a certificate for blobs it lacks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::client::{ClientOptions, HttpClient, HttpUrl};
use crypto::devid::chain::{self, Cert};
use crypto::devid::enroll::{EnrollAnswer, EnrollChallenge, EnrollRequest, Enrolled};
use tpm::attest::Hierarchies;
use tpm::devid::DevIdBlobs;
use tpm::{KeyType, Password, Tpm, TpmDevice};

/// The certificate file SPIRE's agent plugin reads (`devid_cert_path`).
pub const CERT_FILE: &str = "devid.crt.pem";
/// The private blob (`devid_priv_path`).
pub const PRIV_FILE: &str = "devid.priv.blob";
/// The public blob (`devid_pub_path`).
pub const PUB_FILE: &str = "devid.pub.blob";

/// One `enroll` run.
#[derive(Debug)]
pub struct EnrollRequestArgs {
    /// The CA's base URL (`https://ca.example.org:8446`).
    pub url: String,
    /// The DevID CA chain the certificate must chain to (PEM).
    pub ca_cert: PathBuf,
    /// The CA bundle its HTTPS certificate chains to (the system's roots without it).
    pub tls_ca: Option<PathBuf>,
    /// A one-time token, when the node's EK is not in the CA's inventory.
    pub token: Option<String>,
    /// Where the three files go.
    pub out_dir: PathBuf,
    /// The node's TPM.
    pub device: TpmDevice,
    /// The DevID key's type, when one is created.
    pub key_type: KeyType,
    /// The DevID key's password.
    pub devid_password: Password,
    /// The hierarchy passwords.
    pub hierarchies: Hierarchies,
    /// Renew when the certificate has this little left; without it, an existing DevID is kept.
    pub renew_before: Option<Duration>,
    /// Each HTTPS call's deadline.
    pub timeout: Duration,
    /// What validity is judged by.
    pub now: u64,
}

/// What `enroll` did.
#[derive(Debug)]
pub enum Outcome {
    /// A certificate was issued for a new (or reused, uncertified) DevID.
    Enrolled(Issued),
    /// The certificate was renewed.
    Renewed(Issued),
    /// The DevID was kept: its certificate expires at `not_after`.
    Kept {
        /// notAfter of the certificate held.
        not_after: u64,
    },
}

/// A certificate the CA issued and the node wrote.
#[derive(Debug)]
pub struct Issued {
    /// What the CA sent.
    pub enrolled: Enrolled,
    /// Time spent in TPM commands (opening the TPM, the DevID, the EK and AK, certification, activation).
    pub tpm_time: Duration,
}

/// Why no certificate was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The TPM refused or failed.
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    /// A file could not be read or written.
    #[error("{}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA's URL or client set-up.
    #[error("the CA")]
    Client(#[from] common::client::ClientError),
    /// The CA refused (its reason).
    #[error("the CA refused: {0}")]
    Refused(String),
    /// The CA's answer is not what the protocol says.
    #[error("the CA's answer: {0}")]
    Protocol(String),
    /// What the CA issued does not chain to `--ca-cert`, or is not for this DevID.
    #[error("refusing the certificate the CA issued: {0}")]
    Certificate(String),
    /// A DevID certificate held cannot be read.
    #[error("the DevID certificate held, {}: {reason}", path.display())]
    Held {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Renewing needs the DevID's blobs.
    #[error("{} exists without the DevID blobs beside it: nothing to renew", .0.display())]
    Orphan(PathBuf),
}

fn read(path: &Path) -> Result<Vec<u8>, EnrollError> {
    std::fs::read(path).map_err(|source| EnrollError::File { path: path.to_owned(), source })
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), EnrollError> {
    let prefix = format!(".{}.tmp", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
    common::fsutil::write_atomic(path, &prefix, data, mode)
        .map_err(|source| EnrollError::File { path: path.to_owned(), source })
}

fn certificates(pem: &[u8]) -> Result<Vec<Cert>, String> {
    chain::parse_pem_bundle(pem).map_err(|e| e.to_string()).and_then(|c| {
        if c.is_empty() {
            Err("no certificate".into())
        } else {
            Ok(c)
        }
    })
}

async fn post<T: serde::de::DeserializeOwned>(
    client: &HttpClient,
    url: &HttpUrl,
    body: Vec<u8>,
) -> Result<T, EnrollError> {
    let headers = [(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"))];
    let resp = client.send(http::Method::POST, url, &headers, Bytes::from(body)).await?;
    if resp.status != http::StatusCode::OK {
        let reason = common::report::peer_line(&String::from_utf8_lossy(&resp.body), 300);
        return Err(EnrollError::Refused(format!("{}: {reason}", resp.status)));
    }
    serde_json::from_slice(&resp.body).map_err(|e| EnrollError::Protocol(e.to_string()))
}

/// Enrolls, renews or keeps the node's DevID.
pub fn enroll(req: &EnrollRequestArgs) -> Result<Outcome, EnrollError> {
    std::fs::create_dir_all(&req.out_dir).map_err(|source| EnrollError::File { path: req.out_dir.clone(), source })?;
    let (cert_path, priv_path, pub_path) =
        (req.out_dir.join(CERT_FILE), req.out_dir.join(PRIV_FILE), req.out_dir.join(PUB_FILE));
    let blobs_exist = priv_path.exists() && pub_path.exists();
    let mut renew = Vec::new();
    if cert_path.exists() {
        let held =
            certificates(&read(&cert_path)?).map_err(|reason| EnrollError::Held { path: cert_path.clone(), reason })?;
        let not_after = held[0].not_after();
        let Some(before) = req.renew_before else { return Ok(Outcome::Kept { not_after }) };
        if not_after > req.now.saturating_add(before.as_secs()) {
            return Ok(Outcome::Kept { not_after });
        }
        if !blobs_exist {
            return Err(EnrollError::Orphan(cert_path));
        }
        renew = held.iter().map(|c| c.der().to_vec()).collect();
    }
    let started = Instant::now();
    let tpm = Tpm::open(&req.device)?;
    let created = if blobs_exist {
        None
    } else {
        Some(tpm.create_devid(req.key_type, &req.hierarchies.owner, &req.devid_password)?)
    };
    let mut tpm_time = started.elapsed();
    let blobs = match created {
        None => DevIdBlobs::parse(read(&priv_path)?, read(&pub_path)?)?,
        Some(blobs) => {
            write(&priv_path, &blobs.private, 0o600)?;
            write(&pub_path, &blobs.public, 0o644)?;
            blobs
        }
    };
    let started = Instant::now();
    let (evidence, pending) = tpm.enrollment_evidence(&blobs, &req.devid_password, &req.hierarchies)?;
    tpm_time += started.elapsed();
    let base = req.url.trim_end_matches('/');
    let client =
        HttpClient::new(ClientOptions { timeout: req.timeout, max_body: 1 << 20, ca_file: req.tls_ca.clone() })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| EnrollError::File { path: PathBuf::from("(runtime)"), source })?;
    let request = EnrollRequest {
        ek_pub: evidence.ek_pub,
        ek_cert: evidence.ek_cert.unwrap_or_default(),
        ak_pub: evidence.ak_pub,
        devid_pub: evidence.devid_pub,
        token: req.token.clone(),
        renew: renew.clone(),
    };
    let body = serde_json::to_vec(&request).map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let challenge: EnrollChallenge =
        runtime.block_on(post(&client, &HttpUrl::parse(&format!("{base}/v1/enroll"))?, body))?;
    let started = Instant::now();
    let proof = pending.answer_enrollment(&challenge.nonce, &challenge.credential, &challenge.secret)?;
    tpm_time += started.elapsed();
    let devid_signature = super::signature::der(blobs.key.key_type(), proof.devid_signature)
        .map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let answer = EnrollAnswer {
        session: challenge.session,
        certify_info: proof.certify_info,
        certify_signature: proof.certify_signature,
        devid_signature,
        activated_secret: proof.activated_secret.to_vec(),
    };
    let body = serde_json::to_vec(&answer).map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let enrolled: Enrolled =
        runtime.block_on(post(&client, &HttpUrl::parse(&format!("{base}/v1/enroll/answer"))?, body))?;
    check_issued(&enrolled, &read(&req.ca_cert)?, blobs.key.spki_der(), req.now)?;
    write(&cert_path, enrolled.chain_pem.as_bytes(), 0o644)?;
    let issued = Issued { enrolled, tpm_time };
    Ok(if renew.is_empty() { Outcome::Enrolled(issued) } else { Outcome::Renewed(issued) })
}

/// What the CA issued chains to `ca_pem`, certifies `devid_spki`, and names the node as the CA said.
pub fn check_issued(enrolled: &Enrolled, ca_pem: &[u8], devid_spki: &[u8], now: u64) -> Result<(), EnrollError> {
    let bad = |why: String| EnrollError::Certificate(why);
    let anchors = certificates(ca_pem).map_err(|e| bad(format!("--ca-cert: {e}")))?;
    let chain = certificates(enrolled.chain_pem.as_bytes()).map_err(bad)?;
    chain::verify(&chain[0], &chain[1..], &anchors, now)
        .map_err(|e| bad(format!("it does not chain to --ca-cert: {e}")))?;
    if !chain[0].has_key(devid_spki) {
        return Err(bad("it does not certify this node's DevID key".into()));
    }
    if chain[0].common_name(false).as_deref() != Some(enrolled.name.as_str()) {
        return Err(bad(format!("its subject is not the name the CA gave ({})", enrolled.name)));
    }
    Ok(())
}

/// The node's inventory line: `sha256:<hex> NAME`.
pub fn ek_hash_line(device: &TpmDevice, hierarchies: &Hierarchies, name: &str) -> Result<String, EnrollError> {
    let public = Tpm::open(device)?.ek_public(hierarchies)?;
    let parsed = crypto::devid::tpm2::TpmPublic::parse(&public, "EK public area")
        .map_err(|e| EnrollError::Protocol(e.to_string()))?;
    let hash = crypto::devid::ek::EkHash::of(&parsed).map_err(|e| EnrollError::Protocol(e.to_string()))?;
    Ok(format!("{hash} {name}"))
}
