//! Config files: read, `${VAR}` expansion, YAML decode with unknown keys refused, errors naming the key.
//!
//! The upstream (Go) daemons read YAML after `os.ExpandEnv`; we do the same so existing configs keep working,
//! but every daemon's config struct denies unknown keys, and cross-field checks report the key at fault.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config file could not be used. Every variant names the file; `Invalid` names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not decode (syntax, unknown key, wrong type, duplicate key).
    #[error("config {path}: {source}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The decoder's error, which names the key and position.
        source: serde_yaml_ng::Error,
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
}

impl ConfigError {
    /// Builds an [`ConfigError::Invalid`].
    pub fn invalid(path: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid { path: path.to_owned(), key: key.into(), reason: reason.into() }
    }
}

/// Expands `$NAME` and `${NAME}` from the environment the way Go's `os.ExpandEnv` does: an unset variable
/// becomes the empty string, a `$` not followed by a name is dropped along with what Go drops.
pub fn expand_env(input: &str) -> String {
    expand_with(input, |name| std::env::var(name).ok())
}

fn expand_with(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if end > 0 => {
                    out.push_str(&lookup(&braced[..end]).unwrap_or_default());
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
        out.push_str(&lookup(&after[..name_len]).unwrap_or_default());
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out
}

/// Reads `path`, expands environment variables, and decodes YAML into `T` (which should deny unknown keys).
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse_yaml(path, &raw)
}

/// Decodes YAML text (after `${VAR}` expansion) as if it had been read from `path`.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, raw: &str) -> Result<T, ConfigError> {
    let expanded = expand_env(raw);
    serde_yaml_ng::from_str(&expanded).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
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
            v.parse::<super::duration::GoDuration>()
                .map(|d| d.0)
                .map_err(|e| ConfigError::invalid(path, key, e.to_string()))
        })
        .transpose()
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

/// The machine's host name as Go's `os.Hostname` reads it on Linux.
pub fn hostname() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ("${UNSET}x", "x"),
            ("$UNSET.y", ".y"),
            ("a$", "a$"),
            ("a$-b", "a$-b"),
            ("${}z", "z"),
            ("${TD", ""),
            ("${EMPTY}|", "|"),
            ("no vars", "no vars"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_with(input, env), want, "{input}");
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
