//! `spire-server-attestor-tpm-verifier CONFIG -l` serves verified bundles to the SPIRE agent;
//! `spire-server-attestor-tpm-verifier CONFIG KEYSET [URL]` prints one verified bundle and exits;
//! `spire-server-attestor-tpm-verifier CONFIG KEYSET --keys` prints the keys the node trusts for it. The command
//! line is `verifier::cli`.

use clap::Parser;
use services::verifier::cli::{run, Cli};

fn main() {
    common::report::exit(run(Cli::parse()));
}
