//! Loading a server certificate chain and key from a PKCS#12 archive.

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PKCS#12 archive could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("PKCS#12 server certificates are not supported yet")]
    Unsupported,
}

/// The certificate chain (leaf first) and private key held in a PKCS#12 archive.
pub fn load(
    _der: &[u8],
    _password: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Pkcs12Error> {
    Err(Pkcs12Error::Unsupported)
}
