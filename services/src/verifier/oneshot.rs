//! One-shot mode: fetch a keyset's token (or one from a given URL), verify it under the keys the node trusts
//! (a stored keyset update's, else the config's) moved by the keyset updates its keys sources publish, exactly
//! as the daemon would but in memory, and return the bundle PEM; or print the keys the node holds. A token signed
//! before the last one the daemon accepted (its state file, read only) is refused as a rollback, as the daemon
//! refuses it. Writes no state; used by operators to check a node by hand, and to feed `trust_bundle_path`.

use super::config::{parse_source, Source, SourceError, VerifierConfig};
use super::fetch::{fetch, fetch_all, FetchError, Fetched};
use super::keyset::{bundle_state_file, keys_state_file, stored_floor};
use super::trusted::{self, StateError, Trusted};
use common::client::{ClientOptions, HttpClient};
use common::clock::Clock;

/// Why one-shot verification failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OneShotError {
    /// No such keyset.
    #[error("keyset {0:?} is not in the config")]
    UnknownKeyset(String),
    /// The URL given on the command line is unusable.
    #[error("URL: {0}")]
    Url(SourceError),
    /// Client set-up failed.
    #[error(transparent)]
    Client(#[from] common::client::ClientError),
    /// The keyset's stored state exists but cannot be used (run as the verifier's user, or repair it).
    #[error("keyset state {file}")]
    State {
        /// The state file.
        file: std::path::PathBuf,
        /// Why.
        #[source]
        source: StateError,
    },
    /// The daemon's last accepted token's record exists but cannot be read.
    #[error("keyset state {file}: {source}")]
    Floor {
        /// The state file.
        file: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Every source failed; the reasons, one per source.
    #[error("no source gave a valid token:{}", failures(.0))]
    Failed(Vec<(Source, Failure)>),
}

/// Why one source gave no valid token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// The fetch failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The token did not verify, or is for another trust domain.
    #[error(transparent)]
    Verify(#[from] super::config::Rejection),
    /// A 304 to a request that had no validators.
    #[error("unexpected 304")]
    NotModified,
    /// Signed before the last token the daemon accepted.
    #[error("rollback: signed at {signed_at}, before the last token accepted ({floor})")]
    Rollback {
        /// The token's signing time.
        signed_at: u64,
        /// The floor.
        floor: u64,
    },
}

fn failures(list: &[(Source, Failure)]) -> String {
    list.iter().map(|(source, why)| format!("\n{source}: {why}")).collect()
}

fn trusted(cfg: &VerifierConfig, name: &str) -> Result<(Trusted, std::path::PathBuf), OneShotError> {
    let ks = cfg.keysets.get(name).ok_or_else(|| OneShotError::UnknownKeyset(name.to_owned()))?;
    let file = keys_state_file(&cfg.state_dir, name);
    // A state this process may not read is not "no state": saying version 0 would be a lie.
    let trusted =
        Trusted::load(name, &ks.policy, &file).map_err(|source| OneShotError::State { file: file.clone(), source })?;
    Ok((trusted, file))
}

/// `trusted` moved by the updates keyset `name`'s keys sources publish, under the daemon's rules, in memory.
async fn follow_updates(
    client: &HttpClient,
    cfg: &VerifierConfig,
    name: &str,
    trusted: Trusted,
    clock: &Clock,
) -> Trusted {
    let sources = &cfg.keysets[name].keys_sources;
    let answers = fetch_all(client, sources, vec![], cfg.max_token_size, cfg.timeout).await;
    let mut texts = Vec::new();
    for (source, answer) in sources.iter().zip(answers) {
        match answer {
            Ok(Fetched::Token(text, _)) => texts.push((source.to_string(), text)),
            Ok(Fetched::NotModified) => {}
            Err(e) => tracing::debug!(keyset = name, %source, error = %e, "keys source gave nothing"),
        }
    }
    let pairs: Vec<(&str, &str)> = texts.iter().map(|(s, t)| (s.as_str(), t.as_str())).collect();
    let applied = trusted::apply(name, &trusted, &trusted::lines(&pairs), clock.now());
    for (source, e) in &applied.refused {
        tracing::warn!(keyset = name, %source, reason = %e, "keyset update refused; skipping it");
    }
    match applied.trusted {
        Some(t) => {
            tracing::info!(
                keyset = name,
                from = trusted.version,
                version = t.version,
                "following keyset updates (in memory; nothing stored)"
            );
            t
        }
        None => trusted,
    }
}

/// The policy keyset `name` trusts now, its version and where it came from, as text.
pub fn describe_keys(cfg: &VerifierConfig, name: &str) -> Result<String, OneShotError> {
    let (trusted, file) = trusted(cfg, name)?;
    Ok(trusted.describe(name, &file))
}

/// Fetches and verifies keyset `name` from `url` or its configured sources at `clock`'s time; returns the bundle
/// as PEM.
pub async fn verify_once(
    cfg: &VerifierConfig,
    name: &str,
    url: Option<&str>,
    clock: &Clock,
) -> Result<String, OneShotError> {
    let (trusted, _) = trusted(cfg, name)?;
    let ks = &cfg.keysets[name];
    let state = bundle_state_file(&cfg.state_dir, name);
    let floor = stored_floor(&state).map_err(|source| OneShotError::Floor { file: state, source })?;
    let sources = match url {
        Some(u) => vec![parse_source(u)?],
        None => ks.sources.clone(),
    };
    let client = HttpClient::new(ClientOptions {
        timeout: cfg.timeout,
        max_body: cfg.max_token_size,
        ca_file: cfg.ca_file.clone(),
    })?;
    let trusted = follow_updates(&client, cfg, name, trusted, clock).await;
    let mut reasons = Vec::new();
    for source in &sources {
        match fetch(&client, source, None, cfg.max_token_size, cfg.timeout).await {
            Ok(Fetched::Token(token, _)) => match ks.verify_trusted(&trusted, &token, clock.now()) {
                Ok(v) if v.signed_at < floor => {
                    reasons.push((source.clone(), Failure::Rollback { signed_at: v.signed_at, floor }))
                }
                Ok(v) => {
                    for l in &v.layers {
                        tracing::info!(layer = l.depth, key = %l.key_name, backup = l.backup, iss = %l.iss, exp = l.exp, "layer verified");
                    }
                    return Ok(v.bundle.to_pem());
                }
                Err(e) => reasons.push((source.clone(), e.into())),
            },
            Ok(Fetched::NotModified) => reasons.push((source.clone(), Failure::NotModified)),
            Err(e) => reasons.push((source.clone(), e.into())),
        }
    }
    Err(OneShotError::Failed(reasons))
}

impl From<SourceError> for OneShotError {
    fn from(e: SourceError) -> Self {
        OneShotError::Url(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::ConfigFile;
    use tpm::KeySigner as _;

    /// `--keys` must not report the config's keys as trusted when it cannot read what the node stored.
    #[test]
    fn an_unreadable_state_is_an_error_and_a_missing_one_is_version_zero() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keys")).unwrap();
        let key = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
        std::fs::write(d.path().join("keys/a.pem"), crypto::pem::encode("PUBLIC KEY", key.public_key().spki_der()))
            .unwrap();
        std::fs::write(d.path().join("not-a-dir"), b"").unwrap();
        let config = |state: &str| {
            let text = format!("state-dir: {state}\nkeyset:\n  main:\n    url: http://a/t\n    chain: [a.pem]\n");
            VerifierConfig::parse(&d.path().join("v.conf"), &text).unwrap()
        };
        let fresh = config(&d.path().join("state").display().to_string());
        let said = describe_keys(&fresh, "main").unwrap();
        assert!(said.contains("version 0") && said.contains("chain[0]: a.pem"), "{said}");
        let broken = config(&d.path().join("not-a-dir").display().to_string());
        let err = common::report::error_chain(&describe_keys(&broken, "main").unwrap_err());
        assert!(err.contains("cannot read") && err.contains("main.keys.json"), "{err}");
        assert!(matches!(describe_keys(&fresh, "other"), Err(OneShotError::UnknownKeyset(_))));
    }

    /// The one-shot mode follows the published keyset updates, in memory: a node (or an init container feeding
    /// `trust_bundle_path`) that verifies this way is not cut off by the first TPM replacement. It used to verify
    /// under the stored or configured keys only, and refused the new key's bundle for good. Nothing is stored.
    #[tokio::test]
    async fn one_shot_follows_keyset_updates_and_stores_nothing() {
        use crypto::token::{Claims, Payload, TokenBuilder};
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keys")).unwrap();
        let (a, b) = (
            tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256),
            tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256),
        );
        std::fs::write(d.path().join("keys/a.pem"), crypto::pem::encode("PUBLIC KEY", a.public_key().spki_der()))
            .unwrap();
        let now = common::clock::unix_now();
        let sign = |key: &tpm::mock::SoftwareKey, payload: Payload| {
            let claims = Claims { payload, iss: String::new(), iat: now, nbf: now, exp: now + 600, trust_domain: None };
            let builder = TokenBuilder::new(crypto::Alg::Es256, &claims);
            let signature = key.sign_digest(&builder.digest()).unwrap();
            builder.finish(&signature).unwrap()
        };
        let vb = crypto::keys::VerifyingKey::from_spki_der("b.pem", b.public_key().spki_der()).unwrap();
        let next = crypto::policy::Policy::new(vec![vb], None, crypto::Limits::default()).unwrap();
        let doc = crypto::keyset::Document::new("main", 1, now + 86400, &next).unwrap();
        let update = sign(&b, Payload::Token(sign(&a, Payload::Keyset(doc.text().into()))));
        std::fs::write(d.path().join("keys.tokens"), format!("{update}\n")).unwrap();
        let bundle = include_str!("../../../crypto/tests/data/ca-ec.pem");
        std::fs::write(d.path().join("token"), sign(&b, Payload::Bundle(bundle.into()))).unwrap();
        let text = format!(
            "state-dir: {0}/state\nkeyset:\n  main:\n    url: file://{0}/token\n    keys-url: file://{0}/keys.tokens\n    chain: [a.pem]\n",
            d.path().display()
        );
        let cfg = VerifierConfig::parse(&d.path().join("v.conf"), &text).unwrap();
        assert_eq!(
            verify_once(&cfg, "main", None, &Clock::system()).await.unwrap(),
            bundle,
            "b's bundle, after the update to b"
        );
        assert!(!d.path().join("state").exists(), "the one-shot mode stored something");
        // Without the update, b's bundle is refused (the control).
        std::fs::remove_file(d.path().join("keys.tokens")).unwrap();
        assert!(verify_once(&cfg, "main", None, &Clock::system()).await.is_err());
    }

    /// The attack: whoever controls the token's URL replays an older token, still unexpired and validly signed.
    /// The daemon refuses it against its rollback floor; the one-shot mode, which feeds `trust_bundle_path`,
    /// printed it. It now refuses it against the same floor (read from the daemon's state, never written).
    #[tokio::test]
    async fn one_shot_refuses_a_token_older_than_the_daemon_accepted() {
        use crypto::token::{Claims, Payload, TokenBuilder};
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("keys")).unwrap();
        let a = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
        std::fs::write(d.path().join("keys/a.pem"), crypto::pem::encode("PUBLIC KEY", a.public_key().spki_der()))
            .unwrap();
        let now = common::clock::unix_now();
        let bundle = include_str!("../../../crypto/tests/data/ca-ec.pem");
        let claims = Claims {
            payload: Payload::Bundle(bundle.into()),
            iss: String::new(),
            iat: now - 60,
            nbf: now - 60,
            exp: now + 600,
            trust_domain: None,
        };
        let builder = TokenBuilder::new(crypto::Alg::Es256, &claims);
        let signature = a.sign_digest(&builder.digest()).unwrap();
        std::fs::write(d.path().join("token"), builder.finish(&signature).unwrap()).unwrap();
        let text = format!(
            "state-dir: {0}/state\nkeyset:\n  main:\n    url: file://{0}/token\n    chain: [a.pem]\n",
            d.path().display()
        );
        let cfg = VerifierConfig::parse(&d.path().join("v.conf"), &text).unwrap();
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        let state = bundle_state_file(&cfg.state_dir, "main");
        for (floor, accepted) in [(now - 61, true), (now - 60, true), (now - 59, false)] {
            let record = serde_json::json!({ "token": "t", "signed_at": floor, "accepted_at": floor });
            std::fs::write(&state, record.to_string()).unwrap();
            let verified = verify_once(&cfg, "main", None, &Clock::system()).await;
            match accepted {
                true => assert_eq!(verified.unwrap(), bundle, "floor {floor}"),
                false => {
                    let err = verified.unwrap_err().to_string();
                    assert!(err.contains("rollback"), "floor {floor}: {err}");
                }
            }
        }
        // A record that cannot be read is an error, not "no floor".
        std::fs::write(&state, b"{").unwrap();
        assert!(matches!(verify_once(&cfg, "main", None, &Clock::system()).await, Err(OneShotError::Floor { .. })));
    }
}
