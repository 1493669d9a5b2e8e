//! Installs the tracing subscriber for a binary: human-readable lines on stderr (ANSI colour only when stderr is
//! a terminal), or JSON lines for log shippers (`log-format: json`, `--log-format json`) with the structured
//! fields (`keyset`, `peer_uid`, ...) at the top level; `RUST_LOG` overrides the default filter. Libraries only
//! emit; binaries call [`init`] (or [`init_with`]) once.
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

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event: `timestamp`, `level`, `message` and the event's fields.
    Json,
}

/// A `--log-format` value that is neither `text` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a log format: use text or json")]
pub struct UnknownLogFormat(String);

impl std::str::FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// Installs the global text subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init() {
    init_with(LogFormat::Text);
}

/// Installs the global subscriber in `format`. Calling it twice is harmless (the second call does nothing).
pub fn init_with(format: LogFormat) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter("info")).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_target(false).try_init(),
    };
}

/// Quiets libtss2's own stderr logging unless the operator asked for it: our errors carry the TPM response
/// codes already. Must run before any thread is started (it changes the process environment).
pub fn quiet_tss_logging() {
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+NONE");
    }
}
