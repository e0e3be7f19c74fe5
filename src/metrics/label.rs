//! The label sets and label values that several metric families share.

use prometheus_client::encoding::EncodeLabelSet;

/// The `app` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    /// The app's name.
    pub app: String,
}

/// Why a request was cut off mid-body; the `outcome` in logs and the `reason` label of
/// `certgate_stalled_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StallReason {
    /// The client sent no request-body bytes for `requestBodyIdleMs`.
    RequestBodyIdle,
    /// The app sent no response-body bytes for `upstreamIdleMs`.
    UpstreamIdle,
}

impl StallReason {
    /// Every reason, for metric series that exist at zero.
    pub(crate) const ALL: [Self; 2] = [Self::RequestBodyIdle, Self::UpstreamIdle];

    /// The name used in logs and metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RequestBodyIdle => "request_body_idle",
            Self::UpstreamIdle => "upstream_idle",
        }
    }
}
