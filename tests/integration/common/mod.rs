//! Shared test harness: a throwaway PKI made with rcgen, certgate started in-process on
//! 127.0.0.1:0 from a JSON config, an echo upstream, a rustls + hyper client that can
//! present any certificate, SNI, TLS version and HTTP version, scratch folders, upstreams
//! that record every byte (one with no HTTP library, for HTTP/1.1 and h2c), upstream
//! endpoints that answer with their name (`named`, for balancing, health checks and sticky
//! sessions), and the external tools (openssl, curl, python3) tests drive.

#![allow(
    unreachable_pub,
    reason = "the helpers are used from the test modules beside them"
)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

pub mod apps;
pub mod client;
pub mod dns;
pub mod drain;
pub mod files;
pub mod gateway;
pub mod hardening;
pub mod hpack;
pub mod named;
pub mod pki;
pub mod polling;
pub mod presenting;
pub mod proxied;
pub mod raw;
pub mod raw_h2c;
pub mod recording;
pub mod revocation;
pub mod revocation_app;
pub mod serve;
pub mod sessions;
pub mod stdin;
pub mod tls_app;
pub mod tools;
pub mod upstream;
pub mod websocket;

pub use client::*;
pub use files::*;
pub use gateway::*;
pub use pki::*;
pub use upstream::*;
