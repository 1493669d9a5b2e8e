//! One keyset's live state: the policy it trusts now (the config's keys or a signed keyset update's), the
//! last-known-good token (pre-rendered for serving), the rollback floor, the per-source cache validators, and
//! the single-flight refresh (keyset updates first, then the bundle).
//!
//! Invariants: only a token that passed the trusted policy and is not older (innermost `iat`) than the newest
//! one accepted is ever stored or served; the floor only grows and is persisted with the token; a stored state
//! is re-verified on load and ignored if it does not verify; a held bundle the newly trusted policy refuses is
//! dropped when an update is accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::config::{KeysetConfig, Rejection, Source};
use super::fetch::{fetch, fetch_all, FetchError, Fetched, Validators};
use super::metrics::VerifierMetrics;
use super::trusted::{self, Trusted};
use common::client::HttpClient;
use common::clock::Clock;
use common::fsutil;

/// A verified bundle, rendered once for serving.
#[derive(Debug)]
pub struct Served {
    /// PEM body.
    pub pem: Bytes,
    /// SPIFFE bundle JSON body.
    pub json: Bytes,
    /// Good until (unix seconds).
    pub expires_at: u64,
    /// Innermost `iat`.
    pub signed_at: u64,
    /// The token it came from.
    pub token: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    token: String,
    signed_at: u64,
    accepted_at: u64,
}

/// Live state of one keyset.
#[derive(Debug)]
pub struct Keyset {
    name: String,
    cfg: KeysetConfig,
    state_file: PathBuf,
    keys_file: PathBuf,
    trusted: RwLock<Arc<Trusted>>,
    /// Why the stored keyset state cannot be used, if it cannot: then nothing is trusted (never the wider
    /// `keydir`) until an operator repairs or removes the file.
    keys_unusable: Option<String>,
    /// Per keys source: the validators and text of its last answer (a 304 reuses the text, so a chain split
    /// across sources is still followed).
    keys_cache: Mutex<HashMap<usize, (Validators, Arc<str>)>>,
    metrics: Arc<VerifierMetrics>,
    current: RwLock<Option<Arc<Served>>>,
    floor: AtomicU64,
    /// When a source last confirmed or replaced the token (ms since `epoch`).
    contacted_ms: AtomicU64,
    epoch: Instant,
    validators: Mutex<HashMap<usize, Validators>>,
    refreshing: tokio::sync::Mutex<()>,
    /// Completed refresh attempts, successful or not: a waiter that sees it move shares that attempt's result.
    attempts: AtomicU64,
    /// What `iat`, `exp` and the rollback floor are judged by.
    clock: Clock,
}

impl Keyset {
    /// Creates the keyset and loads its persisted state from `state_dir` (an unusable state is logged and
    /// ignored).
    pub fn new(name: &str, cfg: KeysetConfig, state_dir: &Path, metrics: Arc<VerifierMetrics>, clock: Clock) -> Keyset {
        let keys_file = keys_state_file(state_dir, name);
        let (trusted, keys_unusable) = match Trusted::load(name, &cfg.policy, &keys_file) {
            Ok(t) => (t, None),
            Err(e) => {
                let reason = format!(
                    "keyset state {} is unusable ({}): trusting no key until it is repaired or removed (removing it \
                     trusts keydir again, from version 0)",
                    keys_file.display(),
                    common::report::error_chain(&e)
                );
                tracing::error!(keyset = name, %reason, "unusable keyset state; serving nothing");
                (Trusted::from_config(&cfg.policy), Some(reason))
            }
        };
        metrics.keys_version.with_label_values(&[name]).set(trusted.version as f64);
        metrics.last_success.with_label_values(&[name]).set(0.0);
        metrics.backup_in_use.with_label_values(&[name]).set(0.0);
        let ks = Keyset {
            name: name.to_owned(),
            cfg,
            state_file: bundle_state_file(state_dir, name),
            keys_file,
            trusted: RwLock::new(Arc::new(trusted)),
            keys_unusable,
            keys_cache: Mutex::new(HashMap::new()),
            metrics,
            current: RwLock::new(None),
            floor: AtomicU64::new(0),
            contacted_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            validators: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            clock,
        };
        ks.load();
        ks
    }

    fn load(&self) {
        let text = match std::fs::read_to_string(&self.state_file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(keyset = %self.name, file = %self.state_file.display(), error = %e, "cannot read state; ignoring it");
                return;
            }
        };
        let stored: Stored = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(keyset = %self.name, file = %self.state_file.display(), error = %e, "corrupt state file; ignoring it");
                return;
            }
        };
        // The token must have verified when it was accepted, and carry the recorded signing time.
        match self.verify(&stored.token, stored.accepted_at) {
            Ok(v) if v.signed_at == stored.signed_at => {}
            Ok(_) => {
                tracing::error!(keyset = %self.name, "state file's signing time does not match its token; ignoring it");
                return;
            }
            // Signed by a key an update retired since: it was good when accepted, and its signing time still
            // bounds what may be accepted next (a replayed older token of a key still trusted).
            Err(Rejection::Retired { key, version, .. }) => {
                tracing::info!(keyset = %self.name, key, version, signed_at = stored.signed_at, "stored token signed by a key retired since; kept only as the rollback floor");
                self.floor.store(stored.signed_at, Ordering::SeqCst);
                return;
            }
            // Every layer signed by a key this node trusts or retired, and signed when the record says: the token
            // verified when it was accepted, and a policy changed since (a longer chain, a higher threshold, a
            // trust domain) does not make an older token safe to accept. Its signing time stays the floor.
            Err(e) if self.signed_by_known_keys(&stored.token, stored.accepted_at) == Some(stored.signed_at) => {
                tracing::warn!(keyset = %self.name, reason = %e, signed_at = stored.signed_at, "state file's token does not verify under the policy now; kept only as the rollback floor");
                self.floor.store(stored.signed_at, Ordering::SeqCst);
                return;
            }
            Err(e) => {
                tracing::error!(keyset = %self.name, error = %e, "state file's token does not verify; ignoring it");
                return;
            }
        }
        self.floor.store(stored.signed_at, Ordering::SeqCst);
        match self.verify(&stored.token, self.clock.now()) {
            Ok(v) => {
                tracing::info!(keyset = %self.name, signed_at = v.signed_at, exp = v.expires_at, "serving the stored bundle until a source confirms it");
                self.install(&v, &stored.token);
            }
            Err(e) => {
                tracing::info!(keyset = %self.name, reason = %e, signed_at = stored.signed_at, "stored token no longer valid; kept only as the rollback floor")
            }
        }
    }

    fn install(&self, v: &crypto::policy::Verified, token: &str) {
        let served = Served {
            pem: Bytes::from(v.bundle.to_pem()),
            json: Bytes::from(v.bundle.to_spiffe_json()),
            expires_at: v.expires_at,
            signed_at: v.signed_at,
            token: token.to_owned(),
        };
        self.metrics.signed_at.with_label_values(&[&self.name]).set(v.signed_at as f64);
        self.metrics.backup_in_use.with_label_values(&[&self.name]).set(if v.used_backup { 1.0 } else { 0.0 });
        *common::sync::write(&self.current) = Some(Arc::new(served));
    }

    /// Verifies a bundle token under the policy trusted now.
    pub fn verify(&self, token: &str, now: u64) -> Result<crypto::policy::Verified, Rejection> {
        if let Some(reason) = &self.keys_unusable {
            return Err(Rejection::KeysState(reason.clone()));
        }
        let trusted = self.trusted();
        self.cfg.verify_trusted(&trusted, token, now)
    }

    /// The innermost `iat` of bundle token `token` if each of its layers, at time `at`, is signed by a key the
    /// policy holds or an update retired, whatever the policy's structure asks: a token this node once accepted,
    /// not one a damaged state file holds.
    fn signed_by_known_keys(&self, token: &str, at: u64) -> Option<u64> {
        let trusted = self.trusted();
        let keys: Vec<&crypto::keys::VerifyingKey> =
            trusted.policy.keys().chain(trusted.retired.iter().map(|r| &r.key)).collect();
        let limits = trusted.policy.limits();
        let mut current = token.to_owned();
        for _ in 0..limits.max_depth {
            let layer =
                crypto::token::verify_layer_of(crypto::token::Kind::Bundle, &current, &keys, at, limits).ok()?;
            match layer.claims.payload {
                crypto::token::Payload::Token(inner) => current = inner,
                crypto::token::Payload::Bundle(_) => return Some(layer.claims.iat),
                _ => return None,
            }
        }
        None
    }

    /// The policy trusted now.
    pub fn trusted(&self) -> Arc<Trusted> {
        common::sync::read(&self.trusted).clone()
    }

    /// Why this keyset trusts no key, when its stored keyset state is unusable.
    pub fn unusable(&self) -> Option<&str> {
        self.keys_unusable.as_deref()
    }

    /// The trust domain this keyset is bound to, if any.
    pub fn trust_domain(&self) -> Option<&crypto::TrustDomain> {
        self.cfg.trust_domain.as_ref()
    }

    /// The bundle to serve now, if a valid one is held.
    pub fn serving(&self, now: u64) -> Option<Arc<Served>> {
        let cur = common::sync::read(&self.current).clone()?;
        (now <= cur.expires_at).then_some(cur)
    }

    /// The newest signing time accepted (the rollback floor).
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }

    /// True when no source confirmed the token within `age`.
    pub fn stale(&self, age: Duration) -> bool {
        let last = self.contacted_ms.load(Ordering::Relaxed);
        last == 0 || self.epoch.elapsed().as_millis() as u64 > last + age.as_millis() as u64
    }

    fn touch(&self) {
        self.contacted_ms.store((self.epoch.elapsed().as_millis() as u64).max(1), Ordering::Relaxed);
        self.metrics.last_success.with_label_values(&[&self.name]).set(self.clock.now() as f64);
    }

    /// Refreshes unless a refresh is already running (then returns at once).
    pub async fn refresh_if_idle(&self, client: &HttpClient, max_size: usize, timeout: Duration) {
        if let Ok(_guard) = self.refreshing.try_lock() {
            self.refresh_locked(client, max_size, timeout).await;
        }
    }

    /// Refreshes, or, when a refresh is already running, waits for it and shares its result (success or failure)
    /// instead of starting another: concurrent agents asking while no valid bundle is held cost one fetch.
    pub async fn refresh(&self, client: &HttpClient, max_size: usize, timeout: Duration) {
        let seen = self.attempts.load(Ordering::SeqCst);
        let _guard = self.refreshing.lock().await;
        if self.attempts.load(Ordering::SeqCst) != seen {
            return; // An attempt finished while we waited: its outcome is ours.
        }
        self.refresh_locked(client, max_size, timeout).await;
    }

    async fn refresh_locked(&self, client: &HttpClient, max_size: usize, timeout: Duration) {
        self.refresh_sources(client, max_size, timeout).await;
        self.attempts.fetch_add(1, Ordering::SeqCst);
    }

    /// Fetches every keys source at once (so the phase takes one timeout at most, however many sources hang) and
    /// applies the newest chain of updates that verifies across all of them, each update against the policy in
    /// force when its turn comes. A source that fails, answers garbage or holds nothing newer is one source of
    /// several, never the end of the search.
    async fn refresh_keys(&self, client: &HttpClient, max_size: usize, timeout: Duration) {
        if self.keys_unusable.is_some() || self.cfg.keys_sources.is_empty() {
            return;
        }
        let validators: Vec<Option<Validators>> = (0..self.cfg.keys_sources.len())
            .map(|i| common::sync::lock(&self.keys_cache).get(&i).map(|(v, _)| v.clone()))
            .collect();
        let answers = fetch_all(client, &self.cfg.keys_sources, validators, max_size, timeout).await;
        let held = self.trusted();
        // Each source's text: a fresh answer, or the last one on a 304.
        let mut texts: Vec<(String, Arc<str>, bool)> = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            let source = &self.cfg.keys_sources[i];
            match answer {
                Ok(Fetched::Token(text, validators)) => {
                    let text: Arc<str> = Arc::from(text);
                    common::sync::lock(&self.keys_cache).insert(i, (validators, text.clone()));
                    if let Some(newest) = text.lines().filter_map(trusted::claimed_version).max() {
                        if newest < held.version {
                            self.metrics.keys_updates.with_label_values(&[&self.name, "stale"]).inc();
                            tracing::warn!(keyset = %self.name, %source, newest, version = held.version, "keys source is stale: its newest update is older than the version held (a replay or rollback); trying the others");
                        }
                    }
                    texts.push((source.to_string(), text, true));
                }
                Ok(Fetched::NotModified) => match common::sync::lock(&self.keys_cache).get(&i) {
                    Some((_, text)) => texts.push((source.to_string(), text.clone(), false)),
                    None => tracing::warn!(keyset = %self.name, %source, "unexpected 304 from a keys source"),
                },
                // None published here is normal, but another source may hold what this one lost.
                Err(e) if not_published(source, &e) => {
                    tracing::debug!(keyset = %self.name, %source, "no keyset update published here")
                }
                Err(e) => {
                    tracing::warn!(keyset = %self.name, %source, error = %e, "keys source failed; trying the others")
                }
            }
        }
        // Verifying is CPU work a keys source chooses the size of (up to MAX_LINES lines, each with the keys its
        // document introduces): off the event loop, which keeps answering agents meanwhile.
        let (name, now, work) = (self.name.clone(), self.clock.now(), texts.clone());
        let trusted_now = held.clone();
        #[cfg(test)]
        let gate = self.keys_file.clone();
        let applied = match tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            tests::hold_write(&gate);
            let pairs: Vec<(&str, &str)> = work.iter().map(|(s, t, _)| (s.as_str(), &**t)).collect();
            trusted::apply(&name, &trusted_now, &trusted::lines(&pairs), now)
        })
        .await
        {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(keyset = %self.name, error = %e, "keyset update task failed; keeping the keys held");
                return;
            }
        };
        for (source, e) in &applied.refused {
            // A line of a text already seen (a 304) was refused, and said so, when it was new.
            if texts.iter().any(|(s, _, fresh)| s == source && *fresh) {
                self.metrics.keys_updates.with_label_values(&[&self.name, "refused"]).inc();
                tracing::warn!(keyset = %self.name, %source, version = held.version, reason = %e, "keyset update refused; skipping it");
            }
        }
        let Some(trusted) = applied.trusted else { return };
        let data = trusted.to_stored();
        let file = self.keys_file.clone();
        match tokio::task::spawn_blocking(move || fsutil::write_atomic(&file, ".keys.tmp", &data, 0o600)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(keyset = %self.name, file = %self.keys_file.display(), error = %e, "cannot store the keyset update; not applying it");
                return;
            }
            Err(e) => {
                tracing::error!(keyset = %self.name, error = %e, "keyset update store task failed; not applying it");
                return;
            }
        }
        let version = trusted.version;
        let keys: Vec<&str> = trusted.policy.keys().map(|k| k.name()).collect();
        let source = match &trusted.origin {
            trusted::Origin::Update { source, .. } => source.clone(),
            trusted::Origin::Config => String::new(),
        };
        tracing::info!(keyset = %self.name, %source, from = held.version, version, keys = %keys.join(","), "accepted a keyset update: trusting its keys");
        *common::sync::write(&self.trusted) = Arc::new(trusted);
        let accepted = applied.accepted.len() as u64;
        self.metrics.keys_updates.with_label_values(&[&self.name, "accepted"]).inc_by(accepted);
        self.metrics.keys_version.with_label_values(&[&self.name]).set(version as f64);
        // A bundle the new policy refuses (signed by a retired key) is served no longer.
        if let Some(cur) = self.serving(self.clock.now()) {
            if let Err(e) = self.verify(&cur.token, self.clock.now()) {
                tracing::warn!(keyset = %self.name, version, reason = %e, "the held bundle is not signed as the trusted keys require; no longer serving it");
                *common::sync::write(&self.current) = None;
            }
        }
    }

    async fn refresh_sources(&self, client: &HttpClient, max_size: usize, timeout: Duration) {
        self.refresh_keys(client, max_size, timeout).await;
        let holding = self.serving(self.clock.now()).is_some();
        for (i, source) in self.cfg.sources.iter().enumerate() {
            let validators = if holding { common::sync::lock(&self.validators).get(&i).cloned() } else { None };
            let fetched = fetch(client, source, validators.as_ref(), max_size, timeout).await;
            let label = source.to_string();
            let count = |result: &str| self.metrics.fetches.with_label_values(&[&self.name, &label, result]).inc();
            let (token, new_validators) = match fetched {
                Ok(Fetched::NotModified) => {
                    tracing::debug!(keyset = %self.name, %source, "not modified");
                    count("not_modified");
                    self.touch();
                    return;
                }
                Ok(Fetched::Token(t, v)) => (t, v),
                Err(e) => {
                    count("failed");
                    tracing::warn!(keyset = %self.name, %source, error = %e, "source failed; trying the next");
                    continue;
                }
            };
            let now = self.clock.now();
            let verified = match self.verify(&token, now) {
                Ok(v) => v,
                Err(e) => {
                    self.metrics.rejected(&self.name, &label, &e);
                    tracing::warn!(keyset = %self.name, %source, error = %e, "token rejected; trying the next source");
                    continue;
                }
            };
            let floor = self.floor();
            if verified.signed_at < floor {
                self.metrics.rejections.with_label_values(&[&self.name, "rollback"]).inc();
                count("rejected");
                tracing::warn!(keyset = %self.name, %source, signed_at = verified.signed_at, newest = floor, "rollback: token older than one already accepted; rejected");
                continue;
            }
            count("accepted");
            let changed = self.serving(now).map(|s| s.signed_at) != Some(verified.signed_at);
            self.floor.store(verified.signed_at, Ordering::SeqCst);
            self.install(&verified, &token);
            self.touch();
            common::sync::lock(&self.validators).insert(i, new_validators);
            if verified.used_backup {
                tracing::warn!(keyset = %self.name, %source, "token verified with the BACKUP key standing in for a chain key");
            }
            if changed {
                tracing::info!(keyset = %self.name, %source, signed_at = verified.signed_at, exp = verified.expires_at, certs = verified.bundle.certificates().len(), "accepted a new bundle");
            }
            self.persist(&token, verified.signed_at, now).await;
            return;
        }
        match self.serving(self.clock.now()) {
            Some(s) => {
                tracing::warn!(keyset = %self.name, exp = s.expires_at, "every source failed; serving the cached bundle until it expires")
            }
            None => {
                tracing::error!(keyset = %self.name, "every source failed and no valid cached bundle: agents get 503")
            }
        }
    }

    /// Writes the state durably (two fsyncs) on the blocking pool, never on the event loop that answers agents;
    /// the refresh lock held by the caller keeps writes in order.
    async fn persist(&self, token: &str, signed_at: u64, accepted_at: u64) {
        let stored = Stored { token: token.to_owned(), signed_at, accepted_at };
        let Ok(data) = serde_json::to_vec(&stored) else { return };
        let file = self.state_file.clone();
        let written = tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            tests::hold_write(&file);
            fsutil::write_atomic(&file, ".state.tmp", &data, 0o600)
        })
        .await;
        let error = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(keyset = %self.name, file = %self.state_file.display(), %error, "cannot persist state; rollback floor will not survive a restart");
    }
}

/// The state file of keyset `name`'s last accepted token, whose signing time is the rollback floor.
pub fn bundle_state_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.json"))
}

/// The rollback floor `file` records: the signing time of the last token the daemon accepted; 0 when there is no
/// file. The file is the daemon's own (written atomically, in a state directory only it may write).
pub fn stored_floor(file: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(file) {
        Ok(text) => serde_json::from_str::<Stored>(&text).map(|s| s.signed_at).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The state file of keyset `name`'s trusted keys.
pub fn keys_state_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join(format!("{name}.keys.json"))
}

/// A 404 (or a missing file): no keyset update was ever published, which is normal.
fn not_published(source: &Source, e: &FetchError) -> bool {
    match (source, e) {
        (_, FetchError::Status(s)) => *s == http::StatusCode::NOT_FOUND,
        (Source::File(_), FetchError::File { cause: source, .. }) => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
