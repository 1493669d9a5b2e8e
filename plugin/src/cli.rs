//! CLI mode: `spire-server-attestor-tpm-sign SOCKET [URL...] < bundle.pem`.
//!
//! Invariant: the token is published only after every signature in the chain was obtained; any failure
//! publishes nothing and exits non-zero with the failing step named.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::client::{ClientError, HttpUrl};
use common::signer_client::{SignerClient, SignerClientError};
use crypto::token::Token;
use crypto::TrustDomain;

/// Largest bundle read from standard input.
pub const MAX_BUNDLE: usize = 1 << 20;

/// Why the CLI failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A co-signer URL is not usable.
    #[error("co-signer URL: {0}")]
    Url(ClientError),
    /// Standard input could not be read.
    #[error("reading the bundle from standard input: {0}")]
    Input(#[source] std::io::Error),
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
