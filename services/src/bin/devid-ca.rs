//! `spire-server-attestor-tpm-devid-ca CONFIG` runs the enrollment CA; `provision`, `token create`, `revoke` and
//! `list` manage it. The command line is `devid_ca::cli`.

use clap::Parser;
use services::devid_ca::cli::{run, Cli};

fn main() {
    common::report::exit(run(Cli::parse()));
}
