//! verifier configuration: the upstream keys (`keydir`, `socket`, `keyset.NAME.{url, backup, chain}`) plus
//! ours (`keyset.NAME.mirrors`, `state-dir`, `refresh`, `ca-file`, `socket-mode`, `max-lifetime`, `timeout`,
//! `max-token-size`), decoded once into typed values: parsed keys, policies and sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use common::client::HttpUrl;
use common::config::{self, ConfigError};

/// The socket path the upstream units and SPIRE agent configs use.
pub const DEFAULT_SOCKET: &str = "/var/run/spire/server-attestor-tpm/verifier.sock";
/// Where last-known-good tokens and rollback floors are kept.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/spire/server-attestor-tpm/verifier";

/// The file's keys as YAML decodes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Raw {
    log_format: Option<common::logging::LogFormat>,
    keydir: Option<PathBuf>,
    socket: Option<PathBuf>,
    keyset: Option<BTreeMap<String, RawKeyset>>,
    state_dir: Option<PathBuf>,
    refresh: Option<config::Scalar>,
    ca_file: Option<PathBuf>,
    socket_mode: Option<String>,
    max_lifetime: Option<config::Scalar>,
    timeout: Option<config::Scalar>,
    max_token_size: Option<usize>,
    metrics_addr: Option<String>,
}

/// One keyset's keys as YAML decodes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyset {
    url: Option<String>,
    #[serde(default)]
    mirrors: Vec<String>,
    backup: Option<String>,
    #[serde(default)]
    chain: Vec<String>,
    threshold: Option<usize>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(rename = "trust-domain")]
    trust_domain: Option<String>,
    #[serde(rename = "keys-url")]
    keys_url: Option<String>,
    #[serde(default, rename = "keys-mirrors")]
    keys_mirrors: Vec<String>,
}

/// Where a keyset's token can be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// http:// or https://
    Http(HttpUrl),
    /// file:///path, or an absolute path (upstream compatibility).
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(u) => write!(f, "{u}"),
            Source::File(p) => write!(f, "file://{}", p.display()),
        }
    }
}

/// Why a source URL is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// `file://relative`.
    #[error("file URLs must be absolute (file:///path)")]
    RelativeFile,
    /// Not a usable http(s) URL.
    #[error(transparent)]
    Http(#[from] common::client::ClientError),
}

/// Parses a source URL: `http://`, `https://`, `file:///abs`, or an absolute path.
pub fn parse_source(url: &str) -> Result<Source, SourceError> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(SourceError::RelativeFile);
        }
        return Ok(Source::File(PathBuf::from(path)));
    }
    if url.starts_with('/') {
        return Ok(Source::File(PathBuf::from(url)));
    }
    Ok(Source::Http(HttpUrl::parse(url)?))
}

/// One keyset: where to fetch, and the policy a token must pass.
#[derive(Debug, Clone)]
pub struct KeysetConfig {
    /// `url` first, then `mirrors`, tried in order.
    pub sources: Vec<Source>,
    /// The chain and backup keys, or the threshold and its keys.
    pub policy: crypto::policy::Policy,
    /// `trust-domain`: tokens must be signed for it and carry no CA certificate of another.
    pub trust_domain: Option<crypto::TrustDomain>,
    /// `keys-url` first, then `keys-mirrors`: where signed keyset updates are published (none: no updates).
    pub keys_sources: Vec<Source>,
}

/// Why a keyset refused a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A layer failed the policy.
    #[error(transparent)]
    Policy(#[from] crypto::VerifyError),
    /// The token is for another trust domain.
    #[error(transparent)]
    TrustDomain(#[from] crypto::policy::TrustDomainError),
    /// The keyset's stored keyset state is unusable: nothing is trusted until it is repaired or removed.
    #[error("{0}")]
    KeysState(String),
    /// A layer is signed by a key a keyset update retired.
    #[error("signed by key {key}, retired by keyset update version {version}: {error}")]
    Retired {
        /// The retired key's name.
        key: String,
        /// The update that retired it.
        version: u64,
        /// What the policy said.
        error: crypto::VerifyError,
    },
}

/// The sources of key `key` (its first entry) and of the mirrors after it, in order.
fn decode_sources(
    path: &Path,
    at: &str,
    first: Option<String>,
    mirrors: &[String],
    mirrors_key: &str,
) -> Result<Vec<Source>, ConfigError> {
    let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
    let mut sources = Vec::new();
    match first.filter(|u| !u.is_empty()) {
        Some(u) => sources.push(parse_source(&u).map_err(|e| ConfigError::value(path, at, e))?),
        None if !mirrors.is_empty() => {
            let first_key = at.rsplit('.').next().unwrap_or(at);
            return Err(bad(mirrors_key, format!("needs {first_key} (tried first)")));
        }
        None => {}
    }
    for (i, m) in mirrors.iter().enumerate() {
        sources.push(parse_source(m).map_err(|e| ConfigError::value(path, format!("{mirrors_key}[{i}]"), e))?);
    }
    Ok(sources)
}

impl KeysetConfig {
    /// Keyset `name` as written under `keyset:`, its keys loaded through `load_key` (each file read once).
    fn decode(
        path: &Path,
        name: &str,
        ks: RawKeyset,
        limits: crypto::Limits,
        load_key: &mut dyn FnMut(&str, &str) -> Result<crypto::keys::VerifyingKey, ConfigError>,
    ) -> Result<KeysetConfig, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
        let at = |k: &str| format!("keyset.{name}.{k}");
        if ks.url.as_deref().is_none_or(str::is_empty) {
            return Err(bad(&at("url"), "required".into()));
        }
        let sources = decode_sources(path, &at("url"), ks.url, &ks.mirrors, &at("mirrors"))?;
        let policy = match ks.threshold {
            None => {
                if !ks.keys.is_empty() {
                    return Err(bad(&at("keys"), "belongs to a threshold policy: set threshold, or use chain".into()));
                }
                if ks.chain.is_empty() {
                    return Err(bad(&at("chain"), "needs at least one key (or threshold and keys)".into()));
                }
                let chain = (ks.chain.iter().enumerate())
                    .map(|(i, k)| load_key(&format!("keyset.{name}.chain[{i}]"), k))
                    .collect::<Result<Vec<_>, _>>()?;
                let backup = match ks.backup.as_deref() {
                    Some(b) if !b.is_empty() => Some(load_key(&at("backup"), b)?),
                    _ => None,
                };
                crypto::policy::Policy::new(chain, backup, limits)
                    .map_err(|e| ConfigError::value(path, at("chain"), e))?
            }
            Some(threshold) => {
                if !ks.chain.is_empty() || ks.backup.is_some() {
                    return Err(bad(&at("threshold"), "replaces chain and backup: give keys instead".into()));
                }
                let keys = (ks.keys.iter().enumerate())
                    .map(|(i, k)| load_key(&format!("keyset.{name}.keys[{i}]"), k))
                    .collect::<Result<Vec<_>, _>>()?;
                crypto::policy::Policy::threshold(threshold, keys, limits)
                    .map_err(|e| ConfigError::value(path, at("threshold"), e))?
            }
        };
        let trust_domain = match ks.trust_domain {
            Some(td) => {
                Some(td.parse().map_err(|e: crypto::BadTrustDomain| ConfigError::value(path, at("trust-domain"), e))?)
            }
            None => None,
        };
        let keys_sources = decode_sources(path, &at("keys-url"), ks.keys_url, &ks.keys_mirrors, &at("keys-mirrors"))?;
        Ok(KeysetConfig { sources, policy, trust_domain, keys_sources })
    }

    /// Verifies `token` at `now` under the config's keys: the policy, then the trust-domain binding.
    pub fn verify(&self, token: &str, now: u64) -> Result<crypto::policy::Verified, Rejection> {
        self.verify_trusted(&super::trusted::Trusted::from_config(&self.policy), token, now)
    }

    /// Verifies `token` at `now` under `trusted` (the config's keys or a keyset update's): the policy, then
    /// the trust-domain binding; a token refused because a retired key signed it says so.
    pub fn verify_trusted(
        &self,
        trusted: &super::trusted::Trusted,
        token: &str,
        now: u64,
    ) -> Result<crypto::policy::Verified, Rejection> {
        let verified = trusted.policy.verify(token, now).map_err(|error| match trusted.retired_signer(token) {
            Some(r) => Rejection::Retired { key: r.key.name().to_owned(), version: r.by_version, error },
            None => Rejection::Policy(error),
        })?;
        if let Some(td) = &self.trust_domain {
            verified.check_trust_domain(td)?;
        }
        Ok(verified)
    }
}

/// A validated verifier configuration.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// `log-format`: text (default) or json.
    pub log_format: common::logging::LogFormat,
    /// Listen socket.
    pub socket: PathBuf,
    /// Socket file mode.
    pub socket_mode: u32,
    /// Persistent state directory.
    pub state_dir: PathBuf,
    /// Background refresh interval (also the age after which a GET triggers a refresh).
    pub refresh: Duration,
    /// Per-fetch deadline.
    pub timeout: Duration,
    /// Largest token accepted from a source.
    pub max_token_size: usize,
    /// CA bundle for https sources.
    pub ca_file: Option<PathBuf>,
    /// The keysets by name.
    pub keysets: BTreeMap<String, KeysetConfig>,
    /// `metrics-addr`: Prometheus metrics and `/healthz` over TCP (off when absent).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Every default of the verifier's config, in one place (`keydir`'s, `keys`, is every daemon's:
/// `config::keydir`).
#[derive(Debug)]
struct Defaults {
    socket: &'static str,
    state_dir: &'static str,
    refresh: Duration,
    timeout: Duration,
    max_token_size: usize,
}

const DEFAULTS: Defaults = Defaults {
    socket: DEFAULT_SOCKET,
    state_dir: DEFAULT_STATE_DIR,
    refresh: Duration::from_secs(60),
    timeout: Duration::from_secs(10),
    max_token_size: 1 << 20,
};

impl config::ConfigFile for VerifierConfig {
    type Raw = Raw;

    fn decode(path: &Path, raw: Raw) -> Result<VerifierConfig, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
        let keydir = config::keydir(path, raw.keydir.as_deref());
        let d = &DEFAULTS;
        let max_token_size =
            config::bounded(path, "max-token-size", raw.max_token_size, d.max_token_size, 1024..=(16 << 20))?;
        let mut limits = crypto::Limits { max_token_len: max_token_size, ..crypto::Limits::default() };
        if let Some(l) = config::duration(path, "max-lifetime", raw.max_lifetime.as_ref())? {
            if l < Duration::from_secs(1) {
                return Err(bad("max-lifetime", "must be at least 1s".into()));
            }
            limits.max_lifetime_secs = l.as_secs();
        }
        let mut loaded: BTreeMap<String, crypto::keys::VerifyingKey> = BTreeMap::new();
        let mut load_key = |key: &str, name: &str| -> Result<crypto::keys::VerifyingKey, ConfigError> {
            if let Some(k) = loaded.get(name) {
                return Ok(k.clone());
            }
            let k = config::load_key(path, &keydir, key, name)?;
            loaded.insert(name.to_owned(), k.clone());
            Ok(k)
        };
        let mut keysets = BTreeMap::new();
        for (name, ks) in raw.keyset.unwrap_or_default() {
            if !crypto::keyset::is_keyset_name(&name) {
                return Err(bad(&format!("keyset.{name}"), "names are 1 to 64 letters, digits, - and _".into()));
            }
            let keyset = KeysetConfig::decode(path, &name, ks, limits, &mut load_key)?;
            keysets.insert(name, keyset);
        }
        // The verifier's socket serves a public bundle: other users' access is the operator's call.
        let socket_mode = config::socket_mode(path, raw.socket_mode.as_deref(), None)?;
        let ms = Duration::from_millis;
        let refresh = config::duration_at_least(path, "refresh", raw.refresh.as_ref(), d.refresh, ms(100))?;
        let timeout = config::duration_at_least(path, "timeout", raw.timeout.as_ref(), d.timeout, ms(100))?;
        let cfg = VerifierConfig {
            log_format: raw.log_format.unwrap_or_default(),
            socket: raw.socket.unwrap_or_else(|| PathBuf::from(d.socket)),
            socket_mode,
            state_dir: raw.state_dir.unwrap_or_else(|| PathBuf::from(d.state_dir)),
            refresh,
            timeout,
            max_token_size,
            ca_file: raw.ca_file.map(|f| config::relative_to_config(path, &f)),
            keysets,
            metrics_addr: config::metrics_addr(path, raw.metrics_addr.as_deref())?,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

impl VerifierConfig {
    /// The checks across keys.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        if self.keysets.is_empty() {
            return Err(ConfigError::invalid(path, "keyset", "at least one keyset is required"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::ConfigFile;

    const PRIMARY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEbHsL+hTCki/R31eORi7am7A7lEPN
Vi8TXUZaxG3xiAjvqY8NpSHCEpNpEw2qI6/S1kRvFJc74RGXc9lCfaZwpQ==
-----END PUBLIC KEY-----
";
    const BACKUP: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE49QWpKkyj9StUtiCv3YTXg8K6wHU
m/FZlkYlLdmE38Z0u8M7MoO1LHtZddfKlwGoEt2Djt7APfdHWGkehDjb5Q==
-----END PUBLIC KEY-----
";

    fn dir_with_keys() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keys")).unwrap();
        std::fs::write(d.path().join("keys/primary.pem"), PRIMARY).unwrap();
        std::fs::write(d.path().join("keys/backup.pem"), BACKUP).unwrap();
        d
    }

    #[test]
    fn shipped_example_parses() {
        let d = dir_with_keys();
        let path = d.path().join("verifier.conf");
        let shipped = include_str!("../../conf/verifier.conf");
        let err = VerifierConfig::parse(&path, shipped).unwrap_err().to_string();
        assert!(err.contains("SPIFFE_TRUST_DOMAIN") && err.contains("url"), "{err}");
        let c = VerifierConfig::parse(&path, &shipped.replace("${SPIFFE_TRUST_DOMAIN}", "example.org")).unwrap();
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.refresh, Duration::from_secs(60));
        let main = &c.keysets["main"];
        assert_eq!(main.policy.chain().len(), 1);
        assert!(matches!(&main.sources[0], Source::Http(_)));
    }

    #[test]
    fn sources_table() {
        assert_eq!(parse_source("file:///srv/t").unwrap(), Source::File(PathBuf::from("/srv/t")));
        assert_eq!(parse_source("/srv/t").unwrap(), Source::File(PathBuf::from("/srv/t")));
        assert!(matches!(parse_source("https://x/t"), Ok(Source::Http(_))));
        for bad in ["file://rel", "ftp://x", "x/y", "", "gopher://h"] {
            assert!(parse_source(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mirrors_and_durations() {
        let d = dir_with_keys();
        let text = "keyset:\n  a:\n    url: http://a/t\n    mirrors: [http://b/t, file:///c]\n    chain: [primary.pem, backup.pem]\nrefresh: 30s\ntimeout: 2s\nmax-lifetime: 1h\n";
        let c = VerifierConfig::parse(&d.path().join("v.conf"), text).unwrap();
        assert_eq!(c.keysets["a"].sources.len(), 3);
        assert_eq!((c.refresh, c.timeout), (Duration::from_secs(30), Duration::from_secs(2)));
        let err = VerifierConfig::parse(
            &d.path().join("v.conf"),
            "refresh: 10\nkeyset:\n  a:\n    url: http://a/t\n    chain: [primary.pem]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("refresh"), "{err}");
    }

    #[test]
    fn keys_url_and_mirrors() {
        let d = dir_with_keys();
        let path = d.path().join("v.conf");
        let ks = |body: &str| format!("keyset:\n  a:\n    url: http://a/t\n    chain: [primary.pem]\n{body}");
        let c = VerifierConfig::parse(&path, &ks("")).unwrap();
        assert!(c.keysets["a"].keys_sources.is_empty(), "no keys-url: no updates");
        let c =
            VerifierConfig::parse(&path, &ks("    keys-url: http://a/keys\n    keys-mirrors: [file:///k]\n")).unwrap();
        assert_eq!(c.keysets["a"].keys_sources.len(), 2);
        for (body, says) in [
            ("    keys-mirrors: [http://b/keys]\n", "`keyset.a.keys-mirrors`: needs keys-url"),
            ("    keys-url: ftp://a/keys\n", "keyset.a.keys-url"),
            ("    keys-url: http://a/k\n    keys-mirrors: [rel/k]\n", "keyset.a.keys-mirrors[0]"),
        ] {
            let err = VerifierConfig::parse(&path, &ks(body)).unwrap_err().to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
    }

    #[test]
    fn threshold_keysets_table() {
        let d = dir_with_keys();
        let third = tpm::mock::SoftwareKey::generate(tpm::KeyType::EccP256);
        use tpm::KeySigner as _;
        std::fs::write(
            d.path().join("keys/third.pem"),
            crypto::pem::encode("PUBLIC KEY", third.public_key().spki_der()),
        )
        .unwrap();
        let path = d.path().join("v.conf");
        let ks = |body: &str| format!("keyset:\n  ha:\n    url: http://a/t\n{body}");
        let c = VerifierConfig::parse(&path, &ks("    threshold: 2\n    keys: [primary.pem, backup.pem, third.pem]\n"))
            .unwrap();
        let (k, keys) = c.keysets["ha"].policy.threshold_keys().unwrap();
        assert_eq!((k, keys.len()), (2, 3));
        assert!(c.keysets["ha"].policy.chain().is_empty());
        for (body, key, says) in [
            ("    threshold: 4\n    keys: [primary.pem, backup.pem, third.pem]\n", "threshold", "1..=3"),
            ("    threshold: 0\n    keys: [primary.pem]\n", "threshold", "1..=1"),
            ("    threshold: 2\n    keys: [primary.pem, primary.pem]\n", "threshold", "twice"),
            ("    threshold: 1\n    keys: [primary.pem]\n    chain: [backup.pem]\n", "threshold", "replaces chain"),
            ("    threshold: 1\n    keys: [primary.pem]\n    backup: backup.pem\n", "threshold", "replaces chain"),
            ("    keys: [primary.pem]\n", "keys", "set threshold"),
            ("    threshold: 1\n    keys: [missing.pem]\n", "keys[0]", "missing.pem"),
            ("    threshold: 1\n", "threshold", "at least one key"),
        ] {
            let err = VerifierConfig::parse(&path, &ks(body)).unwrap_err().to_string();
            assert!(err.contains(&format!("keyset.ha.{key}")) && err.contains(says), "{body}: {err}");
        }
    }
}
