//! The policy a keyset trusts now, and how signed keyset updates move it: version 0 is the keys in `keydir`
//! (the config); each accepted update raises the version and is stored in `state-dir` (`NAME.keys.json`).
//!
//! Invariants: an update is applied only after [`crypto::keyset::verify_update`] accepted it against the
//! policy trusted at that moment; versions only go up; the stored state is written atomically. A stored state
//! that cannot be read is never replaced by anything wider: the keyset then trusts nothing and says why, until an
//! operator removes the file (which means: trust `keydir` again). Changing `keydir` by hand (a node that was off
//! longer than its updates lived) makes the node trust the new `keydir`, keeping the version it held as the floor
//! for later updates.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crypto::keys::VerifyingKey;
use crypto::keyset::{Document, UpdateError};
use crypto::policy::Policy;

/// Why a stored keyset state cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The file exists but cannot be read.
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    /// Not the state's JSON.
    #[error("not the state's JSON")]
    Json(#[source] serde_json::Error),
    /// Its keyset document does not parse.
    #[error("its keyset document")]
    Document(#[source] crypto::keyset::DocumentError),
    /// It is another keyset's.
    #[error("it holds keyset {0:?}")]
    OtherKeyset(String),
    /// Its version does not match its document's.
    #[error("version {stored} does not match its document's {document}")]
    Version {
        /// The stored version.
        stored: u64,
        /// The document's.
        document: u64,
    },
    /// A retired key does not parse.
    #[error("a retired key")]
    RetiredKey(#[source] crypto::KeyError),
}

/// Retired keys remembered for diagnosis (the newest are kept).
const MAX_RETIRED: usize = 32;

/// Most update lines considered in one refresh, across every keys source.
const MAX_LINES: usize = 256;

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
    /// The version held: 0 for the config's keys, else the version of the newest update accepted (the floor for
    /// the next one, also when the keys came from a `keydir` changed by hand since).
    pub version: u64,
    /// Where it came from.
    pub origin: Origin,
    /// The document of the update that installed it (empty when the keys are the config's).
    pub document: String,
    /// Keys earlier updates dropped, newest last.
    pub retired: Vec<Retired>,
    /// The config's policy this state grew from ([`config_digest`]).
    pub base: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u64,
    document: String,
    source: String,
    accepted_at: u64,
    retired: Vec<StoredRetired>,
    /// Absent in states written before it existed: taken as the config's.
    #[serde(default)]
    base: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRetired {
    name: String,
    pem: String,
    by_version: u64,
}

/// What a policy trusts, as text: its shape and its keys' fingerprints (not their names), so renaming a key file
/// is no change and replacing a key is one.
pub fn config_digest(policy: &Policy) -> String {
    let fingerprints = |keys: &[VerifyingKey]| keys.iter().map(|k| k.fingerprint()).collect::<Vec<_>>().join(",");
    let mut text = match policy.threshold_keys() {
        Some((k, keys)) => format!("threshold {k}: {}", fingerprints(keys)),
        None => format!("chain: {}", fingerprints(policy.chain())),
    };
    if let Some(b) = policy.backup() {
        text.push_str(&format!("; backup: {}", b.fingerprint()));
    }
    text
}

impl Trusted {
    /// The config's keys, version 0.
    pub fn from_config(policy: &Policy) -> Trusted {
        Trusted {
            policy: policy.clone(),
            version: 0,
            origin: Origin::Config,
            document: String::new(),
            retired: vec![],
            base: config_digest(policy),
        }
    }

    /// The trusted policy of keyset `name`: the config's when `file` does not exist; the stored one; or, when
    /// `keydir` was changed by hand since that state was stored, the config's keys with the stored version as
    /// the floor. A file that exists but cannot be used is an error: never a reason to trust anything wider.
    pub fn load(name: &str, config: &Policy, file: &Path) -> Result<Trusted, StateError> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Trusted::from_config(config)),
            Err(e) => return Err(StateError::Read(e)),
        };
        let stored = Self::parse(name, config, &text)?;
        if stored.base == config_digest(config) {
            tracing::info!(keyset = name, version = stored.version, "trusting the keys of a stored keyset update");
            return Ok(stored);
        }
        tracing::warn!(keyset = name, version = stored.version, file = %file.display(), "keydir differs from the keys this node's stored updates grew from: trusting keydir (changed by hand), and refusing updates at or below the version held");
        let mut rebased = Trusted::from_config(config);
        rebased.version = stored.version;
        rebased.retired = stored.retired.into_iter().filter(|r| !config.keys().any(|k| k.same_key(&r.key))).collect();
        Ok(rebased)
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
            base: stored.base.unwrap_or_else(|| config_digest(config)),
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
            base: Some(self.base.clone()),
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
            Origin::Config if self.version == 0 => {
                out.push_str("from: the config's keydir (no keyset update accepted)\n")
            }
            Origin::Config => out.push_str(&format!(
                "from: the config's keydir, changed by hand after version {} was accepted (updates up to it are refused)\n",
                self.version
            )),
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

/// One line of a keys source: an update token, and where it came from.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// The update token.
    pub token: &'a str,
    /// The source it came from.
    pub source: &'a str,
}

/// The lines of every keys source's text, in the order to try them: by the version their document claims (read
/// unverified, only to order them; each is verified when its turn comes), then by source and line order. At most
/// [`MAX_LINES`].
pub fn lines<'a>(texts: &[(&'a str, &'a str)]) -> Vec<Line<'a>> {
    let mut all: Vec<(u64, Line<'a>)> = Vec::new();
    for (source, text) in texts {
        for token in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if all.len() == MAX_LINES {
                tracing::warn!(source, max = MAX_LINES, "too many keyset update lines; the rest are ignored");
                break;
            }
            all.push((claimed_version(token).unwrap_or(u64::MAX), Line { token, source }));
        }
    }
    all.sort_by_key(|(v, _)| *v);
    all.into_iter().map(|(_, l)| l).collect()
}

/// The version the update's document claims, WITHOUT verifying anything (for ordering and for saying a source is
/// stale).
pub fn claimed_version(token: &str) -> Option<u64> {
    match crypto::token::innermost_unverified(token, &crypto::Limits::default()).ok()? {
        (_, crypto::token::Payload::Keyset(text)) => {
            Document::parse(&text, crypto::Limits::default()).ok().map(|d| d.version())
        }
        _ => None,
    }
}

/// What applying keys sources did.
#[derive(Debug)]
pub struct Applied {
    /// The new trusted policy, when at least one update was accepted.
    pub trusted: Option<Trusted>,
    /// The updates accepted, by version.
    pub accepted: Vec<u64>,
    /// The lines newer than the version held at their turn that did not verify, with why and where from. Each was
    /// skipped; the lines after it were still tried.
    pub refused: Vec<(String, UpdateError)>,
}

/// Applies `lines` (see [`lines`]) on top of `trusted`, each verified against the policy in force when its turn
/// comes: a node that missed several updates follows them all, whichever source holds each, and a line that does
/// not verify (a garbage mirror, an update the node is already past, one signed under keys it never trusted) is
/// skipped without stopping the rest. Reading more lines cannot widen trust: each must verify against what the
/// node trusts at that moment.
pub fn apply(name: &str, trusted: &Trusted, lines: &[Line<'_>], now: u64) -> Applied {
    let mut current = trusted.clone();
    let mut applied = Applied { trusted: None, accepted: vec![], refused: vec![] };
    for line in lines {
        match crypto::keyset::verify_update(&current.policy, name, current.version, line.token, now) {
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
                    origin: Origin::Update { source: line.source.to_owned(), accepted_at: now },
                    document: doc.text().to_owned(),
                    retired,
                    base: current.base.clone(),
                };
            }
            Err(UpdateError::NotNewer { .. }) => {}
            Err(e) => applied.refused.push((line.source.to_owned(), e)),
        }
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

    /// Applies one source's text.
    fn apply_text(trusted: &Trusted, text: &str, source: &str, now: u64) -> Applied {
        apply("main", trusted, &lines(&[(source, text)]), now)
    }

    #[test]
    fn a_node_that_missed_updates_follows_them_in_order_and_remembers_retired_keys() {
        let (a, b, c) = (key("a.pem"), key("b.pem"), key("c.pem"));
        let start = Trusted::from_config(&config(&a));
        let file = format!("{}\n\n{}\n", update(1, &[&b], &[&a, &b]), update(2, &[&c], &[&b, &c]));
        let applied = apply_text(&start, &file, "http://x/keys", NOW + 1);
        assert_eq!(applied.accepted, [1, 2]);
        assert!(applied.refused.is_empty());
        let t = applied.trusted.unwrap();
        assert_eq!((t.version, t.policy.chain()[0].name()), (2, "c.pem"));
        let retired: Vec<(&str, u64)> = t.retired.iter().map(|r| (r.key.name(), r.by_version)).collect();
        assert_eq!(retired, [("a.pem", 1), ("b.pem", 2)]);
        // A bundle token by a retired key is recognised as such.
        let by_a = sign(&a, Payload::Bundle("x".into()));
        assert_eq!(t.retired_signer(&by_a).map(|r| r.by_version), Some(1));
        assert!(t.retired_signer(&sign(&c, Payload::Bundle("x".into()))).is_none());
        // The same file again: nothing newer, nothing refused.
        let again = apply_text(&t, &file, "http://x/keys", NOW + 2);
        assert!(again.trusted.is_none() && again.accepted.is_empty() && again.refused.is_empty());
        // Only version 1 again: a replay, refused without a word (it is older than what is held).
        let replay = apply_text(&t, &update(1, &[&b], &[&a, &b]), "http://x/keys", NOW + 2);
        assert!(replay.trusted.is_none() && replay.refused.is_empty());
        assert_eq!(claimed_version(&update(7, &[&b], &[&a])), Some(7));
    }

    /// A line that does not verify is skipped, and the lines after it are still tried. The old verifier stopped at
    /// the first: a node installed with the current keys (b, after v1 moved a -> b) refused v1, never read v2
    /// (b -> c), and kept trusting b, which v2 retired.
    #[test]
    fn a_refused_line_is_skipped_and_the_lines_after_it_still_apply() {
        let (a, b, c, rogue) = (key("a.pem"), key("b.pem"), key("c.pem"), key("rogue.pem"));
        let file = format!("{}\n{}\n", update(1, &[&b], &[&a, &b]), update(2, &[&c], &[&b, &c]));
        let installed_with_b = Trusted::from_config(&config(&b));
        let applied = apply_text(&installed_with_b, &file, "http://x/keys", NOW + 1);
        assert_eq!(applied.accepted, [2], "{:?}", applied.refused);
        assert_eq!(applied.refused.len(), 1, "v1 was refused, and said so");
        assert_eq!(applied.trusted.unwrap().policy.chain()[0].name(), "c.pem");
        // A rogue line between two good ones.
        let start = Trusted::from_config(&config(&a));
        let file = format!(
            "{}\n{}\n{}\nnot a token\n",
            update(1, &[&b], &[&a, &b]),
            update(2, &[&rogue], &[&rogue]),
            update(3, &[&c], &[&b, &c])
        );
        let applied = apply_text(&start, &file, "file:///k", NOW + 1);
        assert_eq!(applied.accepted, [1, 3]);
        assert!(matches!(applied.refused[0].1, UpdateError::Current(_)), "{:?}", applied.refused);
        assert!(matches!(applied.refused[1].1, UpdateError::NotAnUpdate(_)), "{:?}", applied.refused);
        assert_eq!(applied.trusted.unwrap().version, 3);
    }

    /// Every keys source counts: a garbage, empty or stale first mirror no longer hides what a later one holds, and
    /// a chain split across sources is followed in version order.
    #[test]
    fn the_newest_chain_across_every_source_is_applied() {
        let (a, b, c) = (key("a.pem"), key("b.pem"), key("c.pem"));
        let start = Trusted::from_config(&config(&a));
        let (v1, v2) = (update(1, &[&b], &[&a, &b]), update(2, &[&c], &[&b, &c]));
        let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("garbage first", vec![("m1", "<html>oops</html>".into()), ("m2", format!("{v1}\n{v2}\n"))]),
            ("empty first", vec![("m1", String::new()), ("m2", format!("{v1}\n{v2}\n"))]),
            ("a stale first", vec![("m1", v1.clone()), ("m2", format!("{v1}\n{v2}\n"))]),
            ("split, newest first", vec![("m1", v2.clone()), ("m2", v1.clone())]),
        ];
        for (case, sources) in cases {
            let texts: Vec<(&str, &str)> = sources.iter().map(|(s, t)| (*s, t.as_str())).collect();
            let applied = apply("main", &start, &lines(&texts), NOW + 1);
            assert_eq!(applied.accepted, [1, 2], "{case}: {:?}", applied.refused);
            assert_eq!(applied.trusted.unwrap().policy.chain()[0].name(), "c.pem", "{case}");
        }
    }

    #[test]
    fn stored_state_round_trips_and_an_unusable_one_is_an_error_never_the_config() {
        let (a, b) = (key("a.pem"), key("b.pem"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("main.keys.json");
        let cfg = config(&a);
        let t = apply_text(&Trusted::from_config(&cfg), &update(1, &[&b], &[&a, &b]), "http://x", NOW).trusted.unwrap();
        std::fs::write(&file, t.to_stored()).unwrap();
        let loaded = Trusted::load("main", &cfg, &file).unwrap();
        assert_eq!((loaded.version, loaded.policy.chain()[0].name()), (1, "b.pem"));
        assert_eq!(loaded.origin, Origin::Update { source: "http://x".into(), accepted_at: NOW });
        assert_eq!(loaded.retired.len(), 1);
        assert!(loaded.describe("main", &file).contains("retired by version 1: a.pem"));
        // Missing: the config's keys, silently.
        assert_eq!(Trusted::load("main", &cfg, &dir.path().join("none")).unwrap().version, 0);
        // Corrupt, another keyset's, or tampered: an error. The old verifier trusted the config's keys again
        // (a, retired by version 1) and dropped the version it held.
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
            assert!(Trusted::load("main", &cfg, &file).is_err(), "{bad}");
        }
        // keydir changed by hand (to b, what version 1 installed): keydir is trusted, version 1 stays the floor.
        std::fs::write(&file, t.to_stored()).unwrap();
        let rekeyed = Trusted::load("main", &config(&b), &file).unwrap();
        assert_eq!((rekeyed.version, rekeyed.origin.clone()), (1, Origin::Config));
        assert!(rekeyed.policy.chain()[0].same_key(&b.1));
        assert!(rekeyed.describe("main", &file).contains("changed by hand after version 1"));
        // A state written before `base` existed is taken as grown from the config.
        let legacy = stored.replace(&format!(",\n  \"base\": \"{}\"", t.base), "");
        assert_ne!(legacy, stored);
        std::fs::write(&file, legacy).unwrap();
        assert_eq!(Trusted::load("main", &cfg, &file).unwrap().policy.chain()[0].name(), "b.pem");
    }
}
