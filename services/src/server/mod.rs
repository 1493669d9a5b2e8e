//! The server side every daemon shares: unix sockets with peer credentials, and the HTTP/1 server with its
//! limits (connections per peer, header and idle timeouts, bounded bodies) and graceful shutdown.

pub mod http;
pub mod key_password;
pub mod tls;
#[cfg(feature = "tpm")]
pub mod tpm_key;
pub mod uds;
