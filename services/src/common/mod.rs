//! Plumbing every daemon shares: config loading, durations, unix sockets, HTTP server and client, logging.

pub mod client;
pub mod config;
pub mod duration;
pub mod fsutil;
pub mod http;
pub mod logging;
pub mod uds;
