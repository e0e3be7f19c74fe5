//! Config loading: the JSON file model (`file.rs`) or the sidecar flags become the validated
//! `Config` (`model.rs`); `load.rs` reads every file named once, parses every certificate and
//! builds every app's rustls config, so a `Config` that exists can be served; any problem is a
//! `ConfigError` (`error.rs`).

pub(crate) mod checks;
mod credentials;
pub(crate) mod error;
pub(crate) mod file;
mod load;
pub(crate) mod model;
mod pem_files;
pub(crate) mod policy;
mod upstream_tls;
mod values;

pub(crate) use self::error::{AppError, ConfigError, FLAG_KEYS};
pub(crate) use self::load::{client_policy, forward_fields, pem_certificates};
pub(crate) use self::model::{AppConfig, Config};
pub(crate) use self::upstream_tls::sidecar_upstream_tls;
