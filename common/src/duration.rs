//! Go-compatible duration strings (`time.ParseDuration`): `10m`, `1h30m`, `1.5h`, `500ms`, `90s`.
//!
//! The upstream configs use Go's syntax, so we accept exactly it. Negative durations are rejected: no
//! config value in this project means anything when negative.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer};

/// A non-negative duration parsed from Go's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Go's limit: a `time.Duration` is an int64 of nanoseconds (about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError { input: s.to_owned(), reason };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(err("empty"));
        }
        if rest.starts_with('-') {
            return Err(err("negative"));
        }
        rest = rest.strip_prefix('+').unwrap_or(rest);
        if rest == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| err("missing unit"))?;
            if num_end == 0 {
                return Err(err("expected a number"));
            }
            let (num, tail) = rest.split_at(num_end);
            let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3_600 * 1_000_000_000,
                _ => return Err(err("unknown unit (use ns, us, ms, s, m, h)")),
            };
            let (int, frac) = num.split_once('.').unwrap_or((num, ""));
            if int.is_empty() && frac.is_empty() || frac.contains('.') {
                return Err(err("expected a number"));
            }
            let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err("too large"))? };
            let mut value = int.checked_mul(scale).filter(|v| *v <= MAX_NANOS).ok_or_else(|| err("too large"))?;
            // Fractional part: at most nanosecond precision, like Go; digits past it are ignored.
            let mut place = scale;
            for d in frac.bytes() {
                place /= 10;
                value += u128::from(d - b'0') * place;
            }
            // Each term is at most MAX_NANOS + one unit, so none of this can wrap; the sum is checked each step.
            nanos = nanos.checked_add(value).filter(|n| *n <= MAX_NANOS).ok_or_else(|| err("too large"))?;
            rest = tail;
        }
        let nanos = u64::try_from(nanos).map_err(|_| err("too large"))?;
        Ok(GoDuration(Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() != 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        if s > 0 || out.is_empty() {
            out.push_str(&format!("{s}s"));
        }
        f.write_str(&out)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_go_syntax() {
        let ok = [
            ("10m", 600_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("500ms", 500),
            ("90s", 90_000),
            ("0", 0),
            ("1m0.5s", 60_500),
            (" 2s ", 2_000),
        ];
        for (s, ms) in ok {
            assert_eq!(s.parse::<GoDuration>().map(|d| d.0.as_millis()), Ok(ms), "{s}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for s in ["", "10", "-5m", "5 m", "m", "1x", "1..5s", ".s", "99999999999999999999h"] {
            assert!(s.parse::<GoDuration>().is_err(), "{s:?} should be rejected");
        }
    }

    /// Found by reading the fuzz targets: a long fraction after a huge integer wrapped the sum (a panic in debug
    /// builds; in release `340282366920938463463374607431768.9ms` became 688 us and
    /// `94522879700260684295381835.9h` became 1808 s, so a typo could make every token expire at once).
    #[test]
    fn overflow_is_refused_at_gos_limit() {
        for s in [
            "340282366920938463463374607431768.9ms",
            "94522879700260684295381835.9h",
            "9223372036854775808ns",
            "2562048h",
            "2562047h47m16.854775808s",
            "1h9223372036854775807ns",
        ] {
            assert!(s.parse::<GoDuration>().is_err(), "{s:?} should be refused as too large");
        }
        let max = "2562047h47m16.854775807s".parse::<GoDuration>().unwrap();
        assert_eq!(max.0, Duration::from_nanos(i64::MAX as u64));
        assert_eq!("9223372036854775807ns".parse::<GoDuration>().unwrap(), max);
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(GoDuration(Duration::from_secs(5400)).to_string(), "1h30m");
        assert_eq!(GoDuration(Duration::from_secs(0)).to_string(), "0s");
    }
}
