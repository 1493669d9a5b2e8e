//! `spire-server-attestor-tpm-devid`: DevID provisioning for SPIRE's `tpm_devid` (`provision`), a file-based DevID
//! CA for labs and tests (`sign-csr`), and the whole exchange run locally, step by step (`check`). The command
//! line is `plugin::devid::cli`.

use clap::Parser;
use plugin::devid::cli::{run, Cli};

fn main() {
    common::report::exit(run(Cli::parse()));
}
