//! `spire-server-attestor-tpm-sign SOCKET [URL...] < bundle.pem`: sign, co-sign, publish, print the token.

use std::time::Duration;

fn main() {
    services::common::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() && std::env::var_os("BundlePublisher").is_some() {
        eprintln!("spire-server-attestor-tpm-sign: SPIRE plugin mode is not available in this build; use the CLI mode");
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spire-server-attestor-tpm-sign: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(plugin::cli::run(&args, &mut std::io::stdin().lock(), Duration::from_secs(30)));
    match result {
        Ok(token) => println!("{token}"),
        Err(e @ plugin::cli::CliError::Usage) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("spire-server-attestor-tpm-sign: {e}");
            std::process::exit(1);
        }
    }
}
