//! Revocation that stays fresh (docs/revocation.md): CRLs fetched from `crlUrls` and from the
//! distribution points of the certificates seen, refreshed in the background, and OCSP for
//! the leaf or the whole chain. rustls verifiers are synchronous, so this runs right after the
//! handshake, in the connection's own task and before any request is read: a slow responder
//! only ever delays its own connection. Resumed sessions go through it too. Open connections
//! (and the WebSockets they upgraded to) are closed when a later revocation covers them,
//! whatever config generation learned it and whatever generation they were made in.

mod checker;
mod coalesce;
pub(crate) mod crl;
mod error;
pub(crate) mod fetch;
mod memory;
pub(crate) mod ocsp;
mod path;
mod refresh;
mod standing;
pub(crate) mod x509;

pub(crate) use self::checker::Revocation;
pub(crate) use self::error::{LoadError, RevocationFailure};
pub(crate) use self::memory::Memory;
pub(crate) use self::path::WithoutCa;
pub(crate) use self::standing::{RevokedLater, Standing};
pub use crate::settings::{OcspMode, OnUnknown, RevocationPolicy};
