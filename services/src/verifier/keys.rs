//! The policy a keyset trusts now, and how signed keyset updates move it: version 0 is the keys in `keydir`
//! (the config); each accepted update raises the version and is stored in `state-dir` (`NAME.keys.json`).
//!
//! Invariants: an update is applied only after [`crypto::keyset::verify_update`] accepted it against the
//! policy trusted at that moment; versions only go up; the stored state is written atomically and a corrupt,
//! foreign or unreadable one falls back to the config's keys (version 0), never to anything wider.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crypto::keys::VerifyingKey;
use crypto::keyset::{Document, UpdateError};
use crypto::policy::Policy;

/// Why a stored keyset state cannot be used (the verifier then trusts its config's keys, version 0).
#[derive(Debug, thiserror::Error)]
enum StateError {
    #[error("not the state's JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("its keyset document: {0}")]
    Document(#[source] crypto::keyset::DocumentError),
    #[error("it holds keyset {0:?}")]
    OtherKeyset(String),
    #[error("version {stored} does not match its document's {document}")]
    Version { stored: u64, document: u64 },
    #[error("a retired key: {0}")]
    RetiredKey(#[source] crypto::KeyError),
}

/// Retired keys remembered for diagnosis (the newest are kept).
const MAX_RETIRED: usize = 32;

/// Where the trusted policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The keys in the config's `keydir`.
    Config,
    /// A signed update, fetched from `source` and accepted at `accepted_at` (unix seconds).
    Update {
        /// The source URL.
        source: String,
        /// When it was accepted.
        accepted_at: u64,
    },
}

/// A key an update dropped.
#[derive(Debug, Clone)]
pub struct Retired {
    /// The key.
    pub key: VerifyingKey,
    /// The version of the update that dropped it.
    pub by_version: u64,
}

/// The policy a keyset trusts now.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// The policy.
    pub policy: Policy,
    /// 0 for the config's keys, else the version of the update that installed it.
    pub version: u64,
    /// Where it came from.
    pub origin: Origin,
    /// The document of the update that installed it (empty for version 0).
    pub document: String,
    /// Keys earlier updates dropped, newest last.
    pub retired: Vec<Retired>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u64,
    document: String,
    source: String,
    accepted_at: u64,
    retired: Vec<StoredRetired>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRetired {
    name: String,
    pem: String,
    by_version: u64,
}

impl Trusted {
    /// The config's keys, version 0.
    pub fn from_config(policy: &Policy) -> Trusted {
        Trusted { policy: policy.clone(), version: 0, origin: Origin::Config, document: String::new(), retired: vec![] }
    }

    /// The trusted policy of keyset `name`: the stored one in `file` when it is usable, else the config's.
    pub fn load(name: &str, config: &Policy, file: &Path) -> Trusted {
        let fallback = Trusted::from_config(config);
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return fallback,
            Err(e) => {
                tracing::error!(keyset = name, file = %file.display(), error = %e, "cannot read the keyset state; trusting the config's keys (version 0)");
                return fallback;
            }
        };
        match Self::parse(name, config, &text) {
            Ok(t) => {
                tracing::info!(keyset = name, version = t.version, "trusting the keys of a stored keyset update");
                t
            }
            Err(why) => {
                tracing::error!(keyset = name, file = %file.display(), reason = %why, "unusable keyset state; trusting the config's keys (version 0)");
                fallback
            }
        }
    }

    fn parse(name: &str, config: &Policy, text: &str) -> Result<Trusted, StateError> {
        let stored: Stored = serde_json::from_str(text).map_err(StateError::Json)?;
        let document = Document::parse(&stored.document, *config.limits()).map_err(StateError::Document)?;
        if document.keyset() != name {
            return Err(StateError::OtherKeyset(document.keyset().to_owned()));
        }
        if document.version() != stored.version {
            return Err(StateError::Version { stored: stored.version, document: document.version() });
        }
        let mut retired = Vec::new();
        for r in stored.retired.iter().rev().take(MAX_RETIRED).rev() {
            let key = VerifyingKey::from_pem(&r.name, r.pem.as_bytes()).map_err(StateError::RetiredKey)?;
            retired.push(Retired { key, by_version: r.by_version });
        }
        Ok(Trusted {
            policy: document.policy().clone(),
            version: stored.version,
            origin: Origin::Update { source: stored.source, accepted_at: stored.accepted_at },
            document: stored.document,
            retired,
        })
    }

    /// The state file's bytes.
    pub fn to_stored(&self) -> Vec<u8> {
        let (source, accepted_at) = match &self.origin {
            Origin::Config => (String::new(), 0),
            Origin::Update { source, accepted_at } => (source.clone(), *accepted_at),
        };
        let stored = Stored {
            version: self.version,
            document: self.document.clone(),
            source,
            accepted_at,
            retired: self
                .retired
                .iter()
                .map(|r| StoredRetired { name: r.key.name().to_owned(), pem: r.key.to_pem(), by_version: r.by_version })
                .collect(),
        };
        serde_json::to_vec_pretty(&stored).unwrap_or_default()
    }

    /// The retired key that signed a layer of `token`, if one did (for saying why a token was refused).
    pub fn retired_signer(&self, token: &str) -> Option<&Retired> {
        let limits = *self.policy.limits();
        let mut current = token.trim().to_owned();
        for _ in 0..limits.max_depth {
            if let Some(r) = self.retired.iter().rev().find(|r| crypto::token::signed_by(&current, &r.key, &limits)) {
                return Some(r);
            }
            match crypto::token::outer_payload_unverified(&current, &limits) {
                Ok(crypto::token::Payload::Token(inner)) => current = inner,
                _ => return None,
            }
        }
        None
    }

    /// What the node trusts, for `verifier CONFIG KEYSET --keys`.
    pub fn describe(&self, name: &str, state_file: &Path) -> String {
        let mut out = format!("keyset {name}: version {}\n", self.version);
        match &self.origin {
            Origin::Config => out.push_str("from: the config's keydir (no keyset update accepted)\n"),
            Origin::Update { source, accepted_at } => out.push_str(&format!(
                "from: keyset update version {} fetched from {source}, accepted at {accepted_at}, stored in {}\n",
                self.version,
                state_file.display()
            )),
        }
        match self.policy.threshold_keys() {
            Some((k, keys)) => {
                out.push_str(&format!("threshold: {k} of {}\n", keys.len()));
                for key in keys {
                    out.push_str(&format!("  key {} sha256:{}\n", key.name(), key.fingerprint()));
                }
            }
            None => {
                for (i, key) in self.policy.chain().iter().enumerate() {
                    out.push_str(&format!("chain[{i}]: {} sha256:{}\n", key.name(), key.fingerprint()));
                }
                if let Some(b) = self.policy.backup() {
                    out.push_str(&format!("backup: {} sha256:{}\n", b.name(), b.fingerprint()));
                }
            }
        }
        for r in &self.retired {
            out.push_str(&format!(
                "retired by version {}: {} sha256:{}\n",
                r.by_version,
                r.key.name(),
                r.key.fingerprint()
            ));
        }
        out
    }
}

/// What applying a keys file did.
#[derive(Debug)]
pub struct Applied {
    /// The new trusted policy, when at least one update was accepted.
    pub trusted: Option<Trusted>,
    /// The updates accepted, by version.
    pub accepted: Vec<u64>,
    /// Why the first update that was newer than the one held was refused (later ones were not tried).
    pub refused: Option<UpdateError>,
    /// The newest version the file holds when it holds nothing newer than the version held and something
    /// older: a replayed or rolled-back file.
    pub stale: Option<u64>,
}

/// Applies the updates in keys file `text` (one update token per line, oldest first) on top of `trusted`, each
/// verified against the policy in force when it comes: a node that missed several updates follows them all.
/// Lines at or below the version held are skipped.
pub fn apply(name: &str, trusted: &Trusted, text: &str, source: &str, now: u64) -> Applied {
    let mut current = trusted.clone();
    let mut applied = Applied { trusted: None, accepted: vec![], refused: None, stale: None };
    let mut newest_seen = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match crypto::keyset::verify_update(&current.policy, name, current.version, line, now) {
            Ok(update) => {
                let doc = update.document;
                let mut retired = current.retired.clone();
                retired.extend(
                    doc.retired(&current.policy).into_iter().map(|key| Retired { key, by_version: doc.version() }),
                );
                let excess = retired.len().saturating_sub(MAX_RETIRED);
                retired.drain(..excess);
                applied.accepted.push(doc.version());
                current = Trusted {
                    policy: doc.policy().clone(),
                    version: doc.version(),
                    origin: Origin::Update { source: source.to_owned(), accepted_at: now },
                    document: doc.text().to_owned(),
                    retired,
                };
            }
            Err(UpdateError::NotNewer { version, .. }) => {
                newest_seen = newest_seen.max(Some(version));
            }
            Err(e) => {
                applied.refused = Some(e);
                break;
            }
        }
    }
    if applied.accepted.is_empty() && applied.refused.is_none() {
        applied.stale = newest_seen.filter(|v| *v < trusted.version);
    }
    if !applied.accepted.is_empty() {
        applied.trusted = Some(current);
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crypto::token::{Claims, Payload, TokenBuilder};
    use tpm::mock::SoftwareKey;
    use tpm::KeySigner as _;

    const NOW: u64 = 1_800_000_000;

    struct Key(SoftwareKey, VerifyingKey);

    fn key(name: &str) -> Key {
        let k = SoftwareKey::generate(tpm::KeyType::EccP256);
        let v = VerifyingKey::from_spki_der(name, k.public_key().spki_der()).unwrap();
        Key(k, v)
    }

    fn sign(k: &Key, payload: Payload) -> String {
        let claims = Claims { payload, iss: String::new(), iat: NOW, nbf: NOW, exp: NOW + 3600, trust_domain: None };
        let b = TokenBuilder::new(crypto::Alg::Es256, &claims);
        let sig = k.0.sign_digest(&b.digest()).unwrap();
        b.finish(&sig).unwrap()
    }

    /// An update to `chain` at `version`, signed by `signers` innermost first.
    fn update(version: u64, chain: &[&Key], signers: &[&Key]) -> String {
        let policy = Policy::new(chain.iter().map(|k| k.1.clone()).collect(), None, crypto::Limits::default()).unwrap();
        let doc = Document::new("main", version, NOW + 86400, &policy).unwrap();
        let mut token = sign(signers[0], Payload::Keyset(doc.text().to_owned()));
        for s in &signers[1..] {
            token = sign(s, Payload::Token(token));
        }
        token
    }

    fn config(a: &Key) -> Policy {
        Policy::new(vec![a.1.clone()], None, crypto::Limits::default()).unwrap()
    }

    #[test]
    fn a_node_that_missed_updates_follows_them_in_order_and_remembers_retired_keys() {
        let (a, b, c) = (key("a.pem"), key("b.pem"), key("c.pem"));
        let start = Trusted::from_config(&config(&a));
        let file = format!("{}\n\n{}\n", update(1, &[&b], &[&a, &b]), update(2, &[&c], &[&b, &c]));
        let applied = apply("main", &start, &file, "http://x/keys", NOW + 1);
        assert_eq!(applied.accepted, [1, 2]);
        assert!(applied.refused.is_none() && applied.stale.is_none());
        let t = applied.trusted.unwrap();
        assert_eq!((t.version, t.policy.chain()[0].name()), (2, "c.pem"));
        let retired: Vec<(&str, u64)> = t.retired.iter().map(|r| (r.key.name(), r.by_version)).collect();
        assert_eq!(retired, [("a.pem", 1), ("b.pem", 2)]);
        // A bundle token by a retired key is recognised as such.
        let by_a = sign(&a, Payload::Bundle("x".into()));
        assert_eq!(t.retired_signer(&by_a).map(|r| r.by_version), Some(1));
        assert!(t.retired_signer(&sign(&c, Payload::Bundle("x".into()))).is_none());
        // The same file again: nothing newer, nothing stale, nothing refused.
        let again = apply("main", &t, &file, "http://x/keys", NOW + 2);
        assert!(
            again.trusted.is_none() && again.accepted.is_empty() && again.refused.is_none() && again.stale.is_none()
        );
        // Only version 1 again: a replay.
        let replay = apply("main", &t, &update(1, &[&b], &[&a, &b]), "http://x/keys", NOW + 2);
        assert_eq!(replay.stale, Some(1));
        assert!(replay.trusted.is_none());
    }

    #[test]
    fn the_first_refused_update_stops_the_file_and_keeps_what_came_before() {
        let (a, b, c, rogue) = (key("a.pem"), key("b.pem"), key("c.pem"), key("rogue.pem"));
        let start = Trusted::from_config(&config(&a));
        let file = format!(
            "{}\n{}\n{}\n",
            update(1, &[&b], &[&a, &b]),
            update(2, &[&rogue], &[&rogue]),
            update(3, &[&c], &[&b, &c])
        );
        let applied = apply("main", &start, &file, "file:///k", NOW + 1);
        assert_eq!(applied.accepted, [1]);
        assert!(matches!(applied.refused, Some(UpdateError::Current(_))), "{:?}", applied.refused);
        assert_eq!(applied.trusted.unwrap().version, 1);
        let garbage = apply("main", &start, "not a token\n", "file:///k", NOW + 1);
        assert!(matches!(garbage.refused, Some(UpdateError::NotAnUpdate(_))));
    }

    #[test]
    fn stored_state_round_trips_and_anything_unusable_falls_back_to_the_config() {
        let (a, b) = (key("a.pem"), key("b.pem"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("main.keys.json");
        let cfg = config(&a);
        let t =
            apply("main", &Trusted::from_config(&cfg), &update(1, &[&b], &[&a, &b]), "http://x", NOW).trusted.unwrap();
        std::fs::write(&file, t.to_stored()).unwrap();
        let loaded = Trusted::load("main", &cfg, &file);
        assert_eq!((loaded.version, loaded.policy.chain()[0].name()), (1, "b.pem"));
        assert_eq!(loaded.origin, Origin::Update { source: "http://x".into(), accepted_at: NOW });
        assert_eq!(loaded.retired.len(), 1);
        assert!(loaded.describe("main", &file).contains("retired by version 1: a.pem"));
        // Missing: the config's keys, silently. Corrupt, another keyset's, or tampered: the config's keys.
        assert_eq!(Trusted::load("main", &cfg, &dir.path().join("none")).version, 0);
        let stored = String::from_utf8(t.to_stored()).unwrap();
        for bad in [
            "{ not json".to_owned(),
            stored.replace("\\\"keyset\\\":\\\"main\\\"", "\\\"keyset\\\":\\\"other\\\""),
            stored.replace("\"version\": 1", "\"version\": 7"),
            stored.replace("BEGIN PUBLIC KEY", "BEGIN NOTHING"),
            String::new(),
        ] {
            assert_ne!(bad, stored);
            std::fs::write(&file, &bad).unwrap();
            let got = Trusted::load("main", &cfg, &file);
            assert_eq!((got.version, got.origin.clone()), (0, Origin::Config), "{bad}");
            assert!(got.policy.chain()[0].same_key(&a.1), "{bad}");
        }
    }
}
