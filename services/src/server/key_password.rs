//! The password of a daemon's TPM signing key (`tpm-key-password-file`), read once at config load. A key made by
//! `provision` with a password is noDA (a daemon restarting with a wrong one must not lock the TPM's other keys
//! out), so the password must be out of reach of guessing: 16 to 32 bytes (a TPM object's authValue is at most
//! its name hash's 32), such as `openssl rand -hex 16`.

use std::io::Read;
use std::path::Path;

use common::config::ConfigError;

/// Fewest bytes a key password may have.
pub const MIN_LEN: usize = 16;
/// Most bytes a key password may have (SHA-256, the keys' name algorithm).
pub const MAX_LEN: usize = 32;

/// The password in `file` (the value of `key` in the config `path`), trailing newlines dropped; no file: none.
pub fn read(path: &Path, key: &str, file: Option<&Path>) -> Result<tpm::Password, ConfigError> {
    let Some(file) = file else { return Ok(tpm::Password::default()) };
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_LEN as u64 + 3).read_to_end(&mut bytes))
        .map_err(|e| ConfigError::invalid(path, key, format!("{}: {e}", file.display())))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    let password = tpm::Password::new(bytes);
    if !(MIN_LEN..=MAX_LEN).contains(&password.len()) {
        return Err(ConfigError::invalid(
            path,
            key,
            format!(
                "{} holds {} bytes or more; a key password is {MIN_LEN} to {MAX_LEN} random bytes (e.g. `openssl rand -hex 16`)",
                file.display(),
                password.len()
            ),
        ));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_key_password_is_16_to_32_bytes_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let (conf, file) = (dir.path().join("c.conf"), dir.path().join("pw"));
        assert!(read(&conf, "tpm-key-password-file", None).unwrap().is_empty());
        for (content, ok) in
            [("0123456789abcdef\n", true), (&"x".repeat(32), true), ("short", false), (&"x".repeat(33), false)]
        {
            std::fs::write(&file, content).unwrap();
            match read(&conf, "tpm-key-password-file", Some(&file)) {
                Ok(p) => assert!(ok && !format!("{p:?}").contains('x') && !format!("{p:?}").contains("0123")),
                Err(e) => {
                    assert!(!ok, "{content:?}: {e}");
                    let said = e.to_string();
                    assert!(said.contains("tpm-key-password-file") && !said.contains(content.trim()), "{said}");
                }
            }
        }
        let missing = read(&conf, "tpm-key-password-file", Some(&dir.path().join("none"))).unwrap_err();
        assert!(missing.to_string().contains("tpm-key-password-file"), "{missing}");
    }
}
