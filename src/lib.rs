//! certgate terminates mutual TLS in front of HTTP apps and forwards each request with the
//! verified client certificate in `X-Forwarded-Client-Cert`.
//!
//! The modules in data-flow order: a `config` is loaded and validated; the `server` binds
//! and hands each stage its handles: `apps` (swapped whole by `reload`), the `drain` flag and
//! the metrics. The `listener` accepts each connection and places it on a worker thread; the
//! `connection` runs it, stage after stage: `caps`, `handshake` (with `proxy_protocol` first
//! behind a balancer; `tls` picks the app by SNI and verifies the client), `verdict` (the
//! app's policy after the handshake, then `revocation`), `identity` (the verified certificate
//! parsed once), then `serve` and `park`. The `proxy` passes each request through its
//! stages (the connection's checks, the authority, the app's `request_policy`, the rewrite, the
//! certificate headers); the `upstream` client carries it to the app.
//! `admin` serves health and `metrics` (`health` asks it, for probes); `pki` and `demo` are
//! the first-run tools.
//!
//! Dependencies point one way, down this list: `settings` (the validated values every stage
//! reads) uses nothing else of certgate's, `config` builds them, and no module imports one
//! that imports it back, neither file by file nor folder by folder
//! (`tests/integration/module_graph.rs` fails on either cycle).
//!
//! certgate runs on Unix only: it relies on Unix signals (SIGHUP, SIGTERM, SIGINT) and file
//! modes.

#[cfg(not(unix))]
compile_error!("certgate supports Unix only: it relies on Unix signals and file modes");

// The commands the binary runs; their modules are public.
pub mod cli;
pub mod demo;
pub mod explain;
pub mod health;
pub mod pki;

// The daemon's machinery, private, in data-flow order: what the binary and the tests use is
// re-exported below.
mod settings;
mod config;
mod server;
mod drain;
mod reload;
mod apps;
mod accept;
mod listener;
mod connection;
mod proxy_protocol;
mod ip_restrictions;
mod tls;
mod revocation;
mod identity;
mod request_policy;
mod proxy;
mod upstream;
mod workers;
mod access_log;
mod log_queue;
mod admin;
mod metrics;

pub use crate::access_log::install as install_access_log_writer;
pub use crate::apps::build::{LoadedApp, LoadedConfig, LoadedGroup};
pub use crate::config::error::{AppError, ConfigError};
pub use crate::config::model::{AppConfig, Config, FileDigests};
pub use crate::log_queue::{LogGuard, LogWriter, spawn as start_log_thread};
pub use crate::reload::{ConfigSource, Reloader};
pub use crate::revocation::{OcspMode, OnUnknown, RevocationPolicy};
pub use crate::server::{RunError, Server, Stop};
pub use crate::settings::{ClientCertMode, Limits, SessionResumption, Timeouts};
pub use crate::tls::FailureReason;
pub use crate::tls::pkcs12::{self, Pkcs12Error};
pub use crate::tls::ticket_keys::{TicketKeys, new_key_file};
pub use crate::workers::default_count as worker_threads;

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
