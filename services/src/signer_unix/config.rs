//! signer-unix configuration: the upstream YAML keys plus ours, decoded once into typed values.
//!
//! Upstream keys: `socket`, `tpm-address`, `duration`, `issuer` (default: host name), `dir`, `filename`, `tmpfile`.
//! Ours: `tpm-device`, `socket-mode`, `allowed-uids`, `allowed-gids`, `keyset-uids` (who may have keyset
//! updates signed), `bundle-uids` (who may have bundles signed and tokens published), `tpm-key-password-file`, `max-body`, `queue-depth`, and the publish policy `keydir`, `chain`, `backup` (what nodes
//! verify; `/publish` refuses anything else).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::server::uds::PeerPolicy;
use common::config::{self, ConfigError};
use common::duration::GoDuration;

pub use common::signer_client::DEFAULT_SOCKET;

/// The file's keys as YAML decodes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Raw {
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
    keyset_uids: Option<Vec<u32>>,
    bundle_uids: Option<Vec<u32>>,
    tpm_key_password_file: Option<PathBuf>,
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
    /// `keyset-uids`: the only peers (by uid) whose keyset documents and keyset update layers this signer
    /// signs (default: root). A keyset update moves what every node trusts for good, so it takes a person
    /// with root on each signing host, never a service such as signer-http or the sign plugin.
    pub keyset_uids: Vec<u32>,
    /// `bundle-uids`: the only peers (by uid) for which this signer signs a bundle or publishes a token (default:
    /// root, as the SPIRE server runs the sign plugin). Every other peer of the socket (signer-http's user) may
    /// only add layers to tokens: otherwise it could have a bundle of its own signed here, co-signed by the peer
    /// server's signer-http, and published.
    pub bundle_uids: Vec<u32>,
    /// `tpm-key-password-file`: the signing key's password, as `provision --key-password-file` set it (none by
    /// default). Without one, any member of the TPM's group can sign with the key through the device.
    pub key_password: tpm::Password,
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

/// Every default of signer-unix's config, in one place (`issuer`'s is the host name, read when it is absent;
/// `keydir`'s, `keys`, is every daemon's: `config::keydir`).
#[derive(Debug)]
struct Defaults {
    socket: &'static str,
    duration: Duration,
    filename: &'static str,
    tmpfile: &'static str,
    max_body: usize,
    queue_depth: usize,
    keyset_uids: &'static [u32],
    bundle_uids: &'static [u32],
}

const DEFAULTS: Defaults = Defaults {
    socket: DEFAULT_SOCKET,
    duration: Duration::from_secs(600),
    filename: "spiffetrustbundle.token",
    tmpfile: "spiffetrustbundle.token.tmp",
    max_body: 1 << 20,
    queue_depth: 64,
    keyset_uids: &[0],
    bundle_uids: &[0],
};

impl config::ConfigFile for SignerUnixConfig {
    type Raw = Raw;

    fn decode(path: &Path, raw: Raw) -> Result<SignerUnixConfig, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
        let d = &DEFAULTS;
        let handle = match raw.tpm_address.as_deref() {
            None => tpm::PersistentHandle::DEFAULT_SIGNING,
            Some(s) => s.parse().map_err(|e: tpm::TpmError| ConfigError::value(path, "tpm-address", e))?,
        };
        let tpm_device = match raw.tpm_device.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(s.parse().map_err(|e: tpm::TpmError| ConfigError::value(path, "tpm-device", e))?),
        };
        let issuer = match raw.issuer.filter(|s| !s.is_empty()) {
            Some(i) => i,
            None => config::hostname().map_err(|e| bad("issuer", format!("not set and host name unreadable: {e}")))?,
        };
        let keydir = config::keydir(path, raw.keydir.as_deref());
        let load_keys = |key: &str, names: &[String]| -> Result<Vec<_>, ConfigError> {
            names
                .iter()
                .enumerate()
                .map(|(i, name)| config::load_key(path, &keydir, &format!("{key}[{i}]"), name))
                .collect()
        };
        let chain = load_keys("chain", &raw.chain)?;
        let backup = match raw.backup.as_deref() {
            Some(name) if !name.is_empty() => Some(config::load_key(path, &keydir, "backup", name)?),
            _ => None,
        };
        let publish_policy = match (raw.threshold, chain.is_empty(), backup) {
            (Some(threshold), true, None) => Some(
                crypto::policy::Policy::threshold(threshold, load_keys("keys", &raw.keys)?, crypto::Limits::default())
                    .map_err(|e| ConfigError::value(path, "threshold", e))?,
            ),
            (Some(_), _, _) => return Err(bad("threshold", "replaces chain and backup: give keys instead".into())),
            (None, _, _) if !raw.keys.is_empty() => {
                return Err(bad("keys", "belongs to a threshold policy: set threshold, or use chain".into()))
            }
            (None, true, None) => None,
            (None, true, Some(_)) => return Err(bad("chain", "required when backup is set".into())),
            (None, false, backup) => Some(
                crypto::policy::Policy::new(chain, backup, crypto::Limits::default())
                    .map_err(|e| ConfigError::value(path, "chain", e))?,
            ),
        };
        let nonempty = |v: Option<String>, default: &str| v.filter(|s| !s.is_empty()).unwrap_or_else(|| default.into());
        let cfg = SignerUnixConfig {
            log_format: raw.log_format.unwrap_or_default(),
            publish_policy,
            metrics_addr: config::metrics_addr(path, raw.metrics_addr.as_deref())?,
            socket: raw.socket.unwrap_or_else(|| PathBuf::from(d.socket)),
            socket_mode: config::socket_mode(
                path,
                raw.socket_mode.as_deref(),
                Some("lets any local user ask the TPM to sign"),
            )?,
            peers: PeerPolicy { uids: raw.allowed_uids, gids: raw.allowed_gids },
            keyset_uids: raw.keyset_uids.unwrap_or_else(|| d.keyset_uids.to_vec()),
            bundle_uids: raw.bundle_uids.unwrap_or_else(|| d.bundle_uids.to_vec()),
            key_password: crate::server::key_password::read(
                path,
                "tpm-key-password-file",
                raw.tpm_key_password_file.as_deref(),
            )?,
            tpm_device,
            handle,
            duration: config::duration(path, "duration", raw.duration.as_ref())?.unwrap_or(d.duration),
            issuer,
            dir: raw.dir.unwrap_or_default(),
            filename: nonempty(raw.filename, d.filename),
            tmpfile: nonempty(raw.tmpfile, d.tmpfile),
            max_body: config::bounded(path, "max-body", raw.max_body, d.max_body, 1024..=(16 << 20))?,
            queue_depth: config::bounded(path, "queue-depth", raw.queue_depth, d.queue_depth, 1..=4096)?,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

impl SignerUnixConfig {
    /// The checks across keys, and of values that parsed but cannot be used.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| Err(ConfigError::invalid(path, key, reason));
        if self.duration < Duration::from_secs(1) {
            return bad("duration", format!("{} is too short (minimum 1s)", GoDuration(self.duration)));
        }
        if self.duration > MAX_DURATION {
            return bad("duration", format!("{} is too long (maximum 168h)", GoDuration(self.duration)));
        }
        if self.dir.as_os_str().is_empty() {
            return bad("dir", "required: the directory the web server serves the token from".into());
        }
        for (key, name) in [("filename", &self.filename), ("tmpfile", &self.tmpfile)] {
            if name.contains('/') || name == "." || name == ".." {
                return bad(key, format!("{name:?} must be a plain file name inside dir"));
            }
        }
        if self.filename == self.tmpfile {
            return bad("tmpfile", "must differ from filename".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::ConfigFile;

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
        assert_eq!(c.keyset_uids, [0], "keyset updates: root only, by default");
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
            ("dir: /x\nkeyset-uids: [-1]\n", "keyset-uids"),
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
             allowed-uids: [0, 998]\nallowed-gids: [997]\nissuer: a.example.org\nduration: 1h\n\
             keyset-uids: [0, 1000]\n",
        )
        .unwrap();
        assert_eq!(c.keyset_uids, [0, 1000]);
        assert_eq!(c.socket_mode, 0o600);
        assert_eq!(c.peers.uids, vec![0, 998]);
        assert_eq!(c.issuer, "a.example.org");
        assert!(c.tpm_device.is_some());
    }
}
