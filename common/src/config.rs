//! Config files: read, `${VAR}` expansion, YAML decode with unknown keys refused, errors naming the key.
//!
//! The upstream (Go) daemons read YAML after `os.ExpandEnv`; we do the same so existing configs keep working,
//! but every daemon's config struct denies unknown keys, and cross-field checks report the key at fault.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config file could not be used. Every variant names the file; `Invalid` names the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {cause}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The YAML did not decode (syntax, unknown key, wrong type, duplicate key).
    #[error("config {path}: {cause}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The decoder's error, which names the key and position.
        cause: serde_yaml_ng::Error,
    },
    /// A value decoded but is not acceptable.
    #[error("config {path}: key `{key}`: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key, dotted for nested keys (`keyset.main.chain`).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value decoded but the parser of its kind refused it (a TPM handle, a URL, a policy).
    #[error("config {path}: key `{key}`: {cause}")]
    Value {
        /// The config file.
        path: PathBuf,
        /// The offending key, dotted for nested keys.
        key: String,
        /// The parser's error, kept as it is.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`].
    pub fn invalid(path: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { path: path.to_owned(), key: key.into(), reason: reason.into() }
    }

    /// Builds a [`ConfigError::Value`]: `key`'s value, refused by its parser with `cause`.
    pub fn value(
        path: &Path,
        key: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ConfigError::Value { path: path.to_owned(), key: key.into(), cause: cause.into() }
    }
}

/// An environment variable a config names but the environment does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVar {
    /// The variable.
    pub name: String,
    /// The 1-based line it is on.
    pub line: usize,
}

/// Expands `$NAME` and `${NAME}` from the environment as Go's `os.ExpandEnv` does, except that an unset
/// variable is an error instead of silently becoming empty (the shipped `spire-server.${SPIFFE_TRUST_DOMAIN}`
/// would turn into the single-label `spire-server`). A variable set to the empty string expands to it.
pub fn expand_env(input: &str) -> Result<String, UnsetVar> {
    expand_with(input, |name| std::env::var(name).ok())
}

fn expand_with(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, UnsetVar> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let value = |name: &str, rest: &str| {
        let at = input.len() - rest.len();
        let line_start = input[..at].rfind('\n').map_or(0, |i| i + 1);
        match lookup(name) {
            Some(v) => Ok(v),
            // A commented-out line means nothing to the YAML decoder: expand it to nothing, as before.
            None if input[line_start..].trim_start().starts_with('#') => Ok(String::new()),
            None => Err(UnsetVar { name: name.to_owned(), line: input[..at].matches('\n').count() + 1 }),
        }
    };
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if end > 0 => {
                    out.push_str(&value(&braced[..end], after)?);
                    rest = &braced[end + 1..];
                }
                // Go: "${}" and an unterminated "${" are dropped with the brace.
                Some(end) => rest = &braced[end + 1..],
                None => rest = "",
            }
            continue;
        }
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        if name_len == 0 {
            // A lone "$" (e.g. at the end, or before punctuation) is kept, as Go keeps it.
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&value(&after[..name_len], after)?);
        rest = &after[name_len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The YAML key of `line` of `text`, for errors: `url: x` and `- url: x` give `url`; a list item without a key
/// gives the key of the list it is in (the nearest line above with less indentation).
fn key_on_line(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key = |l: &str| {
        let l = l.trim_start().trim_start_matches("- ");
        l.split_once(':').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.contains(' ')).map(str::to_owned)
    };
    let Some(here) = lines.get(line.saturating_sub(1)) else { return format!("line {line}") };
    if let Some(k) = key(here) {
        return k;
    }
    lines[..line - 1]
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .find(|l| indent(l) < indent(here) || (indent(l) == indent(here) && !l.trim_start().starts_with('-')))
        .and_then(|l| key(l))
        .unwrap_or_else(|| format!("line {line}"))
}

/// A daemon's config file: its keys as YAML decodes them (`Raw`, which denies unknown keys) and the one step that
/// makes them typed, checked values. Reading, `${VAR}` expansion and decoding are the same for every daemon.
pub trait ConfigFile: Sized {
    /// The file's keys as the YAML decoder fills them.
    type Raw: DeserializeOwned;

    /// Turns decoded keys into the config: each value parsed (errors name the key), then the checks across keys.
    /// `path` names the file in errors and anchors relative paths.
    fn decode(path: &Path, raw: Self::Raw) -> Result<Self, ConfigError>;

    /// Loads and checks the config file at `path`.
    fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::decode(path, load_yaml(path)?)
    }

    /// Parses config text as if read from `path`.
    fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::decode(path, parse_yaml(path, text)?)
    }
}

/// Reads `path`, expands environment variables, and decodes YAML into `T` (which should deny unknown keys).
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let raw =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), cause: source })?;
    parse_yaml(path, &raw)
}

/// Decodes YAML text (after `${VAR}` expansion) as if it had been read from `path`.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, raw: &str) -> Result<T, ConfigError> {
    let expanded = expand_env(raw).map_err(|unset| {
        ConfigError::invalid(
            path,
            key_on_line(raw, unset.line),
            format!("environment variable {} is not set (line {})", unset.name, unset.line),
        )
    })?;
    serde_yaml_ng::from_str(&expanded).map_err(|source| ConfigError::Parse { path: path.to_owned(), cause: source })
}

/// Any YAML scalar, kept as text, so a value of the wrong form (`duration: 10`) is reported by our own
/// validation, which names the key, instead of by the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a scalar")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses the optional Go-style duration at `key`, with an error naming the key.
pub fn duration(path: &Path, key: &str, value: Option<&Scalar>) -> Result<Option<std::time::Duration>, ConfigError> {
    value
        .map(|Scalar(v)| {
            v.parse::<crate::duration::GoDuration>()
                .map(|d| d.0)
                .map_err(|e| ConfigError::invalid(path, key, e.to_string()))
        })
        .transpose()
}

/// The Go-style duration at `key`, `default` when absent; refused below `min`.
pub fn duration_at_least(
    path: &Path,
    key: &str,
    value: Option<&Scalar>,
    default: std::time::Duration,
    min: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    let d = duration(path, key, value)?.unwrap_or(default);
    if d < min {
        return Err(ConfigError::invalid(path, key, format!("must be at least {}", crate::duration::GoDuration(min))));
    }
    Ok(d)
}

/// The number at `key`, `default` when absent; refused outside `range`.
pub fn bounded<T: Copy + PartialOrd + std::fmt::Display>(
    path: &Path,
    key: &str,
    value: Option<T>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if !range.contains(&v) {
        return Err(ConfigError::invalid(path, key, format!("{v} is outside {}..={}", range.start(), range.end())));
    }
    Ok(v)
}

/// `socket-mode`: an octal mode, 0660 by default. With `private` set (the socket reaches a TPM), any access
/// for other users is refused with that reason.
pub fn socket_mode(path: &Path, value: Option<&str>, private: Option<&str>) -> Result<u32, ConfigError> {
    let mode = match value {
        None => 0o660,
        Some(s) => parse_mode(s)
            .ok_or_else(|| ConfigError::invalid(path, "socket-mode", format!("{s:?} is not an octal mode")))?,
    };
    if let Some(reason) = private.filter(|_| mode & 0o007 != 0) {
        return Err(ConfigError::invalid(path, "socket-mode", format!("{mode:04o} {reason}")));
    }
    Ok(mode)
}

/// `metrics-addr`: `host:port` (an IP address, or a name resolved once at start-up, e.g. `localhost:9464`); off
/// when absent or empty.
pub fn metrics_addr(path: &Path, value: Option<&str>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    use std::net::ToSocketAddrs;
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let bad = |reason: String| ConfigError::invalid(path, "metrics-addr", reason);
    let mut addrs = v.to_socket_addrs().map_err(|e| bad(format!("{v:?} is not host:port ({e})")))?;
    addrs.next().map(Some).ok_or_else(|| bad(format!("{v:?} resolves to no address")))
}

/// `keydir`, relative to the config file's directory, `keys` by default (as upstream).
pub fn keydir(path: &Path, value: Option<&Path>) -> PathBuf {
    relative_to_config(path, value.unwrap_or(Path::new("keys")))
}

/// Reads the public key `name` (a file name inside `keydir`) for config key `key`.
pub fn load_key(path: &Path, keydir: &Path, key: &str, name: &str) -> Result<crypto::keys::VerifyingKey, ConfigError> {
    if name.is_empty() || name.contains('/') {
        return Err(ConfigError::invalid(
            path,
            key,
            format!("{name:?} must be a file name inside keydir {}", keydir.display()),
        ));
    }
    let file = keydir.join(name);
    let pem = std::fs::read(&file).map_err(|e| ConfigError::invalid(path, key, format!("{}: {e}", file.display())))?;
    crypto::keys::VerifyingKey::from_pem(name, &pem).map_err(|e| ConfigError::invalid(path, key, e.to_string()))
}

/// Resolves `dir` relative to the directory holding the config file, as upstream `keydir` does.
pub fn relative_to_config(config: &Path, dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        dir.to_owned()
    } else {
        config.parent().unwrap_or_else(|| Path::new(".")).join(dir)
    }
}

/// Parses an octal file mode such as `"0660"` or `"660"`.
pub fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o777)
}

/// The machine's host name: the name Go's `os.Hostname` gives (it reads the same kernel field).
pub fn hostname() -> std::io::Result<String> {
    // uname(2), not /proc/sys/kernel/hostname: the signer-unix unit hides /proc/sys (ProcSubset=pid), and with it
    // that file, which made signer-unix without `issuer` refuse to start.
    let uts = rustix::system::uname();
    let name = uts
        .nodename()
        .to_str()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "the host name is not UTF-8"))?;
    if name.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the host name is empty"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_the_kernels_without_reading_proc_sys() {
        let name = hostname().unwrap();
        assert!(!name.is_empty() && !name.contains('\n'), "{name:?}");
        if let Ok(proc) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(name, proc.trim());
        }
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "TD" => Some("example.org".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_like_go() {
        let cases = [
            ("spire-server.${TD}", "spire-server.example.org"),
            ("spire-server.$TD/x", "spire-server.example.org/x"),
            ("a$", "a$"),
            ("a$-b", "a$-b"),
            ("${}z", "z"),
            ("${TD", ""),
            ("${EMPTY}|", "|"),
            ("no vars", "no vars"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_with(input, env).as_deref(), Ok(want), "{input}");
        }
        // The old expansion made these "x" and ".y" without a word.
        for (input, name, line) in [("${UNSET}x", "UNSET", 1), ("a: 1\nb: $UNSET.y", "UNSET", 2)] {
            assert_eq!(expand_with(input, env), Err(UnsetVar { name: name.into(), line }), "{input}");
        }
        assert_eq!(expand_with("a: 1\n  # url: ${UNSET}\n", env).as_deref(), Ok("a: 1\n  # url: \n"));
    }

    #[test]
    fn errors_name_the_key_of_a_line() {
        let text = "a: 1\nallowed-addrs:\n- x\n- spire.${V}\nkeyset:\n  main:\n    url: h\n    mirrors:\n      - m\n";
        for (line, key) in [(1, "a"), (3, "allowed-addrs"), (4, "allowed-addrs"), (7, "url"), (9, "mirrors")] {
            assert_eq!(key_on_line(text, line), key, "line {line}");
        }
    }

    #[test]
    fn an_unset_variable_is_an_error_naming_it_and_the_key() {
        let text = "keydir: keys\nkeyset:\n  main:\n    url: http://spire-server.${SAT_TEST_SURELY_UNSET_VAR}/t\n";
        let err = parse_yaml::<serde_yaml_ng::Value>(Path::new("/etc/v.conf"), text).unwrap_err().to_string();
        assert!(err.contains("SAT_TEST_SURELY_UNSET_VAR") && err.contains("url") && err.contains("line 4"), "{err}");
    }

    #[test]
    fn metrics_addr_table() {
        let p = Path::new("/etc/x.conf");
        assert_eq!(metrics_addr(p, None).unwrap(), None);
        assert_eq!(metrics_addr(p, Some("")).unwrap(), None);
        assert_eq!(metrics_addr(p, Some("127.0.0.1:9464")).unwrap(), Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(metrics_addr(p, Some("[::1]:9464")).unwrap(), Some("[::1]:9464".parse().unwrap()));
        assert!(metrics_addr(p, Some("localhost:9464")).unwrap().is_some_and(|a| a.ip().is_loopback()));
        for bad in ["9464", ":x", "127.0.0.1", "127.0.0.1:99999", "no such host.invalid:1"] {
            let err = metrics_addr(p, Some(bad)).unwrap_err().to_string();
            assert!(err.contains("metrics-addr") && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_modes() {
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("600"), Some(0o600));
        assert_eq!(parse_mode("0o640"), Some(0o640));
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("7777"), None);
        assert_eq!(parse_mode(""), None);
    }

    #[test]
    fn keydir_is_relative_to_the_config() {
        assert_eq!(relative_to_config(Path::new("/etc/x/v.conf"), Path::new("keys")), PathBuf::from("/etc/x/keys"));
        assert_eq!(relative_to_config(Path::new("/etc/x/v.conf"), Path::new("/k")), PathBuf::from("/k"));
    }
}
