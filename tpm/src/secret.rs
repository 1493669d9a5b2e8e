//! Secrets the crate hands to the TPM: hierarchy and key passwords. Zeroized on drop, redacted in `Debug`,
//! never in error text or logs; they leave this module only as the TPM's `Auth` structure.

use zeroize::Zeroizing;

/// A password for a hierarchy or a key: zeroized on drop, never printed.
#[derive(Clone, Default)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps raw password bytes (SPIRE uses the UTF-8 bytes of the configured string).
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (no password).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(feature = "esapi")]
    pub(crate) fn auth(&self) -> Result<tss_esapi::structures::Auth, tss_esapi::Error> {
        tss_esapi::structures::Auth::try_from(self.0.to_vec())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "Password(empty)" } else { "Password(<redacted>)" })
    }
}

/// A fresh password of 32 bytes from the TPM's RNG (the ephemeral AK's).
#[cfg(feature = "esapi")]
pub(crate) fn random_password(conn: &mut crate::esapi::Conn) -> Result<Password, tss_esapi::Error> {
    let bytes = conn.ctx.execute_without_session(|ctx| ctx.get_random(32))?;
    Ok(Password::new(bytes.value().to_vec()))
}
