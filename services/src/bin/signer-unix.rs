//! `spire-server-attestor-tpm-signer-unix CONFIG` runs the daemon;
//! `spire-server-attestor-tpm-signer-unix provision [--tpm-device DEV] [--handle H] [--key-type T] [--out FILE]`
//! creates (or finds) the signing key and prints its public key. The command line is `signer_unix::cli`.

use clap::Parser;
use services::signer_unix::cli::{run, Cli};

fn main() {
    common::report::exit(run(Cli::parse()));
}
