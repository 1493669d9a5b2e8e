//! The sign binary's command line: `spire-server-attestor-tpm-sign SOCKET [URL...] < bundle.pem`, and `keys ...`
//! (a signed keyset update, [`crate::keyset_update`]).
//!
//! Invariant: the token is published only after every signature in the chain was obtained; any failure
//! publishes nothing and exits non-zero with the failing step named.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser};

use common::client::{ClientError, HttpUrl};
use common::signer_client::{SignerClient, SignerClientError};
use crypto::token::Token;
use crypto::TrustDomain;

/// Largest bundle read from standard input.
pub const MAX_BUNDLE: usize = 1 << 20;

/// Why the CLI failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A co-signer URL is not usable.
    #[error("co-signer URL: {0}")]
    Url(ClientError),
    /// Standard input could not be read.
    #[error("reading the bundle from standard input: {0}")]
    Input(std::io::Error),
    /// Standard input holds more than a bundle can be.
    #[error("the bundle on standard input is larger than {MAX_BUNDLE} bytes")]
    TooLarge,
    /// Standard input is empty.
    #[error("the bundle on standard input is empty")]
    Empty,
    /// Building the client failed.
    #[error("client set-up: {0}")]
    Client(ClientError),
    /// Signing failed at some step; nothing was published.
    #[error("signing failed, nothing published: {0}")]
    Sign(SignerClientError),
    /// Publishing failed.
    #[error("publishing failed: {0}")]
    Publish(SignerClientError),
}

/// Signs `bundle` through signer-unix at `socket` and each co-signer in order, then publishes it.
/// Returns the published token.
pub async fn sign_and_publish(
    client: &SignerClient,
    bundle: &[u8],
    trust_domain: Option<&TrustDomain>,
    cosigners: &[HttpUrl],
) -> Result<Token, CliError> {
    let token = client.sign_chain_for(bundle, trust_domain, cosigners).await.map_err(CliError::Sign)?;
    client.publish(&token).await.map_err(CliError::Publish)?;
    Ok(token)
}

/// Signs the bundle on `stdin` through signer-unix at `socket` and the co-signers at `urls`, and publishes it;
/// returns the token to print.
pub async fn run(
    socket: &Path,
    trust_domain: Option<&TrustDomain>,
    urls: &[String],
    stdin: &mut impl Read,
    timeout: Duration,
) -> Result<Token, CliError> {
    let cosigners = urls.iter().map(|u| HttpUrl::parse(u)).collect::<Result<Vec<_>, _>>().map_err(CliError::Url)?;
    let mut bundle = Vec::new();
    stdin.take(MAX_BUNDLE as u64 + 1).read_to_end(&mut bundle).map_err(CliError::Input)?;
    if bundle.len() > MAX_BUNDLE {
        return Err(CliError::TooLarge);
    }
    if bundle.iter().all(u8::is_ascii_whitespace) {
        return Err(CliError::Empty);
    }
    let client = SignerClient::new(socket, timeout).map_err(CliError::Client)?;
    sign_and_publish(&client, &bundle, trust_domain, &cosigners).await
}

/// Has a trust bundle (PEM, on standard input) signed by signer-unix at SOCKET and by each co-signer URL in
/// order, publishes it, and prints the token. Started by SPIRE with no arguments, it is the BundlePublisher
/// plugin that does the same for every bundle SPIRE publishes.
#[derive(Parser, Debug)]
#[command(name = "spire-server-attestor-tpm-sign", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// signer-unix's socket (e.g. /var/run/spire/server-attestor-tpm/signer-unix.sock).
    socket: Option<PathBuf>,
    /// Co-signers (signer-http /sign URLs), in order.
    urls: Vec<String>,
    /// Bind the bundle to this SPIFFE trust domain (verifier keysets with `trust-domain` require it).
    #[arg(long, value_name = "TD")]
    trust_domain: Option<crypto::TrustDomain>,
    /// Log lines as text (default) or json.
    #[arg(long, value_name = "text|json", default_value = "text")]
    log_format: common::logging::LogFormat,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Build a signed keyset update, so that nodes trust new keys without being touched.
    ///
    /// Each signing host adds its layer by hand, as root (signer-unix signs updates only for `keyset-uids`, and
    /// signer-http never co-signs one): the first host signs the new policy's document (--keyset ...), each
    /// other host of the policy it replaces runs --add-layer on the file the one before wrote (--partial), and
    /// each key the update introduces signs last (--new-key-socket). --out checks the whole update against
    /// SOCKET's publish policy (the policy it replaces, as nodes verify it) and appends it to the published keys
    /// file; --complete does that for an update signed elsewhere. Nothing is written where nodes read unless the
    /// whole update verifies.
    Keys(KeysArgs),
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("begin").required(true).args(["keyset", "add_layer", "complete"])))]
#[command(group(clap::ArgGroup::new("policy").args(["chain", "threshold"])))]
#[command(group(clap::ArgGroup::new("output").args(["out", "partial"])))]
struct KeysArgs {
    /// A new update for this keyset (the nodes' verifier config names it); needs --version and a policy.
    #[arg(long, requires_all = ["version", "policy"])]
    keyset: Option<String>,
    /// The new version: above every version published before (1 for the first update).
    #[arg(long, requires = "keyset")]
    version: Option<u64>,
    /// The new chain's public key files, innermost signer first (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "a.pem[,b.pem...]", requires = "keyset", conflicts_with_all = ["threshold", "keys"])]
    chain: Vec<PathBuf>,
    /// The new chain's backup key file.
    #[arg(long, value_name = "c.pem", requires = "chain")]
    backup: Option<PathBuf>,
    /// A threshold policy instead: K of --keys must sign.
    #[arg(long, value_name = "K", requires_all = ["keys", "keyset"])]
    threshold: Option<usize>,
    /// The threshold's key files (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "a.pem,b.pem,c.pem", requires = "threshold")]
    keys: Vec<PathBuf>,
    /// Add this host's layer (signer-unix at SOCKET) to the update another host started, in FILE.
    #[arg(long, value_name = "FILE")]
    add_layer: Option<PathBuf>,
    /// Sign nothing: check the update in FILE, signed by every host, and append it to --out.
    #[arg(long, value_name = "FILE", requires = "out", conflicts_with = "new_key_sockets")]
    complete: Option<PathBuf>,
    /// signer-unix socket of a key the update introduces; it signs the update last (repeat for each).
    #[arg(long = "new-key-socket", value_name = "SOCKET")]
    new_key_sockets: Vec<PathBuf>,
    /// The published keys file (one update per line, oldest first): the whole update is appended, atomically;
    /// refused if the file already holds this version or a later one. Standard output without it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the update as it is, still missing layers, for the next signing host's --add-layer.
    #[arg(long, value_name = "FILE")]
    partial: Option<PathBuf>,
    /// How long the update stays valid (Go duration; nodes off for longer need it re-signed).
    #[arg(long, value_name = "DURATION", default_value = "8760h")]
    valid_for: common::duration::GoDuration,
    /// This host's signer-unix socket. Its publish policy is the policy the update replaces.
    socket: PathBuf,
    /// Log lines as text (default) or json.
    #[arg(long, value_name = "text|json", default_value = "text")]
    log_format: common::logging::LogFormat,
}

fn keys(args: KeysArgs) -> anyhow::Result<()> {
    use crate::keyset_update::{Begin, NewPolicy, Output};
    common::logging::init_with(args.log_format);
    let begin = match (args.keyset, args.version, args.add_layer, args.complete) {
        (Some(keyset), Some(version), None, None) => Begin::New {
            keyset,
            version,
            policy: match args.threshold {
                Some(threshold) => NewPolicy::Threshold { threshold, keys: args.keys },
                None => NewPolicy::Chain { chain: args.chain, backup: args.backup },
            },
            valid_for: args.valid_for.0,
        },
        (None, None, Some(file), None) => Begin::AddLayer(file),
        (None, None, None, Some(file)) => Begin::Complete(file),
        _ => anyhow::bail!("give one of --keyset (with --version), --add-layer or --complete"),
    };
    let output = match (args.out, args.partial) {
        (Some(out), None) => Output::Append(out),
        (None, Some(partial)) => Output::Partial(partial),
        _ => Output::Stdout,
    };
    let req = crate::keyset_update::KeysRequest {
        begin,
        socket: args.socket,
        new_key_sockets: args.new_key_sockets,
        output,
        timeout: Duration::from_secs(30),
        clock: common::clock::Clock::system(),
    };
    let stdout = matches!(req.output, Output::Stdout);
    let built = runtime()?.block_on(crate::keyset_update::run(&req))?;
    if stdout {
        println!("{}", built.token);
    }
    Ok(())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The sign binary's command line mode: `keys ...`, or `SOCKET [URL...] < bundle.pem`. Exits: 0, 1 with the
/// cause, or 2 on a usage error.
pub fn main(cli: Cli) -> ! {
    if let Some(Command::Keys(args)) = cli.command {
        common::report::exit(keys(args));
    }
    let Some(socket) = cli.socket else {
        eprint!("{}", crate::goplugin::NOT_A_HOST);
        eprintln!("\nIt is also a command: {}\n(--help says more)", Cli::command().render_usage());
        std::process::exit(2);
    };
    common::logging::init_with(cli.log_format);
    let signed = || -> anyhow::Result<()> {
        let mut stdin = std::io::stdin().lock();
        let token = runtime()?.block_on(run(
            &socket,
            cli.trust_domain.as_ref(),
            &cli.urls,
            &mut stdin,
            Duration::from_secs(30),
        ))?;
        println!("{token}");
        Ok(())
    };
    common::report::exit(signed());
}
