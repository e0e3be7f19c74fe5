//! Config loading: the JSON file model (`file.rs`) or the sidecar flags become the validated
//! `Config` (`model.rs`); `load.rs` reads every file named once, parses every certificate and
//! builds every app's rustls config, so a `Config` that exists can be served; any problem is a
//! `ConfigError` (`error.rs`).

pub mod checks;
mod credentials;
mod error;
pub mod file;
mod load;
mod model;
mod pem_files;
pub mod policy;
mod values;

pub use self::error::{AppError, ConfigError, FILE_KEYS, FLAG_KEYS, Keys};
pub use self::load::{client_policy, forward_fields, pem_certificates};
pub use self::model::{AppConfig, Config};
