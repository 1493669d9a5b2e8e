//! One line for an error and its causes, as the binaries print it: each cause once.
//!
//! Many errors here say what their source said (`cannot read x: No such file or directory`) and also return it
//! as their `source()`, so printing the chain naively says the cause twice. Here a cause whose text the line
//! already holds is not repeated.

use std::error::Error;

/// `error: cause: its cause ...`, without repeats.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = cause.source();
    }
    line
}

/// The one conversion of a command's outcome to its exit status: 0; or 1, with `error: ` and the chain (each
/// cause once) on stderr. Usage errors, exit 2, are clap's.
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

    #[derive(Debug, thiserror::Error)]
    #[error("config {path}: cannot read: {source}")]
    struct Repeats {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("opening the key")]
    struct Wraps(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        assert_eq!(
            error_chain(&Repeats { path: "--help", source: io() }),
            "config --help: cannot read: No such file or directory (os error 2)"
        );
        assert_eq!(error_chain(&Wraps(io())), "opening the key: No such file or directory (os error 2)");
        let any = anyhow::Error::new(Repeats { path: "a", source: io() }).context("starting");
        assert_eq!(
            error_chain(any.as_ref()),
            "starting: config a: cannot read: No such file or directory (os error 2)"
        );
    }
}
