//! One line for an error and its causes, as the binaries print it: each cause once.
//!
//! The project's errors follow one rule, so that the chain can be printed as it is: an error either says its
//! cause in its own text, keeping the cause as a typed field (`cause`), or returns it from `source()` and does
//! not say it; never both. The log lines, gRPC statuses and HTTP answers print an error's own text, so the errors
//! they print say their cause.

use std::error::Error;

/// `error: cause: its cause ...`: the error's text, then each `source()` in turn.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// The first line of a peer's answer (a refusal's reason), trimmed, at most `max` characters, each control and
/// bidirectional-override character in it escaped: the text reaches an operator's terminal and logs, where a
/// peer's terminal escape must not act and a reordering must not disguise what it says.
pub fn peer_line(text: &str, max: usize) -> String {
    let mut line = String::new();
    for c in text.lines().next().unwrap_or("").trim().chars().take(max) {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// The one conversion of a command's outcome to its exit status: 0; or 1, with `error: ` and the chain on
/// stderr. Usage errors, exit 2, are clap's.
pub fn exit(result: Result<(), impl Into<Box<dyn Error + 'static>>>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {}", error_chain(e.into().as_ref()));
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_line_is_one_bounded_line_with_its_control_characters_escaped() {
        let rows = [
            ("token already used\nsecond line", "token already used"),
            ("\u{1b}[2J\u{1b}]0;owned\u{7}gone", "\\u{1b}[2J\\u{1b}]0;owned\\u{7}gone"),
            ("tab\there\u{0}x", "tab\\there\\u{0}x"),
            ("crlf\r\nnext", "crlf"),
            ("  padded  \n", "padded"),
            ("ok \u{202e}txt.exe\u{2066}", "ok \\u{202e}txt.exe\\u{2066}"),
            ("", ""),
        ];
        for (text, shown) in rows {
            assert_eq!(peer_line(text, 300), shown, "{text:?}");
        }
        assert_eq!(peer_line(&"é".repeat(400), 300).chars().count(), 300);
    }

    /// Says its cause, keeps it typed, does not return it from `source()`.
    #[derive(Debug, thiserror::Error)]
    #[error("config {path}: cannot read: {cause}")]
    struct SaysIt {
        path: &'static str,
        cause: std::io::Error,
    }

    /// Returns its cause from `source()` and does not say it.
    #[derive(Debug, thiserror::Error)]
    #[error("opening the key")]
    struct Wraps(#[source] std::io::Error);

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)")
    }

    #[test]
    fn each_cause_once() {
        assert_eq!(
            error_chain(&SaysIt { path: "--help", cause: io() }),
            "config --help: cannot read: No such file or directory (os error 2)"
        );
        assert_eq!(error_chain(&Wraps(io())), "opening the key: No such file or directory (os error 2)");
        let any = anyhow::Error::new(SaysIt { path: "a", cause: io() }).context("starting");
        assert_eq!(
            error_chain(any.as_ref()),
            "starting: config a: cannot read: No such file or directory (os error 2)"
        );
    }

    /// This crate's errors that say their cause print it once through the chain.
    #[test]
    fn the_crates_errors_say_each_cause_once() {
        let read = crate::config::ConfigError::Read { path: "c.conf".into(), cause: io() };
        assert_eq!(error_chain(&read), "config c.conf: cannot read: No such file or directory (os error 2)");
        assert!(read.source().is_none(), "a cause said in the text is not also the source");
    }
}
