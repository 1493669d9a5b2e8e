//! signer-http configuration: the upstream keys (`socket`, `keydir`, `primary`, `backup`, `listen-addr`,
//! `allowed-addrs`) plus ours (`tls-cert`, `tls-key`, `max-body`, `max-concurrent`, `resolve-interval`,
//! `timeout`, `max-lifetime`, `read-timeout`), decoded once into typed values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::allow::AllowEntry;
pub use crate::server::tls::TlsFiles;
use common::config::{self, ConfigError};
use common::signer_client::DEFAULT_SOCKET;

/// The file's keys as YAML decodes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Raw {
    log_format: Option<common::logging::LogFormat>,
    socket: Option<PathBuf>,
    keydir: Option<PathBuf>,
    primary: Option<String>,
    backup: Option<String>,
    listen_addr: Option<String>,
    #[serde(default)]
    allowed_addrs: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_body: Option<usize>,
    max_concurrent: Option<usize>,
    resolve_interval: Option<config::Scalar>,
    timeout: Option<config::Scalar>,
    max_lifetime: Option<config::Scalar>,
    read_timeout: Option<config::Scalar>,
    metrics_addr: Option<String>,
}

/// A validated signer-http configuration.
#[derive(Debug, Clone)]
pub struct SignerHttpConfig {
    /// `log-format`: text (default) or json.
    pub log_format: common::logging::LogFormat,
    /// signer-unix's socket.
    pub socket: PathBuf,
    /// The key whose signature a request must carry.
    pub primary: crypto::keys::VerifyingKey,
    /// The key accepted in place of the primary (logged as a warning).
    pub backup: Option<crypto::keys::VerifyingKey>,
    /// Where to listen.
    pub listen: Vec<SocketAddr>,
    /// Allowed peers.
    pub allowed: Vec<AllowEntry>,
    /// TLS, when configured.
    pub tls: Option<TlsFiles>,
    /// Largest request body.
    pub max_body: usize,
    /// Signature verifications at once; more get 503.
    pub max_concurrent: usize,
    /// How often host names in `allowed-addrs` are re-resolved.
    pub resolve_interval: Duration,
    /// Deadline for the call to signer-unix.
    pub timeout: Duration,
    /// Verification limits for incoming tokens.
    pub limits: crypto::Limits,
    /// Time a client has to send its request head, and again its body.
    pub read_timeout: Duration,
    /// `metrics-addr`: Prometheus metrics and `/healthz` over TCP (off when absent).
    pub metrics_addr: Option<SocketAddr>,
}

/// Parses `listen-addr` in Go's forms: `:8181` (every address, IPv6 and IPv4), `127.0.0.1:8181`, `[::1]:8181`.
pub fn parse_listen(s: &str) -> Option<Vec<SocketAddr>> {
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port.parse().ok()?;
        return Some(vec![SocketAddr::from(([0u16; 8], port)), SocketAddr::from(([0u8; 4], port))]);
    }
    s.parse::<SocketAddr>().ok().map(|a| vec![a])
}

/// Every default of signer-http's config, in one place (`keydir`'s, `keys`, is every daemon's: `config::keydir`).
#[derive(Debug)]
struct Defaults {
    socket: &'static str,
    listen_addr: &'static str,
    max_body: usize,
    max_concurrent: usize,
    resolve_interval: Duration,
    timeout: Duration,
    read_timeout: Duration,
}

const DEFAULTS: Defaults = Defaults {
    socket: DEFAULT_SOCKET,
    listen_addr: ":8181",
    max_body: 1 << 20,
    max_concurrent: 8,
    resolve_interval: Duration::from_secs(60),
    timeout: Duration::from_secs(30),
    read_timeout: Duration::from_secs(10),
};

impl config::ConfigFile for SignerHttpConfig {
    type Raw = Raw;

    fn decode(path: &Path, raw: Raw) -> Result<SignerHttpConfig, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
        let keydir = config::keydir(path, raw.keydir.as_deref());
        let load_key = |key: &str, name: &str| config::load_key(path, &keydir, key, name);
        let primary = match raw.primary.as_deref() {
            Some(name) if !name.is_empty() => load_key("primary", name)?,
            _ => return Err(bad("primary", "required: the key whose signature requests must carry".into())),
        };
        let backup = match raw.backup.as_deref() {
            Some(name) if !name.is_empty() => Some(load_key("backup", name)?),
            _ => None,
        };
        let listen_raw = raw.listen_addr.as_deref().unwrap_or(DEFAULTS.listen_addr);
        let listen = parse_listen(listen_raw)
            .ok_or_else(|| bad("listen-addr", format!("{listen_raw:?} is not ':PORT', 'IP:PORT' or '[IPv6]:PORT'")))?;
        let mut allowed = Vec::with_capacity(raw.allowed_addrs.len());
        for (i, entry) in raw.allowed_addrs.iter().enumerate() {
            allowed.push(
                entry.parse().map_err(|e: super::allow::AllowError| {
                    ConfigError::value(path, format!("allowed-addrs[{i}]"), e)
                })?,
            );
        }
        let tls = match (raw.tls_cert, raw.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: config::relative_to_config(path, &cert),
                key: config::relative_to_config(path, &key),
            }),
            (Some(_), None) => return Err(bad("tls-key", "required when tls-cert is set".into())),
            (None, Some(_)) => return Err(bad("tls-cert", "required when tls-key is set".into())),
        };
        let d = &DEFAULTS;
        let mut limits = crypto::Limits::default();
        if let Some(l) = config::duration(path, "max-lifetime", raw.max_lifetime.as_ref())? {
            limits.max_lifetime_secs = l.as_secs().max(1);
        }
        let ms = Duration::from_millis;
        let cfg = SignerHttpConfig {
            metrics_addr: config::metrics_addr(path, raw.metrics_addr.as_deref())?,
            log_format: raw.log_format.unwrap_or_default(),
            socket: raw.socket.unwrap_or_else(|| PathBuf::from(d.socket)),
            primary,
            backup,
            listen,
            allowed,
            tls,
            max_body: config::bounded(path, "max-body", raw.max_body, d.max_body, 1024..=(16 << 20))?,
            max_concurrent: config::bounded(path, "max-concurrent", raw.max_concurrent, d.max_concurrent, 1..=1024)?,
            resolve_interval: config::duration_at_least(
                path,
                "resolve-interval",
                raw.resolve_interval.as_ref(),
                d.resolve_interval,
                Duration::from_secs(1),
            )?,
            timeout: config::duration_at_least(path, "timeout", raw.timeout.as_ref(), d.timeout, ms(100))?,
            limits,
            read_timeout: config::duration_at_least(
                path,
                "read-timeout",
                raw.read_timeout.as_ref(),
                d.read_timeout,
                ms(100),
            )?,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

impl SignerHttpConfig {
    /// The checks across keys.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| Err(ConfigError::invalid(path, key, reason));
        if self.backup.as_ref().is_some_and(|b| b.fingerprint() == self.primary.fingerprint()) {
            return bad("backup", "is the same key as primary");
        }
        if self.allowed.is_empty() {
            return bad("allowed-addrs", "required: list the SPIRE servers that may ask for co-signatures");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":8181").map(|v| v.len()), Some(2));
        assert_eq!(parse_listen("127.0.0.1:8181"), Some(vec!["127.0.0.1:8181".parse().unwrap()]));
        assert_eq!(parse_listen("[::1]:8181"), Some(vec!["[::1]:8181".parse().unwrap()]));
        for bad in ["8181", ":", ":99999", "host:8181", ""] {
            assert_eq!(parse_listen(bad), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;
    use common::config::ConfigFile;

    const KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEv1qzjTSzw8+TUZQq1z7HQXOqkIuA
YTB0iWwvVno82cQ8T00B/rTqySC3bNYnAaGcRUg/t87yH0zxumMadhUqdA==
-----END PUBLIC KEY-----
";

    const OTHER_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcnt/RgPaxnfKUmJHopdzWKy4nY9l
toqsKg0muqrn8dcFiUNbclMJqHrPcyL3RFpdtpaNaj7OiWwzVZ27iSGURg==
-----END PUBLIC KEY-----
";

    /// A key directory with a.pem and c.pem (two keys) and same.pem (a.pem again).
    fn dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("keys")).unwrap();
        for (k, pem) in [("a.pem", KEY), ("c.pem", OTHER_KEY), ("same.pem", KEY)] {
            std::fs::write(d.path().join("keys").join(k), pem).unwrap();
        }
        d
    }

    #[test]
    fn shipped_example_parses_and_errors_name_the_key() {
        let d = dir();
        let path = d.path().join("signer-http.conf");
        let shipped = include_str!("../../conf/signer-http.conf");
        // Unset, the trust domain variable is an error naming it and the key (it used to become empty).
        let err = SignerHttpConfig::parse(&path, shipped).unwrap_err().to_string();
        assert!(err.contains("SPIFFE_TRUST_DOMAIN") && err.contains("allowed-addrs"), "{err}");
        let shipped = shipped.replace("${SPIFFE_TRUST_DOMAIN}", "example.org");
        let c = SignerHttpConfig::parse(&path, &shipped).unwrap();
        assert_eq!(c.listen.len(), 2);
        // The other server only: 127.0.0.1 would let every local user of the host reach the co-signer.
        assert_eq!(c.allowed, [AllowEntry::Host("spire-server.example.org".into())]);
        let same = shipped.replace("backup: c.pem", "backup: same.pem");
        let err = SignerHttpConfig::parse(&path, &same).unwrap_err().to_string();
        assert!(err.contains("backup") && err.contains("same key"), "{err}");
        let cases = [
            ("primary: a.pem\nallowed-addrs: [127.0.0.1]\nbogus: 1\n", "bogus"),
            ("allowed-addrs: [127.0.0.1]\n", "primary"),
            ("primary: nope.pem\nallowed-addrs: [127.0.0.1]\n", "primary"),
            ("primary: a.pem\n", "allowed-addrs"),
            ("primary: a.pem\nallowed-addrs: [10.0.0.1/8]\n", "allowed-addrs[0]"),
            ("primary: a.pem\nallowed-addrs: [127.0.0.1, 'a b']\n", "allowed-addrs[1]"),
            ("primary: a.pem\nallowed-addrs: [127.0.0.1]\nlisten-addr: 8181\n", "listen-addr"),
            ("primary: a.pem\nallowed-addrs: [127.0.0.1]\ntls-cert: x.pem\n", "tls-key"),
            ("primary: a.pem\nallowed-addrs: [127.0.0.1]\nread-timeout: 10\n", "read-timeout"),
            ("primary: a.pem\nallowed-addrs: [127.0.0.1]\nmax-concurrent: 0\n", "max-concurrent"),
        ];
        for (text, key) in cases {
            let err = SignerHttpConfig::parse(&path, text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
}
