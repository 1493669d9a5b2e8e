//! `spire-server-attestor-tpm-sign keys`: builds a signed keyset update, one signing host at a time.
//!
//! A keyset update moves what every node trusts, for good, so each layer is a deliberate act of root on the host
//! whose TPM signs it: signer-unix signs keyset documents and update layers only for the uids in its
//! `keyset-uids` (root), and signer-http never co-signs an update. An update therefore travels as a file:
//! 1. the first host signs the document (`--keyset ... SOCKET`), its signer-unix innermost;
//! 2. every other signing host adds its layer (`--add-layer FILE SOCKET`), in the order the policy wants;
//! 3. each key the update introduces signs outermost (`--new-key-socket`, on any of those runs);
//! 4. the update is checked against the policy it replaces and appended to the published keys file (`--out`),
//!    on the last signing host or, with `--complete FILE SOCKET`, on the keyset's home server.
//!
//! The policy it replaces is SOCKET's publish policy (`GET /policy`): on the keyset's home server, what its nodes
//! verify. Until the update is whole, `--partial FILE` writes it for the next host.
//!
//! Invariants: nothing reaches `--out` (or standard output) unless the whole update verifies against the policy
//! it replaces; `--out` keeps every update it held (the new one is appended, and refused when the file already
//! holds that version or a later one); every layer a signer adds wraps exactly the update it was sent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::signer_client::{SignerClient, SignerClientError};
use crypto::keys::VerifyingKey;
use crypto::keyset::{Document, DocumentError, Update, UpdateError};
use crypto::policy::Policy;
use crypto::token::{Payload, Token};
use crypto::VerifyErrorKind;

/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;
/// Largest update or keys file read.
const MAX_UPDATE_FILE: u64 = 4 << 20;

/// What the new keyset holds.
#[derive(Debug, Clone)]
pub enum NewPolicy {
    /// `--chain` (innermost signer first) and an optional `--backup`.
    Chain {
        /// The chain's key files.
        chain: Vec<PathBuf>,
        /// The backup's key file.
        backup: Option<PathBuf>,
    },
    /// `--threshold K --keys ...`.
    Threshold {
        /// K.
        threshold: usize,
        /// The set's key files.
        keys: Vec<PathBuf>,
    },
}

/// Where the run starts.
#[derive(Debug, Clone)]
pub enum Begin {
    /// A new update: signer-unix at SOCKET signs its document.
    New {
        /// The keyset's name, as the nodes' config names it.
        keyset: String,
        /// The new version (above the one nodes hold).
        version: u64,
        /// The new policy.
        policy: NewPolicy,
        /// How long the update stays valid.
        valid_for: Duration,
    },
    /// `--add-layer FILE`: an update another host started; signer-unix at SOCKET wraps it.
    AddLayer(PathBuf),
    /// `--complete FILE`: an update every host has signed; checked and written, nothing signed.
    Complete(PathBuf),
}

/// Where the update goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// Standard output (whole updates only).
    Stdout,
    /// `--out FILE`: the keys file nodes fetch; the whole update is appended.
    Append(PathBuf),
    /// `--partial FILE`: an update still missing layers, for the next signing host.
    Partial(PathBuf),
}

/// One `sign keys` run.
#[derive(Debug, Clone)]
pub struct KeysRequest {
    /// Where it starts.
    pub begin: Begin,
    /// This host's signer-unix.
    pub socket: PathBuf,
    /// signer-unix sockets of keys the update introduces; they wrap it last.
    pub new_key_sockets: Vec<PathBuf>,
    /// Where it goes.
    pub output: Output,
    /// Per-call timeout.
    pub timeout: Duration,
    /// What the document's expiry and the check are judged by.
    pub clock: common::clock::Clock,
}

/// What a run produced (already written, unless it goes to standard output).
#[derive(Debug)]
pub struct Built {
    /// The update token.
    pub token: Token,
    /// The update as a node would accept it, when it is whole.
    pub update: Option<Update>,
}

/// Why no update was produced; each variant names the step. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// A file could not be read.
    #[error("reading {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A key file is not a usable public key.
    #[error("key file {path}: {cause}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: crypto::KeyError,
    },
    /// The new policy is invalid.
    #[error("the new policy: {0}")]
    Policy(crypto::PolicyError),
    /// The document could not be built.
    #[error("the keyset document: {0}")]
    Document(DocumentError),
    /// The file given to `--add-layer` or `--complete` is not one keyset update.
    #[error("{path} is not a keyset update: {why}")]
    NotAnUpdate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Building a client failed.
    #[error("client set-up: {0}")]
    Client(common::client::ClientError),
    /// signer-unix's publish policy (the one replaced) could not be had.
    #[error("reading the policy the update replaces from signer-unix at {socket}: {cause}")]
    CurrentPolicy {
        /// The socket.
        socket: PathBuf,
        /// Why.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A signer failed.
    #[error("signing at {step}")]
    Sign {
        /// Which signer.
        step: String,
        /// Why.
        #[source]
        source: SignerClientError,
    },
    /// A signer-unix answered with a token that does not wrap the one sent.
    #[error("signer-unix at {0} answered with a token that does not wrap the update sent")]
    NotWrapped(PathBuf),
    /// The update still lacks layers.
    #[error(
        "the update is not whole yet ({0}): write it with --partial FILE and have the next signing host run \
         `sign keys --add-layer FILE SOCKET`"
    )]
    Incomplete(UpdateError),
    /// The update does not verify against the policy it replaces.
    #[error("the update does not verify against the policy it replaces (signer-unix's publish policy)")]
    Check(#[source] UpdateError),
    /// The keys file already holds this version or a later one.
    #[error("{path} already holds version {held} of keyset {keyset}: a new update needs a higher version")]
    NotNewer {
        /// The keys file.
        path: PathBuf,
        /// The keyset.
        keyset: String,
        /// The newest version the file holds.
        held: u64,
    },
    /// The keys file holds something other than keyset updates.
    #[error("{path} line {line} is not a keyset update; refusing to append to it")]
    NotAKeysFile {
        /// The keys file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
    },
    /// Writing failed; the file is as it was.
    #[error("writing {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, KeysError> {
    let read = |source| KeysError::Read { path: path.to_owned(), cause: source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(read)?.take(max).read_to_end(&mut bytes).map_err(read)?;
    Ok(bytes)
}

fn load_key(path: &Path) -> Result<VerifyingKey, KeysError> {
    let text = read_bounded(path, MAX_KEY_FILE)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    VerifyingKey::from_pem(&name, &text).map_err(|source| KeysError::Key { path: path.to_owned(), cause: source })
}

fn new_policy(p: &NewPolicy) -> Result<Policy, KeysError> {
    let limits = crypto::Limits::default();
    let load_all = |files: &[PathBuf]| files.iter().map(|f| load_key(f)).collect::<Result<Vec<_>, _>>();
    Ok(match p {
        NewPolicy::Chain { chain, backup } => {
            Policy::new(load_all(chain)?, backup.as_deref().map(load_key).transpose()?, limits)?
        }
        NewPolicy::Threshold { threshold, keys } => Policy::threshold(*threshold, load_all(keys)?, limits)?,
    })
}

/// The keyset document inside update `token` (read unverified: the update is checked whole before it is
/// written anywhere nodes read).
fn document_of(token: &str) -> Result<Document, String> {
    match crypto::token::innermost_unverified(token, &crypto::Limits::default()).map_err(|e| e.to_string())? {
        (_, Payload::Keyset(text)) => Document::parse(&text, crypto::Limits::default()).map_err(|e| e.to_string()),
        _ => Err("a bundle token".to_owned()),
    }
}

/// The one update in `path`.
fn read_update(path: &Path) -> Result<(Token, Document), KeysError> {
    let bad = |why: String| KeysError::NotAnUpdate { path: path.to_owned(), why };
    let bytes = read_bounded(path, MAX_UPDATE_FILE)?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not text".into()))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let (Some(token), None) = (lines.next(), lines.next()) else {
        return Err(bad("it must hold exactly one update (one line)".into()));
    };
    let token = Token::parse(token).map_err(|e| bad(e.to_string()))?;
    let document = document_of(&token).map_err(bad)?;
    Ok((token, document))
}

/// Has signer-unix at `socket` wrap `token`; the reply must wrap exactly what was sent.
async fn wrap(socket: &Path, token: &Token, timeout: Duration, what: &str) -> Result<Token, KeysError> {
    let signer = SignerClient::new(socket, timeout).map_err(KeysError::Client)?;
    let step = format!("{what} {}", socket.display());
    let wrapped = signer.sign_token(token).await.map_err(|source| KeysError::Sign { step, source })?;
    if !wrapped.wraps(token) {
        return Err(KeysError::NotWrapped(socket.to_owned()));
    }
    Ok(wrapped)
}

/// Whether `e` says only that layers are still missing (so the update may be finished by other hosts).
fn only_missing_layers(e: &UpdateError) -> bool {
    match e {
        UpdateError::MissingNewKey { .. } => true,
        UpdateError::Current(v) => matches!(
            v.kind,
            VerifyErrorKind::MissingLayers { .. }
                | VerifyErrorKind::TooFewLayers(_)
                | VerifyErrorKind::ThresholdNotMet { .. }
        ),
        _ => false,
    }
}

/// Checks `token` whole against SOCKET's publish policy, as a node at the version below the document's would.
async fn check(req: &KeysRequest, token: &str, document: &Document) -> Result<Update, KeysError> {
    let local = SignerClient::new(&req.socket, req.timeout).map_err(KeysError::Client)?;
    let current_policy = |source: Box<dyn std::error::Error + Send + Sync>| KeysError::CurrentPolicy {
        socket: req.socket.clone(),
        cause: source,
    };
    let json = local.policy().await.map_err(|e| current_policy(Box::new(e)))?;
    let current =
        crypto::keyset::policy_from_json(&json, crypto::Limits::default()).map_err(|e| current_policy(Box::new(e)))?;
    let held = document.version().saturating_sub(1);
    crypto::keyset::verify_update(&current, document.keyset(), held, token, req.clock.now()).map_err(|e| {
        if only_missing_layers(&e) {
            KeysError::Incomplete(e)
        } else {
            KeysError::Check(e)
        }
    })
}

/// Appends `token` (an update of `document`) to keys file `path`, atomically: every update it held stays, in
/// order, so a node that was off through several follows them all.
pub fn append_update(path: &Path, token: &str, document: &Document) -> Result<(), KeysError> {
    let existing = match read_bounded(path, MAX_UPDATE_FILE) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(KeysError::Read { cause: source, .. }) if source.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut out = String::with_capacity(existing.len() + token.len() + 1);
    for (i, line) in existing.lines().map(str::trim).enumerate().filter(|(_, l)| !l.is_empty()) {
        let held = document_of(line).map_err(|_| KeysError::NotAKeysFile { path: path.to_owned(), line: i + 1 })?;
        if held.keyset() == document.keyset() && held.version() >= document.version() {
            return Err(KeysError::NotNewer {
                path: path.to_owned(),
                keyset: document.keyset().to_owned(),
                held: held.version(),
            });
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(token);
    out.push('\n');
    common::fsutil::publish_atomic(path, ".keys.tmp", out.as_bytes(), 0o644)
        .map_err(|source| KeysError::Write { path: path.to_owned(), source })
}

/// Runs one `sign keys`: signs what this host signs, then checks and writes the update as `req.output` says.
pub async fn run(req: &KeysRequest) -> Result<Built, KeysError> {
    let (mut token, document) = match &req.begin {
        Begin::New { keyset, version, policy, valid_for } => {
            let policy = new_policy(policy)?;
            let expires = req.clock.now() + valid_for.as_secs().clamp(1, crypto::keyset::MAX_UPDATE_LIFETIME_SECS);
            let document = Document::new(keyset, *version, expires, &policy)?;
            let local = SignerClient::new(&req.socket, req.timeout).map_err(KeysError::Client)?;
            let step = format!("signer-unix {}", req.socket.display());
            let token = local.sign_keyset(document.text()).await.map_err(|source| KeysError::Sign { step, source })?;
            (token, document)
        }
        Begin::AddLayer(file) => {
            let (token, document) = read_update(file)?;
            (wrap(&req.socket, &token, req.timeout, "signer-unix").await?, document)
        }
        Begin::Complete(file) => read_update(file)?,
    };
    for socket in &req.new_key_sockets {
        token = wrap(socket, &token, req.timeout, "new key's signer-unix").await?;
    }
    let update = match &req.output {
        Output::Partial(path) => {
            common::fsutil::write_atomic(path, ".update.tmp", format!("{token}\n").as_bytes(), 0o644)
                .map_err(|source| KeysError::Write { path: path.clone(), source })?;
            tracing::info!(file = %path.display(), keyset = document.keyset(), version = document.version(), "update in progress written; the next signing host runs `sign keys --add-layer FILE SOCKET`");
            None
        }
        Output::Append(path) => {
            let update = check(req, &token, &document).await?;
            append_update(path, &token, &document)?;
            tracing::info!(file = %path.display(), "keyset update appended");
            Some(update)
        }
        Output::Stdout => Some(check(req, &token, &document).await?),
    };
    if let Some(update) = &update {
        for l in &update.layers {
            tracing::info!(layer = l.depth, key = %l.key_name, backup = l.backup, exp = l.exp, "update layer verified");
        }
        tracing::info!(
            keyset = document.keyset(),
            version = document.version(),
            expires = document.expires(),
            "keyset update signed and checked whole"
        );
    }
    Ok(Built { token, update })
}

impl From<crypto::PolicyError> for KeysError {
    fn from(e: crypto::PolicyError) -> Self {
        KeysError::Policy(e)
    }
}

impl From<DocumentError> for KeysError {
    fn from(e: DocumentError) -> Self {
        KeysError::Document(e)
    }
}
