//! What an operator's log must look like, checked the same way in every lane: no ANSI colour escapes (stderr here
//! is a file, never a terminal), no records of tss-esapi's or libtss2's internals, and with `log-format: json` one
//! JSON object per line.

// Assertion helpers for tests: a log that breaks the rule stops the test with the offending text.
#![allow(clippy::panic)]

/// Marks of tss-esapi's and libtss2's own records (`WARNING:esys:src/...`, `ERROR:tcti:...`, tss-esapi's
/// `Closing context.`), none of which may reach an operator's log unless `RUST_LOG`/`TSS2_LOG` ask for them.
pub const TSS_INTERNALS: [&str; 7] =
    ["Closing context", "Closing handle", "ESYS handle", "Esys_", "esys:", "tcti:", "sys:src/"];

/// Panics, naming `what`, when `log` carries a colour escape or a TSS internal record.
pub fn assert_readable(what: &str, log: &str) {
    assert!(!log.contains('\u{1b}'), "{what}: ANSI escapes in a log that is not a terminal:\n{log}");
    for internal in TSS_INTERNALS {
        assert!(!log.contains(internal), "{what}: tss-esapi/libtss2 internals ({internal:?}) in:\n{log}");
    }
}

/// Each line of a `log-format: json` log, parsed; panics on a line that is not one JSON object with
/// `timestamp`, `level` and `message`.
pub fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string() && v["message"].is_string(),
                "a JSON line without timestamp, level and message: {l}"
            );
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_and_json_tables() {
        assert_readable("plain", "2026-12-07T01:00:00Z  INFO signer-unix ready socket=/run/s.sock\n");
        for bad in [
            "\u{1b}[32m INFO\u{1b}[0m ready",
            "WARNING:esys:src/tss2-esys/esys_tr.c:1 Esys_TR_FromTPMPublic",
            "ERROR:tcti:src/x",
        ] {
            assert!(std::panic::catch_unwind(|| assert_readable("bad", bad)).is_err(), "{bad:?} passed");
        }
        let lines = json_lines("{\"timestamp\":\"t\",\"level\":\"INFO\",\"message\":\"m\",\"keyset\":\"a\"}\n");
        assert_eq!(lines[0]["keyset"], "a");
        for bad in ["INFO m", "{\"level\":\"INFO\",\"message\":\"m\"}", "[1]"] {
            assert!(std::panic::catch_unwind(|| json_lines(bad)).is_err(), "{bad:?} passed");
        }
    }
}
