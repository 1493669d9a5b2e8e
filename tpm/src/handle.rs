//! Persistent TPM handles, parsed once at the edge (`0x81008006`), valid only in the persistent range
//! (TPM 2.0 Part 2, 7.2: `TPM_HT_PERSISTENT` = 0x81).

use std::fmt;
use std::str::FromStr;

use crate::error::TpmError;

/// A handle in `0x81000000..=0x81FFFFFF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistentHandle(u32);

impl PersistentHandle {
    /// The signing key's handle in the upstream recipe.
    pub const DEFAULT_SIGNING: PersistentHandle = PersistentHandle(0x8100_8006);
    /// The storage primary key (SRK) the upstream recipe creates the signing key under.
    pub const SRK: PersistentHandle = PersistentHandle(0x8100_0001);

    /// Checks the range.
    pub fn new(value: u32) -> Result<PersistentHandle, TpmError> {
        if (0x8100_0000..=0x81FF_FFFF).contains(&value) {
            Ok(PersistentHandle(value))
        } else {
            Err(TpmError::BadHandle { input: format!("{value:#010x}") })
        }
    }

    /// The raw value.
    pub fn value(self) -> u32 {
        self.0
    }
}

impl FromStr for PersistentHandle {
    type Err = TpmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let hex = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .ok_or_else(|| TpmError::BadHandle { input: s.into() })?;
        if hex.is_empty() || hex.len() > 8 {
            return Err(TpmError::BadHandle { input: s.into() });
        }
        let v = u32::from_str_radix(hex, 16).map_err(|_| TpmError::BadHandle { input: s.into() })?;
        PersistentHandle::new(v).map_err(|_| TpmError::BadHandle { input: s.into() })
    }
}

impl fmt::Display for PersistentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        for (s, v) in [("0x81008006", 0x8100_8006), ("0X81000001", 0x8100_0001), (" 0x81ffffff ", 0x81ff_ffff)] {
            assert_eq!(s.parse::<PersistentHandle>().unwrap().value(), v, "{s}");
        }
        for bad in
            ["81008006", "0x", "0x80000000", "0x82000000", "0x181008006", "0xzz", "", "-0x81008006", "0x01C00002"]
        {
            assert!(bad.parse::<PersistentHandle>().is_err(), "{bad:?}");
        }
        assert_eq!(PersistentHandle::DEFAULT_SIGNING.to_string(), "0x81008006");
    }
}
