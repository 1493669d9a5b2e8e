//! Installs the tracing subscriber for a binary: human-readable lines on stderr, ANSI colour only when stderr is
//! a terminal, `RUST_LOG` overrides the default filter. Libraries only emit; binaries call [`init`] once.
//!
//! Third-party crates' internal records stay out of the operator's log unless `RUST_LOG` asks for them:
//! tss-esapi logs its own probes (`Error when getting ESYS handle ...` on every provision of a blank TPM,
//! `Closing context.`), and the HTTP/2 and gRPC stacks log every frame at DEBUG. Our own errors carry the TPM
//! response code and context already.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Directives added to every default filter: the crates whose records are internals, not events.
const QUIET: &str = "tss_esapi=off,h2=warn,hyper=warn,hyper_util=warn,tonic=warn,tower=warn,rustls=warn";

/// `RUST_LOG` when set, else `level` for our crates with the third-party internals quieted.
pub fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("{level},{QUIET}")))
}

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("info"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Quiets libtss2's own stderr logging unless the operator asked for it: our errors carry the TPM response
/// codes already. Must run before any thread is started (it changes the process environment).
pub fn quiet_tss_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
}
