//! A TLS 1.3 client that presents a fixed certificate chain and signing key whatever the
//! server asks, for what rustls' own client checks would refuse to load (an X.509 v1
//! certificate, a key that is not the certificate's), and one request sent through it.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::Pki;

/// Presents the one certificate and key it holds.
#[derive(Debug)]
pub struct Present(pub Arc<CertifiedKey>);

impl ResolvesClientCert for Present {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS 1.3 client trusting `pki`'s server CA that presents `chain` and signs with `key`.
pub fn presenting_client(
    pki: &Pki,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = provider.key_provider.load_private_key(key).unwrap();
    let certified = Arc::new(CertifiedKey::new(chain, key));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.server_ca.der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Present(certified)));
    Arc::new(config)
}

/// Connects to `addr` with SNI `host`, writes `GET /` for `host` and reads to the end. With
/// TLS 1.3 the client finishes its handshake first and learns of a refusal on that read.
pub async fn get_to_end(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    host: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await?;
    Ok(buf)
}
