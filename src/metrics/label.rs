//! The label set that every per-app metric family shares, here and in `revocation::metrics`.

use prometheus_client::encoding::EncodeLabelSet;

/// The `app` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    /// The app's name.
    pub app: String,
}
