//! The KeyManager plugins, `spire-agent-keymanager-tpm` and `spire-server-keymanager-tpm`: the agent's SVID keys
//! and the server's CA and JWT keys made inside the TPM and kept on disk only as TPM-wrapped blobs (`store`), each
//! loaded to sign and flushed afterwards (`tpm::wrapped`). The two plugins are one implementation ([`State`])
//! behind the agent's and the server's KeyManager services, which differ only in their proto package.
//!
//! Configuration (HCL): `directory` (required: where `keys.sqlite` lives), `tpm_device_path` (default: the one
//! `/dev/tpmrmN`, else the one `/dev/tpmN`), `owner_hierarchy_password_file` and `key_password_file` (passwords
//! read from files; empty by default).
//!
//! SignData: `data` is the digest. EC keys sign ECDSA with the hash SPIRE names, returned as DER; RSA keys sign
//! PKCS#1 v1.5, or PSS when SPIRE sends PSS options. The TPM chooses a PSS salt; the plugin accepts requests for a
//! salt of the digest's length (`-1`, Go's `PSSSaltLengthEqualsHash`, what Go's TLS uses, or that length itself),
//! whose signatures it checks against that salt before it answers, or `0` (auto: any salt verifies), and refuses
//! any other length by name.

pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tonic::Status;
use tpm::wrapped::{Hash, Scheme, WrappedKind};
use tpm::{Password, Tpm};

use crate::config::{self, ConfigError, PluginConfig};
use crate::pb::config::CoreConfiguration;
use store::{Store, Stored};

/// SPIRE's KeyType numbers.
const EC_P256: i32 = 1;
const EC_P384: i32 = 2;
const RSA_2048: i32 = 3;
const RSA_4096: i32 = 4;
/// SPIRE's HashAlgorithm numbers (Go's crypto.Hash) this plugin signs.
const SHA256: i32 = 5;
const SHA384: i32 = 6;
const SHA512: i32 = 7;

/// The plugin's `plugin_data` as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    directory: Option<PathBuf>,
    tpm_device_path: Option<String>,
    owner_hierarchy_password_file: Option<PathBuf>,
    key_password_file: Option<PathBuf>,
}

/// Signatures waiting for the TPM, at most; SignData waits for room beyond that.
const QUEUE: usize = 256;
/// Signatures made under one load of a key, at most.
const BATCH: usize = 32;

/// A configured KeyManager: its TPM, its store and the keys in it.
#[derive(Debug)]
pub struct State {
    directory: PathBuf,
    tpm: Tpm,
    owner: Password,
    key_password: Password,
    store: Store,
    keys: Mutex<BTreeMap<String, Stored>>,
    /// Held by GenerateKey from its store write to its swap in `keys`, so that two for one ID cannot leave the
    /// store and `keys` apart; the write itself runs off the async threads.
    generating: tokio::sync::Mutex<()>,
    /// The signing thread's queue ([`Signer`]).
    signer: tokio::sync::mpsc::Sender<Job>,
}

/// What the signing thread is asked.
enum Job {
    /// Sign one digest.
    Sign(SignJob),
    /// The key with this fingerprint was replaced: its saved context is dropped.
    Forget(String),
}

/// One SignData waiting for the TPM.
struct SignJob {
    id: String,
    key: tpm::wrapped::WrappedKey,
    fingerprint: String,
    digest: Vec<u8>,
    scheme: Scheme,
    reply: tokio::sync::oneshot::Sender<Result<Vec<u8>, Status>>,
}

/// The one thread that signs. It takes every signature waiting (up to [`BATCH`]), and for each key and scheme
/// among them restores the key once, signs each digest, and flushes it: under load, a key costs one
/// TPM2_ContextLoad and one TPM2_FlushContext per batch instead of per signature; alone, a signature costs what
/// it did. A key is never left loaded between batches.
struct Signer {
    tpm: Tpm,
    owner: Password,
    key_password: Password,
    /// Each key's saved TPM context, by fingerprint: restoring it is one TPM command instead of rebuilding the
    /// storage key and loading the blob.
    saved: std::collections::HashMap<String, tpm::wrapped::SavedKey>,
}

impl Signer {
    fn run(mut self, mut queue: tokio::sync::mpsc::Receiver<Job>) {
        while let Some(first) = queue.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < BATCH {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut groups: Vec<Vec<SignJob>> = Vec::new();
            for job in jobs {
                match job {
                    Job::Forget(fingerprint) => {
                        self.saved.remove(&fingerprint);
                    }
                    // A request whose caller went away is not signed.
                    Job::Sign(job) if job.reply.is_closed() => {}
                    Job::Sign(job) => {
                        let same = |g: &&mut Vec<SignJob>| {
                            g[0].fingerprint == job.fingerprint
                                && g[0].scheme == job.scheme
                                && g[0].digest.len() == job.digest.len()
                        };
                        match groups.iter_mut().find(same) {
                            Some(group) => group.push(job),
                            None => groups.push(vec![job]),
                        }
                    }
                }
            }
            for group in groups {
                self.sign(group);
            }
        }
    }

    /// Signs a group of one key, one scheme and one digest length: every digest of it is signable alike, so
    /// a refusal is every request's.
    fn sign(&mut self, group: Vec<SignJob>) {
        let first = &group[0];
        let digests: Vec<&[u8]> = group.iter().map(|j| j.digest.as_slice()).collect();
        let saved = self.saved.get(&first.fingerprint);
        let signed =
            self.tpm.sign_wrapped_batch(&first.key, &self.owner, &self.key_password, &digests, first.scheme, saved);
        match signed {
            Ok((signatures, fresh)) => {
                if let Some(fresh) = fresh {
                    self.saved.insert(first.fingerprint.clone(), fresh);
                }
                for (job, signature) in group.into_iter().zip(signatures) {
                    let _ = job.reply.send(Ok(signature));
                }
            }
            Err(e) => {
                let status = match e {
                    tpm::TpmError::BadBlob { what: "signing request", reason } => {
                        Status::invalid_argument(format!("failed to sign data: {reason}"))
                    }
                    e => tpm_status(&format!("failed to sign data: keypair {:?}", first.id), e),
                };
                for job in group {
                    let _ = job.reply.send(Err(status.clone()));
                }
            }
        }
    }
}

fn password(key: &'static str, path: Option<PathBuf>) -> Result<Password, ConfigError> {
    match config::path(key, path)? {
        None => Ok(Password::default()),
        Some(p) => {
            let mut bytes = std::fs::read(&p).map_err(|e| ConfigError::file(key, &p, e))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Ok(Password::new(bytes))
        }
    }
}

/// A configuration as parsed: what `Validate` checks, and what `Configure` then opens.
struct Settings {
    directory: PathBuf,
    device: tpm::TpmDevice,
    owner: Password,
    key_password: Password,
}

/// Parses the configuration and reads the password files. It changes nothing: no directory is made, no store or
/// TPM opened.
fn settings(text: &str, dev: &Path) -> Result<Settings, ConfigError> {
    let raw: Raw = config::decode(text)?;
    let directory = config::path("directory", raw.directory)?.ok_or(ConfigError::Missing("directory"))?;
    let owner = password("owner_hierarchy_password_file", raw.owner_hierarchy_password_file)?;
    let key_password = password("key_password_file", raw.key_password_file)?;
    let device = match raw.tpm_device_path.as_deref().map(str::trim) {
        None | Some("") => crate::devid::agent::autodetect(dev)?,
        Some(s) => s
            .parse()
            .map_err(|e: tpm::TpmError| ConfigError::Value { key: "tpm_device_path".into(), cause: Box::new(e) })?,
    };
    Ok(Settings { directory, device, owner, key_password })
}

/// Parses the configuration, opens the TPM and the store, and reads the keys in it.
pub fn load_state(text: &str, dev: &Path) -> Result<State, ConfigError> {
    let Settings { directory, device, owner, key_password } = settings(text, dev)?;
    let store = Store::open(&directory).map_err(|e| ConfigError::file("directory", &directory, e))?;
    let stored = store.load().map_err(|e| ConfigError::file("directory", &directory, e))?;
    let tpm =
        Tpm::open(&device).map_err(|e| ConfigError::Value { key: "tpm_device_path".into(), cause: Box::new(e) })?;
    // A key this TPM cannot load is not offered: SPIRE, seeing no key, makes a new one (which replaces it in the
    // store) and attests again, instead of failing at every signature. It is not deleted, because the same error
    // comes from a `tpm_device_path` that names another TPM: once the path is right again, the key is back.
    let mut keys = BTreeMap::new();
    for (id, s) in stored {
        match tpm.check_wrapped(&s.key, &owner) {
            Ok(()) => {
                keys.insert(id, s);
            }
            Err(tpm::TpmError::ForeignBlob { device }) => {
                tracing::warn!(key_id = %id, %device, "this TPM cannot load the key: it was cleared or replaced since the key was made, or tpm_device_path names another TPM; the key is not offered, and stays in the store until a new key replaces it");
            }
            Err(e) => return Err(ConfigError::invalid("tpm_device_path", format!("loading key {id:?}: {e}"))),
        }
    }
    let (signer, queue) = tokio::sync::mpsc::channel(QUEUE);
    let worker = Signer {
        tpm: tpm.clone(),
        owner: owner.clone(),
        key_password: key_password.clone(),
        saved: Default::default(),
    };
    std::thread::Builder::new()
        .name("tpm-sign".into())
        .spawn(move || worker.run(queue))
        .map_err(|e| ConfigError::invalid("tpm_device_path", format!("starting the signing thread: {e}")))?;
    Ok(State {
        directory,
        tpm,
        owner,
        key_password,
        store,
        keys: Mutex::new(keys),
        generating: tokio::sync::Mutex::new(()),
        signer,
    })
}

impl PluginConfig for State {
    fn load(hcl: &str, _core: Option<&CoreConfiguration>) -> Result<(Self, Vec<String>), ConfigError> {
        Ok((load_state(hcl, Path::new("/dev"))?, Vec::new()))
    }

    /// Parses only: SPIRE validates a candidate configuration while the running one holds the TPM and the store.
    fn check(hcl: &str, _core: Option<&CoreConfiguration>) -> Result<Vec<String>, ConfigError> {
        settings(hcl, Path::new("/dev")).map(|_| Vec::new())
    }

    fn log_configured(&self) {
        let keys = common::sync::lock(&self.keys).len();
        tracing::info!(directory = %self.directory.display(), device = %self.tpm.device(), keys, "configured");
    }
}

/// A public key as both services return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// The key ID.
    pub id: String,
    /// SPIRE's KeyType number.
    pub kind: i32,
    /// DER SubjectPublicKeyInfo.
    pub pkix: Vec<u8>,
    /// The instance's fingerprint.
    pub fingerprint: String,
}

/// SignData's signer options, as both services receive them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerOpts {
    /// A plain hash: ECDSA, or PKCS#1 v1.5 for RSA.
    Hash(i32),
    /// RSA-PSS.
    Pss {
        /// Go's `SaltLength`: -1 the digest's length, 0 auto, > 0 exact.
        salt_length: i32,
        /// The hash.
        hash: i32,
    },
}

fn kind_of(number: i32) -> Result<WrappedKind, Status> {
    match number {
        EC_P256 => Ok(WrappedKind::EcP256),
        EC_P384 => Ok(WrappedKind::EcP384),
        RSA_2048 => Ok(WrappedKind::Rsa2048),
        RSA_4096 => Ok(WrappedKind::Rsa4096),
        0 => Err(Status::invalid_argument("key type is required")),
        other => Err(Status::invalid_argument(format!("unknown key type {other}"))),
    }
}

fn number_of(kind: WrappedKind) -> i32 {
    match kind {
        WrappedKind::EcP256 => EC_P256,
        WrappedKind::EcP384 => EC_P384,
        WrappedKind::Rsa2048 => RSA_2048,
        WrappedKind::Rsa4096 => RSA_4096,
    }
}

fn hash_of(number: i32) -> Result<Hash, Status> {
    match number {
        SHA256 => Ok(Hash::Sha256),
        SHA384 => Ok(Hash::Sha384),
        SHA512 => Ok(Hash::Sha512),
        0 => Err(Status::invalid_argument("hash algorithm is required")),
        other => Err(Status::invalid_argument(format!(
            "hash algorithm {other}: the TPM signs SHA-256, SHA-384 and SHA-512 digests only"
        ))),
    }
}

/// The gRPC status of a TPM failure: a blob the TPM no longer knows is named as such.
fn tpm_status(what: &str, e: tpm::TpmError) -> Status {
    match e {
        tpm::TpmError::ForeignBlob { device } => Status::failed_precondition(format!(
            "{what}: TPM {device} cannot load this key: the TPM was cleared or replaced since the key was made (its storage key is gone); the key must be generated again"
        )),
        tpm::TpmError::BadBlob { what: "key type", reason } => Status::invalid_argument(format!("{what}: {reason}")),
        e if e.is_transient() => Status::unavailable(format!("{what}: {e}")),
        e => Status::internal(format!("{what}: {e}")),
    }
}

/// `r || s` as DER `SEQUENCE { INTEGER r, INTEGER s }` with minimal integers.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let half = raw.len() / 2;
    let int = |bytes: &[u8]| {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let body = [int(&raw[..half]), int(&raw[half..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

/// Checks that an RSA-PSS signature carries a salt of the digest's length (what Go's TLS 1.3 requires).
fn pss_salt_is_digest_length(spki: &[u8], hash: Hash, digest: &[u8], signature: &[u8]) -> bool {
    use rsa::pkcs8::DecodePublicKey;
    let Ok(key) = rsa::RsaPublicKey::from_public_key_der(spki) else { return false };
    let scheme = match hash {
        Hash::Sha256 => rsa::pss::Pss::new_with_salt::<sha2::Sha256>(32),
        Hash::Sha384 => rsa::pss::Pss::new_with_salt::<sha2::Sha384>(48),
        Hash::Sha512 => rsa::pss::Pss::new_with_salt::<sha2::Sha512>(64),
    };
    key.verify(scheme, digest, signature).is_ok()
}

impl State {
    fn public(id: &str, stored: &Stored) -> Public {
        Public {
            id: id.to_owned(),
            kind: number_of(stored.key.kind),
            pkix: stored.key.spki_der.clone(),
            fingerprint: stored.fingerprint.clone(),
        }
    }

    /// GenerateKey: a new key of `kind` in the TPM under `id`, stored before it replaces the old one.
    pub async fn generate(self: std::sync::Arc<Self>, id: String, kind: i32) -> Result<Public, Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("key id is required"));
        }
        let kind = kind_of(kind)?;
        let this = self.clone();
        let key = tokio::task::spawn_blocking(move || this.tpm.create_wrapped(kind, &this.owner, &this.key_password))
            .await
            .map_err(|e| Status::internal(format!("failed to generate key: {e}")))?
            .map_err(|e| tpm_status("failed to generate key", e))?;
        let stored = Stored::new(key);
        let one = self.generating.lock().await;
        let (this, put_id, put) = (self.clone(), id.clone(), stored.clone());
        tokio::task::spawn_blocking(move || this.store.put(&put_id, &put, common::clock::unix_now()))
            .await
            .map_err(|e| Status::internal(format!("failed to generate key: {e}")))?
            .map_err(|e| Status::internal(format!("failed to generate key: {e}")))?;
        let public = Self::public(&id, &stored);
        let old = common::sync::lock(&self.keys).insert(id.clone(), stored);
        drop(one);
        if let Some(old) = old {
            // Only tidiness: the old key's saved context can no longer be reached. A full queue keeps it.
            let _ = self.signer.try_send(Job::Forget(old.fingerprint));
        }
        tracing::info!(key_id = %id, kind = %kind, fingerprint = %public.fingerprint, "key generated in the TPM");
        Ok(public)
    }

    /// GetPublicKey: `None` for an unknown ID.
    pub fn get(&self, id: &str) -> Option<Public> {
        common::sync::lock(&self.keys).get(id).map(|s| Self::public(id, s))
    }

    /// GetPublicKeys, by ID.
    pub fn list(&self) -> Vec<Public> {
        common::sync::lock(&self.keys).iter().map(|(id, s)| Self::public(id, s)).collect()
    }

    /// SignData: the signature (DER for ECDSA) and the key's fingerprint.
    pub async fn sign(
        self: std::sync::Arc<Self>,
        id: String,
        digest: Vec<u8>,
        opts: Option<SignerOpts>,
    ) -> Result<(Vec<u8>, String), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("key id is required"));
        }
        let stored = common::sync::lock(&self.keys)
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no such key {id:?}")))?;
        let opts = opts.ok_or_else(|| Status::invalid_argument("signer opts is required"))?;
        let rsa = matches!(stored.key.kind, WrappedKind::Rsa2048 | WrappedKind::Rsa4096);
        let (scheme, pss) = match (opts, rsa) {
            (SignerOpts::Hash(h), false) => (Scheme::Ecdsa(hash_of(h)?), None),
            (SignerOpts::Hash(h), true) => (Scheme::RsaPkcs1(hash_of(h)?), None),
            (SignerOpts::Pss { .. }, false) => {
                return Err(Status::invalid_argument("PSS options are only valid for RSA keys"))
            }
            (SignerOpts::Pss { salt_length, hash }, true) => {
                let hash =
                    hash_of(hash).map_err(|s| Status::invalid_argument(format!("PSS options: {}", s.message())))?;
                if !(salt_length == -1 || salt_length == 0 || salt_length == hash.size() as i32) {
                    return Err(Status::invalid_argument(format!(
                        "PSS salt length {salt_length}: the TPM chooses the salt; this plugin signs with a salt of the digest's length ({}) only",
                        hash.size()
                    )));
                }
                // Auto (0) takes whatever salt the TPM chose; the others need the digest's length, checked after.
                (Scheme::RsaPss(hash), (salt_length != 0).then_some(hash))
            }
        };
        let stopped = || Status::internal("failed to sign data: the signing thread stopped");
        let (reply, answer) = tokio::sync::oneshot::channel();
        // A copy of the digest is kept only where the PSS salt is checked after.
        let checked = pss.map(|_| digest.clone());
        let job =
            SignJob { id, key: stored.key.clone(), fingerprint: stored.fingerprint.clone(), digest, scheme, reply };
        self.signer.send(Job::Sign(job)).await.map_err(|_| stopped())?;
        let raw = answer.await.map_err(|_| stopped())??;
        if let (Some(hash), Some(digest)) = (pss, checked.as_deref()) {
            if !pss_salt_is_digest_length(&stored.key.spki_der, hash, digest, &raw) {
                return Err(Status::internal(
                    "failed to sign data: this TPM makes PSS signatures whose salt is not the digest's length, which Go's TLS refuses",
                ));
            }
        }
        let signature = if rsa { raw } else { ecdsa_der(&raw) };
        Ok((signature, stored.fingerprint))
    }
}

/// One KeyManager gRPC service over [`State`], for the proto package `$pb` (the agent's or the server's).
macro_rules! keymanager_service {
    ($name:ident, $pb:path) => {
        use $pb as km;

        /// The KeyManager gRPC service.
        #[derive(Debug, Clone, Default)]
        pub struct $name(pub std::sync::Arc<crate::config::ConfigSlot<State>>);

        impl $name {
            /// SPIRE's Config service for this plugin.
            pub fn config_service(&self) -> crate::config::ConfigService<State> {
                crate::config::ConfigService(self.0.clone())
            }
        }

        #[tonic::async_trait]
        impl km::key_manager_server::KeyManager for $name {
            async fn generate_key(
                &self,
                req: tonic::Request<km::GenerateKeyRequest>,
            ) -> Result<tonic::Response<km::GenerateKeyResponse>, Status> {
                let req = req.into_inner();
                let public = self.0.get()?.generate(req.key_id, req.key_type).await?;
                Ok(tonic::Response::new(km::GenerateKeyResponse { public_key: Some(to_pb(public)) }))
            }

            async fn get_public_key(
                &self,
                req: tonic::Request<km::GetPublicKeyRequest>,
            ) -> Result<tonic::Response<km::GetPublicKeyResponse>, Status> {
                let id = req.into_inner().key_id;
                if id.is_empty() {
                    return Err(Status::invalid_argument("key id is required"));
                }
                let public = self.0.get()?.get(&id).ok_or_else(|| Status::not_found(format!("no such key {id:?}")))?;
                Ok(tonic::Response::new(km::GetPublicKeyResponse { public_key: Some(to_pb(public)) }))
            }

            async fn get_public_keys(
                &self,
                _req: tonic::Request<km::GetPublicKeysRequest>,
            ) -> Result<tonic::Response<km::GetPublicKeysResponse>, Status> {
                let public_keys = self.0.get()?.list().into_iter().map(to_pb).collect();
                Ok(tonic::Response::new(km::GetPublicKeysResponse { public_keys }))
            }

            async fn sign_data(
                &self,
                req: tonic::Request<km::SignDataRequest>,
            ) -> Result<tonic::Response<km::SignDataResponse>, Status> {
                use km::sign_data_request::SignerOpts as Opts;
                let req = req.into_inner();
                let opts = req.signer_opts.map(|o| match o {
                    Opts::HashAlgorithm(h) => SignerOpts::Hash(h),
                    Opts::PssOptions(p) => SignerOpts::Pss { salt_length: p.salt_length, hash: p.hash_algorithm },
                });
                let (signature, key_fingerprint) = self.0.get()?.sign(req.key_id, req.data, opts).await?;
                Ok(tonic::Response::new(km::SignDataResponse { signature, key_fingerprint }))
            }
        }

        fn to_pb(p: Public) -> km::PublicKey {
            km::PublicKey { id: p.id, r#type: p.kind, pkix_data: p.pkix, fingerprint: p.fingerprint }
        }
    };
}

/// The agent's KeyManager (`spire.plugin.agent.keymanager.v1`).
pub mod agent {
    use super::*;
    keymanager_service!(AgentKeyManager, crate::pb::agent_keymanager);
    /// The services Init reports.
    pub const SERVICE_NAMES: [&str; 2] =
        ["spire.plugin.agent.keymanager.v1.KeyManager", "spire.service.common.config.v1.Config"];
}

/// The server's KeyManager (`spire.plugin.server.keymanager.v1`).
pub mod server {
    use super::*;
    keymanager_service!(ServerKeyManager, crate::pb::server_keymanager);
    /// The services Init reports.
    pub const SERVICE_NAMES: [&str; 2] =
        ["spire.plugin.server.keymanager.v1.KeyManager", "spire.service.common.config.v1.Config"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_become_minimal_der_for_both_curves() {
        for size in [32usize, 48] {
            let mut raw = vec![0u8; 2 * size];
            raw[size - 1] = 1;
            raw[size] = 0x80;
            raw[2 * size - 1] = 2;
            let der = ecdsa_der(&raw);
            assert_eq!(&der[2..5], &[0x02, 1, 1], "{size}");
            assert_eq!(&der[5..8], &[0x02, size as u8 + 1, 0], "{size}");
            assert_eq!(der[1] as usize, der.len() - 2);
        }
    }

    #[test]
    fn key_types_and_hashes_outside_what_the_tpm_signs_are_refused_by_name() {
        assert!(kind_of(0).unwrap_err().message().contains("key type is required"));
        assert!(kind_of(9).is_err());
        assert_eq!(kind_of(EC_P384).unwrap(), WrappedKind::EcP384);
        assert!(hash_of(0).unwrap_err().message().contains("hash algorithm is required"));
        assert!(hash_of(4).unwrap_err().message().contains("SHA-256, SHA-384 and SHA-512"));
        assert_eq!(hash_of(SHA512).unwrap(), Hash::Sha512);
    }
}
