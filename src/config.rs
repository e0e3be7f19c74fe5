//! Config loading: the JSON file model (`file.rs`) or the sidecar flags become the validated
//! `Config` (`model.rs`); `load.rs` reads every file named once and parses every certificate,
//! key and CRL file, so a `Config` that exists holds valid values only (what the apps are
//! served with is built from it with the apps); any problem is a `ConfigError` (`error.rs`).

pub(crate) mod checks;
mod cors;
mod credentials;
mod custom_domains;
pub(crate) mod error;
pub(crate) mod file;
mod ingress;
mod load;
pub(crate) mod model;
mod pem_files;
pub(crate) mod request_policy;
mod traffic;
mod upstream_tls;
mod values;

pub(crate) use self::error::{AppError, AppFailure, ConfigError, FLAG_KEYS};
pub(crate) use self::load::{client_policy, forward_fields, pem_certificates};
pub(crate) use self::model::{AppConfig, Config, FileDigests, RevocationSettings};
pub(crate) use self::upstream_tls::sidecar_upstream_tls;
