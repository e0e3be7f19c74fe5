//! The body of every response certgate sends downstream.

use bytes::Bytes;
use http_body_util::{Either, Full};

use super::stall::ResponseBody;

/// The app's body (bounded by `upstreamIdleMs`), or certgate's own.
pub(crate) type ProxyBody = Either<ResponseBody, Full<Bytes>>;
