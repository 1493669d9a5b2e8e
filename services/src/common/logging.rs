//! Installs the tracing subscriber for a binary: human-readable lines on stderr, `RUST_LOG` overrides the
//! default level (`info`). Libraries only emit; binaries call [`init`] once.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Quiets libtss2's own stderr logging unless the operator asked for it: our errors carry the TPM response
/// codes already. Must run before any thread is started (it changes the process environment).
pub fn quiet_tss_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
}
