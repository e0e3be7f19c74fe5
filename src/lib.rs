//! certgate terminates mutual TLS in front of HTTP apps and forwards each request with the
//! verified client certificate in `X-Forwarded-Client-Cert`.
//!
//! The modules in data-flow order: a `config` is loaded and validated; the `server` binds
//! and hands each stage its handles: `apps` (swapped whole by `reload`), the `drain` flag and
//! the metrics; the `listener` accepts, `tls` picks the
//! app by SNI and verifies the client, `identity` parses the verified certificate once, and
//! `proxy` checks each request's authority and the app's `policy`, rewrites headers and
//! forwards it upstream.
//! `admin` serves health and `metrics` (`health` asks it, for probes); `pki` and `demo` are
//! the first-run tools. With `proxy_protocol`, the listener reads a balancer's PROXY header
//! before the handshake.
//!
//! certgate runs on Unix only: it relies on Unix signals (SIGHUP, SIGTERM, SIGINT) and file
//! modes.

#[cfg(not(unix))]
compile_error!("certgate supports Unix only: it relies on Unix signals and file modes");

pub mod cli;
pub mod config;
pub mod settings;
pub mod server;
pub mod drain;
pub mod reload;
pub mod apps;
pub mod listener;
pub mod proxy_protocol;
pub mod tls;
pub mod revocation;
pub mod identity;
pub mod policy;
pub mod proxy;
pub mod admin;
pub mod health;
pub mod metrics;
pub mod explain;
pub mod pki;
pub mod demo;

pub use crate::reload::ConfigSource;
pub use crate::server::{RunError, Server};

/// An error and all its sources, `: `-separated, for logs and the command line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
