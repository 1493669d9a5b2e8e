//! signer-unix configuration: the upstream YAML keys plus ours, decoded once into typed values.
//!
//! Upstream keys: `socket`, `tpm-address`, `duration`, `issuer` (default: host name), `dir`, `filename`, `tmpfile`.
//! Ours: `tpm-device`, `socket-mode`, `allowed-uids`, `allowed-gids`, `max-body`, `queue-depth`, and the
//! publish policy `keydir`, `chain`, `backup` (what nodes verify; `/publish` refuses anything else).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::server::uds::PeerPolicy;
use common::config::{self, ConfigError};
use common::duration::GoDuration;

pub use common::signer_client::DEFAULT_SOCKET;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    log_format: Option<common::logging::LogFormat>,
    socket: Option<PathBuf>,
    tpm_address: Option<String>,
    tpm_device: Option<String>,
    duration: Option<config::Scalar>,
    issuer: Option<String>,
    dir: Option<PathBuf>,
    filename: Option<String>,
    tmpfile: Option<String>,
    socket_mode: Option<String>,
    #[serde(default)]
    allowed_uids: Vec<u32>,
    #[serde(default)]
    allowed_gids: Vec<u32>,
    max_body: Option<usize>,
    queue_depth: Option<usize>,
    keydir: Option<PathBuf>,
    #[serde(default)]
    chain: Vec<String>,
    backup: Option<String>,
    threshold: Option<usize>,
    #[serde(default)]
    keys: Vec<String>,
    metrics_addr: Option<String>,
}

/// A validated signer-unix configuration.
#[derive(Debug, Clone)]
pub struct SignerUnixConfig {
    /// `log-format`: text (default) or json.
    pub log_format: common::logging::LogFormat,
    /// Where to listen.
    pub socket: PathBuf,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    /// Peers allowed beyond the file mode.
    pub peers: PeerPolicy,
    /// The TPM; `None` means autodetect `/dev/tpmrm0` then `/dev/tpm0`.
    pub tpm_device: Option<tpm::TpmDevice>,
    /// The signing key's persistent handle.
    pub handle: tpm::PersistentHandle,
    /// Token lifetime.
    pub duration: Duration,
    /// `iss` claim.
    pub issuer: String,
    /// Directory the token is published into.
    pub dir: PathBuf,
    /// Published file name.
    pub filename: String,
    /// Prefix of the temporary file's name for the atomic replace (a random suffix follows: a fixed name could be
    /// a link planted by whoever can write `dir`).
    pub tmpfile: String,
    /// Largest request body.
    pub max_body: usize,
    /// Signing requests that may wait for the TPM; more get 503.
    pub queue_depth: usize,
    /// What `/publish` accepts, as the nodes verify it: the chain (innermost signer first) and the backup.
    /// `None`: tokens this signer signed alone (a chain of its own key).
    pub publish_policy: Option<crypto::policy::Policy>,
    /// `metrics-addr`: Prometheus metrics and `/healthz` over TCP (off when absent).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The most a token may live, so a typo (`100h` for `100m`) cannot mint near-permanent tokens.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

impl SignerUnixConfig {
    /// Loads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<SignerUnixConfig, ConfigError> {
        let raw: Raw = config::load_yaml(path)?;
        Self::from_raw(path, raw)
    }

    /// Parses config text as if read from `path` (for tests and `--check`).
    pub fn parse(path: &Path, text: &str) -> Result<SignerUnixConfig, ConfigError> {
        let raw: Raw = config::parse_yaml(path, text)?;
        Self::from_raw(path, raw)
    }

    fn from_raw(path: &Path, raw: Raw) -> Result<SignerUnixConfig, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
        let handle = match raw.tpm_address.as_deref() {
            None => tpm::PersistentHandle::DEFAULT_SIGNING,
            Some(s) => s.parse().map_err(|e: tpm::TpmError| bad("tpm-address", e.to_string()))?,
        };
        let tpm_device = match raw.tpm_device.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(s.parse().map_err(|e: tpm::TpmError| bad("tpm-device", e.to_string()))?),
        };
        let duration = config::duration(path, "duration", raw.duration.as_ref())?.unwrap_or(Duration::from_secs(600));
        if duration < Duration::from_secs(1) {
            return Err(bad("duration", format!("{} is too short (minimum 1s)", GoDuration(duration))));
        }
        if duration > MAX_DURATION {
            return Err(bad("duration", format!("{} is too long (maximum 168h)", GoDuration(duration))));
        }
        let issuer = match raw.issuer.filter(|s| !s.is_empty()) {
            Some(i) => i,
            None => config::hostname().map_err(|e| bad("issuer", format!("not set and host name unreadable: {e}")))?,
        };
        let dir = raw
            .dir
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| bad("dir", "required: the directory the web server serves the token from".into()))?;
        let filename = raw.filename.filter(|s| !s.is_empty()).unwrap_or_else(|| "spiffetrustbundle.token".into());
        let tmpfile = raw.tmpfile.filter(|s| !s.is_empty()).unwrap_or_else(|| "spiffetrustbundle.token.tmp".into());
        for (key, name) in [("filename", &filename), ("tmpfile", &tmpfile)] {
            if name.contains('/') || name == "." || name == ".." {
                return Err(bad(key, format!("{name:?} must be a plain file name inside dir")));
            }
        }
        if filename == tmpfile {
            return Err(bad("tmpfile", "must differ from filename".into()));
        }
        let socket_mode =
            config::socket_mode(path, raw.socket_mode.as_deref(), Some("lets any local user ask the TPM to sign"))?;
        let max_body = config::bounded(path, "max-body", raw.max_body, 1 << 20, 1024..=(16 << 20))?;
        let queue_depth = config::bounded(path, "queue-depth", raw.queue_depth, 64, 1..=4096)?;
        let keydir = config::keydir(path, raw.keydir.as_deref());
        let mut chain = Vec::with_capacity(raw.chain.len());
        for (i, name) in raw.chain.iter().enumerate() {
            chain.push(config::load_key(path, &keydir, &format!("chain[{i}]"), name)?);
        }
        let backup = match raw.backup.as_deref() {
            Some(name) if !name.is_empty() => Some(config::load_key(path, &keydir, "backup", name)?),
            _ => None,
        };
        let publish_policy = match (raw.threshold, chain.is_empty(), backup) {
            (Some(threshold), true, None) => {
                let mut keys = Vec::with_capacity(raw.keys.len());
                for (i, name) in raw.keys.iter().enumerate() {
                    keys.push(config::load_key(path, &keydir, &format!("keys[{i}]"), name)?);
                }
                Some(
                    crypto::policy::Policy::threshold(threshold, keys, crypto::Limits::default())
                        .map_err(|e| bad("threshold", e.to_string()))?,
                )
            }
            (Some(_), _, _) => return Err(bad("threshold", "replaces chain and backup: give keys instead".into())),
            (None, _, _) if !raw.keys.is_empty() => {
                return Err(bad("keys", "belongs to a threshold policy: set threshold, or use chain".into()))
            }
            (None, true, None) => None,
            (None, true, Some(_)) => return Err(bad("chain", "required when backup is set".into())),
            (None, false, backup) => Some(
                crypto::policy::Policy::new(chain, backup, crypto::Limits::default())
                    .map_err(|e| bad("chain", e.to_string()))?,
            ),
        };
        Ok(SignerUnixConfig {
            log_format: raw.log_format.unwrap_or_default(),
            publish_policy,
            metrics_addr: config::metrics_addr(path, raw.metrics_addr.as_deref())?,
            socket: raw.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            socket_mode,
            peers: PeerPolicy { uids: raw.allowed_uids, gids: raw.allowed_gids },
            tpm_device,
            handle,
            duration,
            issuer,
            dir,
            filename,
            tmpfile,
            max_body,
            queue_depth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "socket: /var/run/spire/server-attestor-tpm/signer-unix.sock\n\
        tpm-address: 0x81008006\nduration:  10m\ndir: /usr/share/nginx/html\n\
        # filename: \"spiffetrustbundle.token\"\n# issuer: xxxx\n";

    fn parse(text: &str) -> Result<SignerUnixConfig, ConfigError> {
        SignerUnixConfig::parse(Path::new("/etc/spire/signer-unix.conf"), text)
    }

    #[test]
    fn upstream_config_keeps_working() {
        let c = parse(UPSTREAM).unwrap();
        assert_eq!(c.handle.value(), 0x8100_8006);
        assert_eq!(c.duration, Duration::from_secs(600));
        assert_eq!(c.filename, "spiffetrustbundle.token");
        assert_eq!(c.tmpfile, "spiffetrustbundle.token.tmp");
        assert_eq!(c.socket_mode, 0o660);
        assert!(c.tpm_device.is_none());
        assert!(!c.issuer.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("dir: /x\nbogus: 1\n", "bogus"),
            ("tpm-address: 0x01000001\ndir: /x\n", "tpm-address"),
            ("tpm-address: 81008006\ndir: /x\n", "tpm-address"),
            ("duration: 10\ndir: /x\n", "duration"),
            ("duration: 0s\ndir: /x\n", "duration"),
            ("duration: 1000h\ndir: /x\n", "duration"),
            ("tpm-address: 0x81008006\n", "dir"),
            ("dir: /x\nfilename: ../etc/passwd\n", "filename"),
            ("dir: /x\ntmpfile: spiffetrustbundle.token\n", "tmpfile"),
            ("dir: /x\nsocket-mode: \"0666\"\n", "socket-mode"),
            ("dir: /x\nsocket-mode: rw\n", "socket-mode"),
            ("dir: /x\ntpm-device: \"swtpm:path=/tmp/s\"\n", "tpm-device"),
            ("dir: /x\nmax-body: 10\n", "max-body"),
            ("dir: /x\nqueue-depth: 0\n", "queue-depth"),
            ("dir: /x\nallowed-uids: [root]\n", "allowed-uids"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: error {err:?} does not name {key}");
        }
    }

    #[test]
    fn shipped_example_parses() {
        let c = parse(include_str!("../../conf/signer-unix.conf")).unwrap();
        assert_eq!(c.dir, PathBuf::from("/usr/share/nginx/html"));
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn ours_parse() {
        let c = parse(
            "dir: /srv\ntpm-device: \"swtpm:host=127.0.0.1,port=2321\"\nsocket-mode: \"0600\"\n\
             allowed-uids: [0, 998]\nallowed-gids: [997]\nissuer: a.example.org\nduration: 1h\n",
        )
        .unwrap();
        assert_eq!(c.socket_mode, 0o600);
        assert_eq!(c.peers.uids, vec![0, 998]);
        assert_eq!(c.issuer, "a.example.org");
        assert!(c.tpm_device.is_some());
    }
}
