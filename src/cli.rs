//! The command line (clap): `run`, `check`, `pki init`, `demo`. Every `run` flag can also come
//! from a `CERTGATE_*` environment variable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::file::{
    FileApp, FileClientAuth, FileConfig, FileIngress, FileServerCertificate,
};
use crate::config::{Config, ConfigError};
use crate::reload::ConfigSource;

/// certgate: mutual-TLS ingress that forwards verified client certificates to HTTP apps.
#[derive(Debug, Parser)]
#[command(name = "certgate", version, about)]
pub struct Cli {
    /// Log format: `plain` for people, `json` for machines (one object a line).
    #[arg(long, env = "CERTGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object a line.
    Json,
}

/// What certgate should do.
#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at startup; boxing would only add noise"
)]
pub enum Command {
    /// Serve the apps of a config file, or one app from flags (sidecar mode).
    Run(RunArgs),
    /// Load and validate a config file and every file it names, then print a line per app.
    Check {
        /// The JSON config file.
        #[arg(long, env = "CERTGATE_CONFIG")]
        config: PathBuf,
    },
    /// Development PKI.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Make a dev PKI in ./certs, start an echo app and serve one app per mode.
    Demo {
        /// Address to serve the demo apps on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
    },
}

/// `certgate pki …`.
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Write a development CA, server and client certificates into DIR.
    Init {
        /// Folder to write into (created if missing).
        dir: PathBuf,
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
    },
}

/// `certgate run`: a config file, or the flags of one catch-all app.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// JSON config file; excludes the sidecar flags.
    #[arg(long, env = "CERTGATE_CONFIG", conflicts_with_all = ["upstream", "cert", "key", "client_ca", "crl", "allowed_hash", "allow_untrusted", "client_cert_mode"])]
    pub config: Option<PathBuf>,
    /// Address of the mTLS listener (default 0.0.0.0:8443).
    #[arg(long, env = "CERTGATE_LISTEN")]
    pub listen: Option<String>,
    /// The app's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "CERTGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// PEM server certificate chain, leaf first.
    #[arg(long, env = "CERTGATE_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM private key of the server certificate.
    #[arg(long, env = "CERTGATE_KEY")]
    pub key: Option<PathBuf>,
    /// PEM bundle of CAs trusted to issue client certificates (repeatable; comma-separated in the environment).
    #[arg(long = "client-ca", env = "CERTGATE_CLIENT_CA", value_delimiter = ',')]
    pub client_ca: Vec<PathBuf>,
    /// PEM certificate revocation list (repeatable).
    #[arg(long)]
    pub crl: Vec<PathBuf>,
    /// SHA-256 hash (hex) of a pinned client certificate (repeatable).
    #[arg(long = "allowed-hash")]
    pub allowed_hash: Vec<String>,
    /// Forward any client certificate, trusted or not; the app must validate it.
    #[arg(long)]
    pub allow_untrusted: bool,
    /// require, accept or ignore (default require).
    #[arg(long, env = "CERTGATE_CLIENT_CERT_MODE")]
    pub client_cert_mode: Option<String>,
    /// Address of the admin listener (health, readiness, metrics); off unless set.
    #[arg(long, env = "CERTGATE_ADMIN")]
    pub admin: Option<String>,
    /// Write no access line per request (overrides the config file's `accessLog`).
    #[arg(long, env = "CERTGATE_NO_ACCESS_LOG")]
    pub no_access_log: bool,
}

/// Why `run`'s arguments do not make a config.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("run needs --config FILE, or --upstream, --cert and --key for sidecar mode")]
    MissingSidecarFlags,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl RunArgs {
    /// Where `run` reads its config from, at start and on every reload: the config file, or
    /// the sidecar's one catch-all app built from the flags (relative paths are resolved
    /// against the working directory). Fails when neither is given.
    pub fn source(&self) -> Result<ConfigSource, UsageError> {
        let sidecar_flags = self.upstream.is_some() && self.cert.is_some() && self.key.is_some();
        if self.config.is_none() && !sidecar_flags {
            return Err(UsageError::MissingSidecarFlags);
        }
        let args = self.clone();
        Ok(Arc::new(move || args.load()))
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::from_file(self.sidecar_file(), Path::new(""))?,
        };
        // With --config, --listen and --admin override the file.
        if let Some(listen) = &self.listen {
            config.listen = address("--listen", listen)?;
        }
        if let Some(admin) = &self.admin {
            config.admin = Some(address("--admin", admin)?);
        }
        if self.no_access_log {
            config.access_log = false;
        }
        Ok(config)
    }

    fn sidecar_file(&self) -> FileConfig {
        FileConfig {
            apps: vec![FileApp {
                name: "app".to_owned(),
                upstream: self.upstream.clone(),
                server_certificate: FileServerCertificate {
                    cert_file: self.cert.clone(),
                    key_file: self.key.clone(),
                    ..FileServerCertificate::default()
                },
                ingress: FileIngress {
                    client_certificate_mode: self.client_cert_mode.clone(),
                    ..FileIngress::default()
                },
                client_auth: FileClientAuth {
                    trusted_ca_files: self.client_ca.clone(),
                    crl_files: self.crl.clone(),
                    allowed_hashes: self.allowed_hash.clone(),
                    allow_untrusted: self.allow_untrusted,
                    ..FileClientAuth::default()
                },
                ..FileApp::default()
            }],
            ..FileConfig::default()
        }
    }
}

fn address(field: &'static str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadAddress {
        field,
        value: value.to_owned(),
    })
}
