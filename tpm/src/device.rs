//! Where the TPM is: a character device (`/dev/tpmrm0`) or swtpm over TCP (`swtpm:host=H,port=P`). Parsed
//! strictly, because tss-esapi 7.7 silently maps unknown swtpm forms (e.g. `swtpm:path=...`) to
//! localhost:2321, which would talk to the wrong TPM.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::TpmError;

/// A TPM location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmDevice {
    /// A kernel TPM device (`/dev/tpmrm0` with the kernel resource manager, or `/dev/tpm0`).
    Device(PathBuf),
    /// The swtpm simulator over TCP; its control port is `port + 1`.
    Swtpm {
        /// Host name or IP.
        host: String,
        /// Command port.
        port: u16,
    },
}

impl TpmDevice {
    /// `/dev/tpmrm0` if present, else `/dev/tpm0`.
    pub fn autodetect() -> Result<TpmDevice, TpmError> {
        for p in ["/dev/tpmrm0", "/dev/tpm0"] {
            if Path::new(p).exists() {
                return Ok(TpmDevice::Device(PathBuf::from(p)));
            }
        }
        Err(TpmError::NoDevice)
    }

    /// True for a software TPM.
    pub fn is_software(&self) -> bool {
        matches!(self, TpmDevice::Swtpm { .. })
    }

    #[cfg(feature = "esapi")]
    pub(crate) fn tcti(&self) -> Result<tss_esapi::tcti_ldr::TctiNameConf, TpmError> {
        use tss_esapi::tcti_ldr::{DeviceConfig, NetworkTPMConfig, TctiNameConf};
        match self {
            TpmDevice::Device(path) => Ok(TctiNameConf::Device(
                DeviceConfig::from_str(&path.display().to_string())
                    .map_err(|_| TpmError::BadDevice { input: self.to_string(), reason: "unusable device path" })?,
            )),
            TpmDevice::Swtpm { host, port } => {
                Ok(TctiNameConf::Swtpm(NetworkTPMConfig::from_str(&format!("host={host},port={port}")).map_err(
                    |_| TpmError::BadDevice { input: self.to_string(), reason: "unusable swtpm host or port" },
                )?))
            }
        }
    }
}

impl FromStr for TpmDevice {
    type Err = TpmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| TpmError::BadDevice { input: s.to_owned(), reason };
        let t = s.trim();
        if t.starts_with('/') {
            return Ok(TpmDevice::Device(PathBuf::from(t)));
        }
        let rest =
            t.strip_prefix("swtpm:").ok_or_else(|| bad("use a device path (/dev/tpmrm0) or swtpm:host=H,port=P"))?;
        let (mut host, mut port) = (None, None);
        for kv in rest.split(',') {
            match kv.split_once('=') {
                Some(("host", h)) if !h.is_empty() && host.is_none() => host = Some(h.to_owned()),
                Some(("port", p)) if port.is_none() => {
                    port = Some(p.parse::<u16>().map_err(|_| bad("port is not a number"))?)
                }
                _ => return Err(bad("only swtpm:host=H,port=P is supported (no path=, no defaults)")),
            }
        }
        match (host, port) {
            (Some(host), Some(port)) if port < u16::MAX => Ok(TpmDevice::Swtpm { host, port }),
            (Some(_), Some(_)) => Err(bad("port + 1 (the control port) must be a valid port")),
            _ => Err(bad("both host= and port= are required")),
        }
    }
}

impl fmt::Display for TpmDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmDevice::Device(p) => write!(f, "{}", p.display()),
            TpmDevice::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("/dev/tpmrm0", TpmDevice::Device("/dev/tpmrm0".into())),
            ("swtpm:host=127.0.0.1,port=2321", TpmDevice::Swtpm { host: "127.0.0.1".into(), port: 2321 }),
            ("swtpm:port=4000,host=localhost", TpmDevice::Swtpm { host: "localhost".into(), port: 4000 }),
        ];
        for (s, want) in ok {
            let got: TpmDevice = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string().parse::<TpmDevice>().unwrap(), want, "round trip {s}");
        }
        for bad in [
            "",
            "swtpm",
            "swtpm:",
            "swtpm:path=/tmp/s.sock",
            "swtpm:host=127.0.0.1",
            "swtpm:port=2321",
            "swtpm:host=x,port=99999",
            "swtpm:host=x,port=65535",
            "swtpm:host=x,port=1,host=y",
            "device:/dev/tpm0",
            "tpmrm0",
            "mssim:host=x,port=1",
        ] {
            assert!(bad.parse::<TpmDevice>().is_err(), "{bad:?}");
        }
    }
}
