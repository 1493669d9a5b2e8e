//! `spire-server-attestor-tpm-verifier CONFIG -l` serves verified bundles to the SPIRE agent;
//! `spire-server-attestor-tpm-verifier CONFIG KEYSET [URL]` prints one verified bundle and exits.

use std::path::PathBuf;

use anyhow::bail;
use common::logging;
use services::server::http::shutdown_signal;
use services::verifier::{self, VerifierConfig};

const USAGE: &str = "usage: spire-server-attestor-tpm-verifier CONFIG -l | CONFIG KEYSET [URL]";

fn main() {
    if let Err(e) = run() {
        // One line with the whole cause chain; no backtrace for an operator's config mistake.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, mode, url) = match args.as_slice() {
        [c, m] => (c, m.as_str(), None),
        [c, m, u] if m != "-l" => (c, m.as_str(), Some(u.as_str())),
        _ => bail!("{USAGE}"),
    };
    let cfg = VerifierConfig::load(&PathBuf::from(config))?;
    // One thread: the cached path allocates almost nothing and the node's RSS stays small.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if mode == "-l" {
        runtime.block_on(verifier::run(cfg, shutdown_signal()))?;
    } else {
        let pem = runtime.block_on(verifier::verify_once(&cfg, mode, url))?;
        print!("{pem}");
    }
    Ok(())
}
