//! One rustls `ServerConfig` per app. Each has its own verifier, session cache and ticket
//! keys (its own, or derived for it from a shared key file), so no session made under one app
//! (or one version of an app's trust) resumes under another: the per-app policy is checked on
//! every full handshake.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ProducesTickets, ResolvesServerCert,
    ServerSessionMemoryCache,
};
use rustls::sign::CertifiedKey;

use super::sni::HostPattern;
use crate::settings::KeyedChain;

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
/// CertificateRequest is sent). `certificate` is served for every name but the `domains`,
/// which are served with their own.
pub(crate) fn build(
    provider: Arc<CryptoProvider>,
    verifier: Option<Arc<dyn ClientCertVerifier>>,
    certificate: KeyedChain,
    domains: &[(HostPattern, KeyedChain)],
    resumption: Resumption,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = if domains.is_empty() {
        builder.with_single_cert(certificate.chain, certificate.key.clone_key())?
    } else {
        let certified = |keyed: &KeyedChain| {
            CertifiedKey::from_der(keyed.chain.clone(), keyed.key.clone_key(), &provider)
                .map(Arc::new)
        };
        builder.with_cert_resolver(Arc::new(ByServerName {
            default: certified(&certificate)?,
            domains: domains
                .iter()
                .map(|(host, keyed)| Ok((host.clone(), certified(keyed)?)))
                .collect::<Result<_, rustls::Error>>()?,
        }))
    };
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

/// The certificate an app serves for a server name: a custom domain's own, else the app's.
#[derive(Debug)]
struct ByServerName {
    default: Arc<CertifiedKey>,
    domains: Vec<(HostPattern, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let domain = client_hello.server_name().and_then(|name| {
            self.domains
                .iter()
                .find(|(host, _)| host.matches(name))
                .map(|(_, certified)| certified)
        });
        Some(domain.unwrap_or(&self.default).clone())
    }
}
