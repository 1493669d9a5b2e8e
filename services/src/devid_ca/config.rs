//! The enrollment CA's configuration (YAML, in the style of the other daemons), decoded once into typed values.
//!
//! Keys: `listen-addr`, `tls-cert` and `tls-key` (its HTTPS identity, required), `tpm-device`, `tpm-address` (the
//! CA key; default `0x81008007`), `ca-cert` (the CA's chain, its own certificate first), `endorsement-ca` (TPM
//! manufacturer roots), `inventory` (approved EK hashes with their names), `state-dir` (the database), `validity`
//! (of the certificates it issues; default `2160h`), `crl` (where it writes its CRL), `crl-lifetime` (its
//! nextUpdate; default `168h`), `metrics-addr`, `log-format`, `tpm-key-password-file` (the CA key's password).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::server::tls::TlsFiles;
use common::config::{self, ConfigError};

/// The file's keys as YAML decodes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Raw {
    log_format: Option<common::logging::LogFormat>,
    listen_addr: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tpm_device: Option<String>,
    tpm_address: Option<String>,
    ca_cert: Option<PathBuf>,
    endorsement_ca: Option<PathBuf>,
    inventory: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    validity: Option<config::Scalar>,
    crl: Option<PathBuf>,
    crl_lifetime: Option<config::Scalar>,
    metrics_addr: Option<String>,
    tpm_key_password_file: Option<PathBuf>,
}

/// A validated enrollment CA configuration.
#[derive(Debug, Clone)]
pub struct DevIdCaConfig {
    /// `log-format`: text (default) or json.
    pub log_format: common::logging::LogFormat,
    /// Where to listen (HTTPS).
    pub listen: Vec<SocketAddr>,
    /// Its HTTPS identity.
    pub tls: TlsFiles,
    /// The TPM; `None` means autodetect `/dev/tpmrm0` then `/dev/tpm0`.
    pub tpm_device: Option<tpm::TpmDevice>,
    /// The CA key's persistent handle.
    pub handle: tpm::PersistentHandle,
    /// `tpm-key-password-file`: the CA key's password, set by `provision` (none by default; without one, any
    /// member of the TPM's group can sign with the CA key through the device).
    pub key_password: tpm::Password,
    /// The CA's certificate chain (PEM), its own first.
    pub ca_cert: PathBuf,
    /// TPM manufacturers' CAs (PEM), if any.
    pub endorsement_ca: Option<PathBuf>,
    /// The inventory of approved EK hashes, if any (re-read when it changes).
    pub inventory: Option<PathBuf>,
    /// The database's directory.
    pub state_dir: PathBuf,
    /// How long issued certificates are valid.
    pub validity: Duration,
    /// Where the CRL is written (PEM), for a web server to serve.
    pub crl: PathBuf,
    /// How far ahead a CRL's nextUpdate is; it is re-signed at half of it, or at a revocation.
    pub crl_lifetime: Duration,
    /// `metrics-addr`: Prometheus metrics and `/healthz` over TCP (off when absent).
    pub metrics_addr: Option<SocketAddr>,
}

/// The persistent handle of the CA key by default (signer-unix's key is at 0x81008006).
pub const DEFAULT_HANDLE: u32 = 0x8100_8007;

/// Every default of the CA's config, in one place.
#[derive(Debug)]
struct Defaults {
    listen_addr: &'static str,
    state_dir: &'static str,
    validity: Duration,
    crl_lifetime: Duration,
}

const DEFAULTS: Defaults = Defaults {
    listen_addr: ":8446",
    state_dir: "/var/lib/spire/server-attestor-tpm/devid-ca",
    validity: Duration::from_secs(2160 * 3600),
    crl_lifetime: Duration::from_secs(168 * 3600),
};

impl config::ConfigFile for DevIdCaConfig {
    type Raw = Raw;

    fn decode(path: &Path, raw: Raw) -> Result<DevIdCaConfig, ConfigError> {
        let bad = |key: &str, reason: String| ConfigError::invalid(path, key, reason);
        let file = |key: &str, value: Option<PathBuf>| -> Result<PathBuf, ConfigError> {
            value
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| config::relative_to_config(path, &p))
                .ok_or_else(|| bad(key, "required".into()))
        };
        let optional = |value: Option<PathBuf>| {
            value.filter(|p| !p.as_os_str().is_empty()).map(|p| config::relative_to_config(path, &p))
        };
        let d = &DEFAULTS;
        let listen_raw = raw.listen_addr.as_deref().unwrap_or(d.listen_addr);
        let listen = crate::signer_http::parse_listen(listen_raw)
            .ok_or_else(|| bad("listen-addr", format!("{listen_raw:?} is not ':PORT', 'IP:PORT' or '[IPv6]:PORT'")))?;
        let handle = match raw.tpm_address.as_deref() {
            None => {
                tpm::PersistentHandle::new(DEFAULT_HANDLE).map_err(|e| ConfigError::value(path, "tpm-address", e))?
            }
            Some(s) => s.parse().map_err(|e: tpm::TpmError| ConfigError::value(path, "tpm-address", e))?,
        };
        let tpm_device = match raw.tpm_device.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(s.parse().map_err(|e: tpm::TpmError| ConfigError::value(path, "tpm-device", e))?),
        };
        let cfg = DevIdCaConfig {
            log_format: raw.log_format.unwrap_or_default(),
            listen,
            tls: TlsFiles { cert: file("tls-cert", raw.tls_cert)?, key: file("tls-key", raw.tls_key)? },
            tpm_device,
            key_password: crate::server::key_password::read(
                path,
                "tpm-key-password-file",
                raw.tpm_key_password_file.as_deref(),
            )?,
            handle,
            ca_cert: file("ca-cert", raw.ca_cert)?,
            endorsement_ca: optional(raw.endorsement_ca),
            inventory: optional(raw.inventory),
            state_dir: raw.state_dir.unwrap_or_else(|| PathBuf::from(d.state_dir)),
            validity: config::duration(path, "validity", raw.validity.as_ref())?.unwrap_or(d.validity),
            crl: file("crl", raw.crl)?,
            crl_lifetime: config::duration(path, "crl-lifetime", raw.crl_lifetime.as_ref())?.unwrap_or(d.crl_lifetime),
            metrics_addr: config::metrics_addr(path, raw.metrics_addr.as_deref())?,
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

impl DevIdCaConfig {
    /// The checks across keys.
    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| Err(ConfigError::invalid(path, key, reason));
        if self.endorsement_ca.is_none() && self.inventory.is_none() {
            return bad("endorsement-ca", "set endorsement-ca, inventory or both: nothing would approve an EK");
        }
        if self.validity < Duration::from_secs(3600) || self.validity > Duration::from_secs(3 * 365 * 86_400) {
            return bad("validity", "between 1h and 26280h (3 years)");
        }
        if self.crl_lifetime < Duration::from_secs(600) || self.crl_lifetime > Duration::from_secs(90 * 86_400) {
            return bad("crl-lifetime", "between 10m and 2160h (90 days)");
        }
        Ok(())
    }

    /// The database file.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("devid-ca.sqlite")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::ConfigFile;

    fn parse(text: &str) -> Result<DevIdCaConfig, ConfigError> {
        DevIdCaConfig::parse(Path::new("/etc/spire/server-attestor-tpm/devid-ca.conf"), text)
    }

    const MINIMAL: &str =
        "tls-cert: tls.pem\ntls-key: tls.key\nca-cert: ca.pem\ninventory: inventory\ncrl: /srv/devid.crl\n";

    #[test]
    fn defaults_and_the_shipped_example() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.handle.value(), DEFAULT_HANDLE);
        assert_eq!(c.validity, Duration::from_secs(2160 * 3600));
        assert_eq!(c.crl_lifetime, Duration::from_secs(168 * 3600));
        assert_eq!(c.ca_cert, PathBuf::from("/etc/spire/server-attestor-tpm/ca.pem"), "relative to the config");
        assert_eq!(c.listen.len(), 2);
        parse(include_str!("../../conf/devid-ca.conf")).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("tls-key: k\nca-cert: c\ninventory: i\ncrl: r\n", "tls-cert"),
            ("tls-cert: c\nca-cert: c\ninventory: i\ncrl: r\n", "tls-key"),
            ("tls-cert: c\ntls-key: k\ninventory: i\ncrl: r\n", "ca-cert"),
            ("tls-cert: c\ntls-key: k\nca-cert: c\ninventory: i\n", "crl"),
            ("tls-cert: c\ntls-key: k\nca-cert: c\ncrl: r\n", "endorsement-ca"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
        for (extra, key) in [
            ("tpm-address: 0x01000000\n", "tpm-address"),
            ("validity: 1m\n", "validity"),
            ("validity: often\n", "validity"),
            ("crl-lifetime: 1s\n", "crl-lifetime"),
            ("listen-addr: 8446\n", "listen-addr"),
            ("tpm-device: \"swtpm:path=/x\"\n", "tpm-device"),
            ("bogus: 1\n", "bogus"),
        ] {
            let err = parse(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
            assert!(err.contains(key), "{extra:?}: {err}");
        }
    }
}
