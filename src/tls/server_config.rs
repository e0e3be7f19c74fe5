//! One rustls `ServerConfig` per app. Each has its own verifier, session cache and ticket
//! keys (its own, or derived for it from a shared key file), so no session made under one app
//! (or one version of an app's trust) resumes under another: the per-app policy is checked on
//! every full handshake.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Sessions each app remembers for resumption.
const SESSION_CACHE_SIZE: usize = 4096;

/// How an app's sessions resume.
#[derive(Debug, Clone)]
pub(crate) enum Resumption {
    /// Never: no session cache, no tickets (`sessionResumption: false`).
    Off,
    /// Tickets under keys this process makes, new on every reload (no `sessionTickets`).
    ProcessKeys,
    /// Tickets under keys derived from the shared key file, so any replica resumes them.
    SharedKeys(Arc<dyn ProducesTickets>),
}

/// Builds an app's `ServerConfig`; `verifier` is `None` in `ignore` mode (no
/// CertificateRequest is sent).
pub(crate) fn build(
    provider: Arc<CryptoProvider>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    resumption: Resumption,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    match resumption {
        Resumption::Off => {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Resumption::ProcessKeys => {
            config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        }
        Resumption::SharedKeys(ticketer) => {
            config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
            config.ticketer = ticketer;
        }
    }
    Ok(Arc::new(config))
}
