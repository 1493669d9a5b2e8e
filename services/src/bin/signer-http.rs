//! `spire-server-attestor-tpm-signer-http CONFIG`: the network co-signer.

use std::path::PathBuf;

use anyhow::bail;
use common::logging;
use services::server::http::shutdown_signal;
use services::signer_http::{self, SignerHttpConfig};

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
    let [config] = args.as_slice() else {
        bail!("usage: spire-server-attestor-tpm-signer-http CONFIG");
    };
    let cfg = SignerHttpConfig::load(&PathBuf::from(config))?;
    // One async thread: verification is a few tens of microseconds and the TPM sign happens in signer-unix.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(signer_http::run(cfg, shutdown_signal()))?;
    Ok(())
}
